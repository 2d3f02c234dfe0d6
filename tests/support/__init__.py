"""Small helpers shared by every test that starts a real process.

They live here so that all interop tests agree on three things: a missing peer binary
skips on a laptop but fails in CI, ports and runtime directories never collide between
helpers running at the same time, and "ready" means a socket that really accepts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

__all__ = [
    "free_tcp_port",
    "require_binary",
    "require_module",
    "root_logging_restored",
    "runtime_dir",
    "wait_for_text",
    "wait_for_unix_socket",
    "wait_for_value",
    "wait_until",
]

T = TypeVar("T")


@contextlib.contextmanager
def root_logging_restored() -> Iterator[None]:
    """Give the root logger its handlers and level back after a test ran logs.configure."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield
    finally:
        root.handlers[:], root.level = saved


def require_binary(name: str) -> str:
    """Return the absolute path of ``name``; skip the test, or fail it when CI=true."""
    path = shutil.which(name)
    if path is None:
        # /usr/sbin is not always on a non-root PATH; Dovecot and Exim live there.
        for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        missing_peer(f"required binary {name!r} not found on PATH")
    return path


def require_module(name: str, message: str) -> None:
    """Skip a test without the Python module ``name`` (an optional extra), or fail it
    when CI=true; ``message`` says how to install it."""
    if importlib.util.find_spec(name) is None:
        missing_peer(message)


def missing_peer(message: str) -> NoReturn:
    """Skip a test whose peer or privilege is missing here; fail it when CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def read_text_or_empty(path: Path) -> str:
    """A log file's text, or "" when the process has not written it (yet)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def log_tails(named: Iterable[tuple[str, Path]], lines: int = 30) -> str:
    """The last ``lines`` of each existing log, under a ``--- name ---`` header."""
    parts = []
    for name, path in named:
        if path.exists():
            tail = read_text_or_empty(path).splitlines()[-lines:]
            parts.append(f"--- {name} ---\n" + "\n".join(tail))
    return "\n".join(parts)


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _open_up(path: Path, stop_at: Path) -> None:
    """chmod 0755 ``path`` and its parents below ``stop_at`` so other users can traverse."""
    current = path
    while current != stop_at and current != current.parent:
        current.chmod(0o755)
        current = current.parent


def runtime_dir(
    base: pytest.TempPathFactory | Path | str | None = None, name: str = "authbridge"
) -> Path:
    """Make a fresh directory that Debian-exim / postfix / dovecot children can traverse.

    With a ``tmp_path_factory`` the directory is made by pytest (and cleaned up by it);
    the pytest base directories are opened up to 0755 on the way, since
    ``/tmp/pytest-of-root`` is 0700. With a path, the directory is made below it. With
    nothing, it is made directly under ``/tmp`` and the caller removes it.
    """
    tmp_root = Path(tempfile.gettempdir())
    if isinstance(base, pytest.TempPathFactory):
        made = base.mktemp(name)
    else:
        parent = tmp_root if base is None else Path(base)
        parent.mkdir(parents=True, exist_ok=True)
        made = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    made = made.resolve()
    stop_at = tmp_root.resolve() if made.is_relative_to(tmp_root.resolve()) else Path("/")
    _open_up(made, stop_at)
    return made


def wait_for_unix_socket(
    path: str | os.PathLike[str],
    timeout: float = 10.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Return once a connect() to the UNIX socket at ``path`` succeeds.

    Raises TimeoutError after ``timeout`` seconds, or RuntimeError at once if ``proc``
    (the server expected to create the socket) has already exited.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.pid} exited with {proc.returncode} before {path} was ready"
            )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                sock.connect(os.fspath(path))
            except OSError as exc:
                last_error = exc
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"UNIX socket {path} not accepting after {timeout}s: {last_error}")
        time.sleep(0.05)


def wait_for_value(
    produce: Callable[[], T],
    accept: Callable[[T], bool],
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = 0.02,
) -> T:
    """Poll ``produce()`` until ``accept`` takes its value; return that value.

    This is how a test waits for something another process does (a counter moving, a
    log line, a reload): the condition itself, with a deadline, never a fixed sleep.
    Raises TimeoutError naming ``what`` and the last value seen once ``timeout``
    seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = produce()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s; last seen: {value!r}")
        time.sleep(interval)


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = 0.02,
) -> None:
    """Return once ``predicate()`` is true; TimeoutError naming ``what`` after ``timeout``."""
    wait_for_value(predicate, bool, timeout, what, interval)


def wait_for_text(
    read: Callable[[], str],
    needle: str,
    count: int = 1,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> str:
    """Wait until ``read()`` (a growing log) holds ``needle`` at least ``count`` times.

    Returns the text read; on timeout the TimeoutError carries its last 2,000 characters.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if text.count(needle) >= count:
            return text
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{needle!r} seen {text.count(needle)} of {count} times within {timeout}s; "
                f"log tail:\n{text[-2000:]}"
            )
        time.sleep(interval)
