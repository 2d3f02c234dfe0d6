"""Start and stop ``authbridge serve`` as a real subprocess.

Interop and conformance tests talk to the daemon exactly as Exim or Postfix would, over
its UNIX socket, so the server runs in its own process. ``sys.executable -m authbridge``
is used so the tests work without the console script on PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import pytest

from tests.support import read_text_or_empty, runtime_dir, wait_for_unix_socket

DEFAULT_MECHANISMS: tuple[str, ...] = ("plain", "login", "cram-md5")

FixtureScope = Literal["session", "package", "module", "class", "function"]


class AuthbridgeError(RuntimeError):
    """authbridge did not come up or did not shut down cleanly; the message has its stderr."""


class AuthbridgeServer:
    """A running ``authbridge serve`` listening on ``socket_path``.

    stderr (the daemon's log) goes to ``stderr_path`` so a test can read it with
    :meth:`stderr_text`. :meth:`stop` sends SIGTERM and checks the contract: exit status
    0 within the timeout, socket file removed.
    """

    def __init__(
        self,
        users_file: str | os.PathLike[str],
        socket_path: str | os.PathLike[str],
        mechanisms: Sequence[str] = DEFAULT_MECHANISMS,
        extra_args: Sequence[str] = (),
        stderr_path: str | os.PathLike[str] | None = None,
        start_timeout: float = 15.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.users_file = Path(users_file).resolve()
        self.socket_path = Path(socket_path)
        self.mechanisms = tuple(mechanisms)
        self.extra_args = tuple(extra_args)
        self.stderr_path = (
            Path(stderr_path)
            if stderr_path is not None
            else self.socket_path.with_name(self.socket_path.name + ".stderr")
        )
        self.start_timeout = start_timeout
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "authbridge",
            "serve",
            "--socket",
            str(self.socket_path),
            "--passwd-file",
            str(self.users_file),
            "--socket-mode",
            "0666",
            "--mechanisms",
            ",".join(self.mechanisms),
            *self.extra_args,
        ]

    def start(self) -> AuthbridgeServer:
        if self.proc is not None:
            raise AuthbridgeError("this AuthbridgeServer is already running")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        env = dict(os.environ if self.env is None else self.env)
        # Run the checkout under test even when started from another directory.
        repo_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        try:
            wait_for_unix_socket(self.socket_path, self.start_timeout, self.proc)
        except (TimeoutError, RuntimeError) as exc:
            self.kill()
            raise AuthbridgeError(
                f"authbridge serve did not come up: {exc}\n--- stderr ---\n{self.stderr_text()}"
            ) from exc
        return self

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM by PID, wait, and require exit status 0 and the socket removed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise AuthbridgeError(
                    f"authbridge did not exit within {timeout}s of SIGTERM\n"
                    f"--- stderr ---\n{self.stderr_text()}"
                ) from None
        if proc.returncode != 0:
            raise AuthbridgeError(
                f"authbridge exited with status {proc.returncode} after SIGTERM\n"
                f"--- stderr ---\n{self.stderr_text()}"
            )
        if self.socket_path.exists():
            raise AuthbridgeError(f"authbridge left its socket {self.socket_path} behind")
        return proc.returncode

    def kill(self) -> None:
        """Hard stop for error paths; no exit-status check."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def stderr_text(self) -> str:
        return read_text_or_empty(self.stderr_path)

    def __enter__(self) -> AuthbridgeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.stop()
        else:
            # Keep the original failure; still try a clean stop, then make sure it is gone.
            with contextlib.suppress(AuthbridgeError):
                self.stop()
            self.kill()


def authbridge_fixture(
    users_file: str | os.PathLike[str] | Callable[[Path], Path],
    *,
    scope: FixtureScope = "session",
    name: str = "authbridge",
    mechanisms: Sequence[str] = DEFAULT_MECHANISMS,
    extra_args: Sequence[str] = ("--dovecot-compat", "--failure-delay", "0"),
) -> Callable[..., Iterator[AuthbridgeServer]]:
    """Build a pytest fixture that yields a running :class:`AuthbridgeServer`.

    ``users_file`` is a path, or a callable that receives the runtime directory and
    returns the path. The file is copied into the runtime directory (mode 0644).
    """

    @pytest.fixture(scope=scope, name=name)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthbridgeServer]:
        base = runtime_dir(tmp_path_factory, name)
        source = users_file(base) if callable(users_file) else Path(users_file)
        users_copy = base / "users.passwd"
        if source.resolve() != users_copy.resolve():
            shutil.copyfile(source, users_copy)
        users_copy.chmod(0o644)
        with AuthbridgeServer(
            users_copy, base / "auth-client", mechanisms=mechanisms, extra_args=extra_args
        ) as server:
            yield server

    return _fixture
