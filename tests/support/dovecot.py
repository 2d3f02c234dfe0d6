"""Start and stop a REAL Dovecot 2.3 that runs only its auth service.

This is the reference server: conformance transcripts are first proven against it, so
the settings below remove everything that would make it slow or stateful between tests
(failure delay, anvil auth penalty, stale base_dir) while keeping its wire behaviour.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import pytest

from tests.support import read_text_or_empty, require_binary, runtime_dir, wait_for_unix_socket

DEFAULT_MECHANISMS: tuple[str, ...] = ("plain", "login", "cram-md5")

_CONFIG_TEMPLATE = """\
# Written by tests/support/dovecot.py: Dovecot auth service only.
protocols = none
listen = 127.0.0.1
base_dir = {base_dir}
state_dir = {state_dir}
instance_name = {instance}
log_path = /dev/stderr
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_verbose = yes
auth_debug = yes
# FAILs still go out on the 500 ms flush timer, but without the extra seconds.
auth_failure_delay = 0
{extra_passdbs}passdb {{
  driver = passwd-file
  args = {users_file}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
# No listener for anvil-auth-penalty: the auth process cannot reach it and turns the
# per-IP penalty off, so deliberate failures do not slow the next request down.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener {socket} {{
    mode = 0666
  }}
}}
"""

FixtureScope = Literal["session", "package", "module", "class", "function"]


class DovecotError(RuntimeError):
    """Dovecot refused its configuration or did not come up; the message has its log tail."""


class DovecotAuth:
    """A running ``dovecot -F`` with only the auth service, listening on ``socket_path``.

    Use as a context manager, or call start()/stop(). Everything Dovecot writes (config,
    base_dir, state, log) lives in ``workdir``; it is recreated on each start so that no
    stale anvil socket survives from a previous run.
    """

    def __init__(
        self,
        users_file: str | os.PathLike[str],
        socket_path: str | os.PathLike[str],
        mechanisms: Sequence[str] = DEFAULT_MECHANISMS,
        extra_settings: Sequence[str] = (),
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 15.0,
        extra_passdbs: str = "",
    ) -> None:
        self.users_file = Path(users_file).resolve()
        self.socket_path = Path(socket_path)
        self.mechanisms = tuple(mechanisms)
        self.extra_settings = tuple(extra_settings)
        #: ``passdb { ... }`` blocks tried before the passwd-file (e.g. an oauth2 passdb).
        self.extra_passdbs = extra_passdbs
        self.workdir = Path(workdir) if workdir is not None else self.socket_path.parent / "dovecot"
        self.start_timeout = start_timeout
        self.config_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration --------------------------------------------------------------

    def render_config(self) -> str:
        text = _CONFIG_TEMPLATE.format(
            base_dir=self.workdir / "base",
            state_dir=self.workdir / "state",
            instance=f"authbridge-test-{os.getpid()}-{id(self) & 0xFFFF:x}",
            mechanisms=" ".join(self.mechanisms),
            users_file=self.users_file,
            socket=self.socket_path,
            extra_passdbs=self.extra_passdbs,
        )
        # Dovecot has no -o option; later settings override earlier ones.
        return text + "".join(f"{setting}\n" for setting in self.extra_settings)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> DovecotAuth:
        dovecot = require_binary("dovecot")
        doveconf = require_binary("doveconf")
        if self.proc is not None:
            raise DovecotError("this DovecotAuth is already running")
        if not self.users_file.is_file():
            raise DovecotError(f"users file {self.users_file} does not exist")
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.workdir.chmod(0o755)
        self.config_path.write_text(self.render_config())
        check = subprocess.run(
            [doveconf, "-n", "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise DovecotError(f"doveconf rejected {self.config_path}: {check.stderr.strip()}")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [dovecot, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_for_unix_socket(self.socket_path, self.start_timeout, self.proc)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise DovecotError(f"{exc}\n--- dovecot log ---\n{self.log_tail()}") from exc
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM our Dovecot master by PID and wait; it needs 1-3 s to shut down."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        # The master may leave its auth/log/stats children behind (re-parented, still
        # serving connected clients): end the process group we created for it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(read_text_or_empty(self.log_path).splitlines()[-lines:])

    def log_text(self) -> str:
        return read_text_or_empty(self.log_path)

    def __enter__(self) -> DovecotAuth:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def dovecot_fixture(
    users_file: str | os.PathLike[str] | Callable[[Path], Path],
    *,
    scope: FixtureScope = "session",
    name: str = "dovecot",
    mechanisms: Sequence[str] = DEFAULT_MECHANISMS,
    extra_settings: Sequence[str] = (),
) -> Callable[..., Iterator[DovecotAuth]]:
    """Build a pytest fixture that yields a running :class:`DovecotAuth`.

    ``users_file`` is a path, or a callable that receives the fixture's runtime directory
    and returns the path (e.g. to write the file first). The users file is copied into
    the runtime directory so the unprivileged auth process can always read it.

        dovecot_auth = dovecot_fixture(Path("protocol/users.passwd"))
    """

    @pytest.fixture(scope=scope, name=name)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotAuth]:
        base = runtime_dir(tmp_path_factory, name)
        source = users_file(base) if callable(users_file) else Path(users_file)
        users_copy = base / "users.passwd"
        if source.resolve() != users_copy.resolve():
            shutil.copyfile(source, users_copy)
        users_copy.chmod(0o644)
        server = DovecotAuth(
            users_copy,
            base / "auth-client",
            mechanisms=mechanisms,
            extra_settings=extra_settings,
            workdir=base / "dovecot",
        )
        with server:
            yield server

    return _fixture


def doveadm_auth(
    socket_path: Path, user: str, password: str, *info: str
) -> subprocess.CompletedProcess[str]:
    """The real ``doveadm auth test`` (always PLAIN); ``info`` items go to ``-x``."""
    cmd = [require_binary("doveadm"), "auth", "test", "-a", str(socket_path)]
    for item in info:
        cmd += ["-x", item]
    cmd += [user, password]
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False
    )
