"""One login over an auth-client socket, byte for byte as an MTA sends it.

For tests that need the exact ``OK``/``FAIL`` line and its timing from any server on the
socket (authbridge or the real Dovecot): PLAIN, or CRAM-MD5 answered from the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reply:
    line: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.line.startswith("OK\t")

    @property
    def fields(self) -> dict[str, str]:
        return dict(f.partition("=")[::2] for f in self.line.split("\t")[2:])


def _read_line(sock: socket.socket, buffer: bytearray, timeout: float) -> str:
    sock.settimeout(timeout)
    while b"\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed; got {bytes(buffer)!r}")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


def login(
    socket_path: Path,
    user: str,
    password: str,
    mech: str = "PLAIN",
    params: tuple[str, ...] = ("service=smtp", "rip=192.0.2.7", "secured"),
    timeout: float = 20.0,
) -> Reply:
    """Authenticate once on a fresh connection; the reply line and how long it took."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(b"VERSION\t1\t2\nCPID\t%d\n" % os.getpid())
        buffer = bytearray()
        while _read_line(sock, buffer, timeout) != "DONE":
            pass
        extra = "\t".join(params)
        started = time.monotonic()
        if mech == "PLAIN":
            resp = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            sock.sendall(f"AUTH\t1\tPLAIN\t{extra}\tresp={resp}\n".encode())
        elif mech == "CRAM-MD5":
            sock.sendall(f"AUTH\t1\tCRAM-MD5\t{extra}\n".encode())
            cont = _read_line(sock, buffer, timeout)
            challenge = base64.b64decode(cont.split("\t")[2])
            digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
            answer = base64.b64encode(f"{user} {digest}".encode()).decode()
            sock.sendall(f"CONT\t1\t{answer}\n".encode())
        else:
            raise ValueError(mech)
        line = _read_line(sock, buffer, timeout)
        return Reply(line, time.monotonic() - started)
