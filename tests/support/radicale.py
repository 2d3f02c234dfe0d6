"""Start a REAL Radicale (PyPI, >= 3.5.7) whose ``[auth] type = dovecot`` asks our socket.

Radicale is a CalDAV/CardDAV server in Python; its dovecot backend is a third-party
auth-client (PLAIN only, one connection per login, ``service=radicale``, ``rip=``). It
runs as a subprocess of the venv's interpreter on a loopback port, with its storage in
the given work directory, and :meth:`RadicaleServer.propfind` logs a user in over HTTP
Basic auth: 207 means the auth server said OK, 401 that it said FAIL.

Radicale's own defences are switched off (``delay = 0``, ``delay_on_error = 0``, no
login cache) so that each request reaches the auth server and a failure costs no time.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import importlib.metadata
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from tests.support import free_tcp_port, missing_peer, read_text_or_empty, wait_until

#: What issue #20 asks for (Debian 12 packages 3.1.8; PyPI has the current releases).
MINIMUM_VERSION = (3, 5, 7)

_CONFIG_TEMPLATE = """\
# Written by tests/support/radicale.py.
[server]
hosts = 127.0.0.1:{port}
delay_on_error = 0
[auth]
type = dovecot
{connection}
delay = 0
cache_logins = false
[rights]
type = owner_only
[storage]
filesystem_folder = {storage}
[web]
type = none
[logging]
level = {log_level}
"""


class RadicaleError(RuntimeError):
    """Radicale did not come up or did not stop; the message has its log tail."""


def require_radicale() -> str:
    """Radicale's version string; skip (fail under CI=true) if missing or too old."""
    try:
        version = importlib.metadata.version("radicale")
    except importlib.metadata.PackageNotFoundError:
        missing_peer("radicale is not installed (pip install 'radicale>=3.5.7')")
    numbers = tuple(int(part) for part in version.split(".")[:3] if part.isdigit())
    if numbers < MINIMUM_VERSION:
        missing_peer(f"radicale {version} is older than 3.5.7")
    return version


class RadicaleServer:
    """A running Radicale on ``127.0.0.1:port`` authenticating against ``auth_socket``.

    ``auth_socket`` is a UNIX socket path, or ``(host, port)`` for Radicale's AF_INET
    connection type (a TCP listener).
    """

    def __init__(
        self,
        auth_socket: str | os.PathLike[str] | tuple[str, int],
        workdir: str | os.PathLike[str],
        port: int | None = None,
        log_level: str = "info",
        start_timeout: float = 15.0,
    ) -> None:
        self.auth_socket = auth_socket if isinstance(auth_socket, tuple) else Path(auth_socket)
        self.workdir = Path(workdir)
        self.port = port if port is not None else free_tcp_port()
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.config_path = self.workdir / "radicale.conf"
        self.log_path = self.workdir / "radicale.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def render_config(self) -> str:
        if isinstance(self.auth_socket, tuple):
            host, port = self.auth_socket
            connection = (
                f"dovecot_connection_type = AF_INET\ndovecot_host = {host}\ndovecot_port = {port}"
            )
        else:
            connection = f"dovecot_connection_type = AF_UNIX\ndovecot_socket = {self.auth_socket}"
        return _CONFIG_TEMPLATE.format(
            port=self.port,
            connection=connection,
            storage=self.workdir / "collections",
            log_level=self.log_level,
        )

    def start(self) -> RadicaleServer:
        require_radicale()
        if self.proc is not None:
            raise RadicaleError("this RadicaleServer is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render_config())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "radicale", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_until(self._answers, self.start_timeout, "Radicale answering HTTP")
        except TimeoutError as exc:
            self.stop()
            raise RadicaleError(f"{exc}\n--- radicale log ---\n{self.log_tail()}") from exc
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RadicaleError(f"radicale exited with {self.proc.returncode}\n{self.log_tail()}")
        try:
            self.request("OPTIONS", "/")
        except OSError:
            return False
        return True

    def request(
        self,
        method: str,
        path: str,
        credentials: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, bytes]:
        """One HTTP request (Basic auth when ``credentials`` are given): status and body."""
        sent = dict(headers or {})
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            sent["Authorization"] = f"Basic {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def propfind(self, user: str, password: str, path: str | None = None) -> int:
        """PROPFIND (Depth 0) on the user's own collection: 207 logged in, 401 refused."""
        target = path if path is not None else f"/{user}/"
        status, _ = self.request(
            "PROPFIND", target, credentials=(user, password), headers={"Depth": "0"}
        )
        return status

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID and wait; SIGKILL if it does not go."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_text(self) -> str:
        return read_text_or_empty(self.log_path)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> RadicaleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self.stop()
