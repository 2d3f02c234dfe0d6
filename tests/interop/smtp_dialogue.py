"""A minimal line-by-line SMTP client for dialogues swaks cannot script.

swaks always sends AUTH PLAIN with an initial response and cannot cancel an exchange
with ``*``; these tests need both, so they talk to the real MTA over TCP themselves.
Each command waits for the complete reply, as SMTP synchronisation requires.
"""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class SmtpDialogue:
    """One SMTP session to ``host:port``; every call returns the server's full reply."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rb")
        self.transcript: list[str] = []
        self.greeting = self.read_reply()

    def read_reply(self) -> Reply:
        lines: list[str] = []
        while True:
            raw = self._file.readline()
            if not raw:
                raise ConnectionError("server closed the connection; so far:\n" + self.dump())
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.transcript.append("S: " + line)
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return Reply(int(line[:3]), tuple(lines))

    def command(self, line: str, *, shown: str | None = None) -> Reply:
        """Send ``line``; ``shown`` replaces it in the transcript (for credentials)."""
        self.transcript.append("C: " + (line if shown is None else shown))
        self._sock.sendall(line.encode() + b"\r\n")
        return self.read_reply()

    def dump(self) -> str:
        return "\n".join(self.transcript)

    def close(self) -> None:
        try:
            self.command("QUIT")
        except OSError:
            pass
        finally:
            self._file.close()
            self._sock.close()

    def __enter__(self) -> SmtpDialogue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain_response(user: str, password: str) -> str:
    """The base64 PLAIN response with an empty authorization identity."""
    return b64(f"\0{user}\0{password}")
