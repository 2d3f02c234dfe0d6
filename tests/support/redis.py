"""A real ``redis-server`` for the fleet tests: on a UNIX socket in a temporary
directory, no persistence, started and stopped (or killed, stopped, continued) by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support import require_binary
from tests.support.exim import stop_process


class RedisServer:
    """``redis-server`` listening on ``directory/redis.sock`` only (no TCP port)."""

    def __init__(
        self, directory: Path, password: str = "", tls: tuple[Path, Path] | None = None
    ) -> None:
        """``tls``: (certificate, key): listen with TLS on a loopback port instead."""
        self.directory = directory
        self.tls = tls
        self.port = 0
        self.socket = directory / "redis.sock"
        self.log = directory / "redis.log"
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/3?ssl_ca_certs={self.tls[0]}"
        return f"unix://{auth}{self.socket}?db=3"

    def start(self) -> RedisServer:
        binary = require_binary("redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        args = [binary, "--port", "0", "--unixsocket", str(self.socket)]
        args += ["--unixsocketperm", "777", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--daemonize", "no", "--logfile", str(self.log)]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is not None:
            from tests.support import free_tcp_port

            self.port = self.port or free_tcp_port()
            cert, key = self.tls
            args += ["--tls-port", str(self.port), "--bind", "127.0.0.1"]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not come up: {self.log.read_text()}")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL by PID and reap it (the socket file stays: connections are refused)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a SIGSTOPped server must wake to stop
            stop_process(proc)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
