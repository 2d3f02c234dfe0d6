"""A minimal auth-client (the MTA's side of the protocol) over a UNIX socket, for tests.

Blocking sockets with timeouts: the policy tests speak the protocol byte by byte to the
real daemon, where a real MTA would hide what happened (which line, when, or a close).
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import time
from pathlib import Path
from types import TracebackType


class ConnectionClosed(AssertionError):
    """The server closed the connection (EOF or reset) while a line was expected."""


def plain_resp(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class AuthClient:
    def __init__(
        self, socket_path: str | os.PathLike[str], timeout: float = 10.0, handshake: bool = True
    ) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(os.fspath(socket_path))
        self._buffer = b""
        #: Replies read while waiting for another id (replies come in any order).
        self._unclaimed: dict[str, list[str]] = {}
        self.handshake: list[str] = []
        if handshake:
            while not self.handshake or self.handshake[-1] != "DONE":
                self.handshake.append(self.read_line())
            self.send(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n")

    def send(self, text: str | bytes) -> None:
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def read_line(self, timeout: float | None = None) -> str:
        if timeout is not None:
            self.sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionClosed(f"connection closed; unparsed: {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace")

    def closed_within(self, seconds: float) -> bool:
        """True if the server closes the connection within ``seconds`` (lines are skipped)."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self.read_line(timeout=left)
            except ConnectionClosed:
                return True
            except TimeoutError:
                return False

    def auth_plain(self, request_id: int, user: str, password: str, *params: str) -> None:
        fields = ["AUTH", str(request_id), "PLAIN", "service=smtp", *params]
        fields.append("resp=" + plain_resp(user, password))
        self.send("\t".join(fields) + "\n")

    def plain(self, request_id: int, user: str, password: str, *params: str) -> str:
        """One PLAIN request; returns the reply line (OK/FAIL) for that id."""
        self.auth_plain(request_id, user, password, *params)
        return self.reply(request_id)

    def reply(self, request_id: int, timeout: float | None = None) -> str:
        """The next reply line for ``request_id``; others read meanwhile are kept."""
        wanted = str(request_id)
        if self._unclaimed.get(wanted):
            return self._unclaimed[wanted].pop(0)
        while True:
            line = self.read_line(timeout)
            fields = line.split("\t")
            if len(fields) > 1 and fields[1] == wanted:
                return line
            if len(fields) > 1:
                self._unclaimed.setdefault(fields[1], []).append(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> AuthClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_for_path(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)
