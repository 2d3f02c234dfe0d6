"""CRAM-MD5 (RFC 2195): the server sends a fresh challenge, the client an HMAC-MD5 of it."""

from __future__ import annotations

import secrets
import socket
import time
from typing import ClassVar

from authbridge.mechanisms.base import (
    Challenge,
    Failure,
    Mechanism,
    Step,
    VerifyCramMd5,
    decode_text,
)


def make_challenge(hostname: str, now: float) -> bytes:
    """``<16 random digits.unix-time@hostname>``, the shape Dovecot uses."""
    digits = f"{secrets.randbelow(10**16):016d}"
    return f"<{digits}.{int(now)}@{hostname}>".encode()


class CramMd5(Mechanism):
    name: ClassVar[str] = "CRAM-MD5"
    flags: ClassVar[tuple[str, ...]] = ("dictionary", "active")
    allows_nuls: ClassVar[bool] = False

    hostname: ClassVar[str] = socket.gethostname()

    def __init__(self) -> None:
        self._challenge: bytes | None = None

    def initial(self, data: bytes | None) -> Step:
        # An initial response is ignored (the exchange always starts with our
        # challenge), but like Dovecot it is still screened: a NUL in it fails.
        refused = self.screen(data) if data else None
        if refused is not None:
            return refused
        self._challenge = make_challenge(self.hostname, time.time())
        return Challenge(self._challenge)

    def _step(self, data: bytes) -> Step:
        assert self._challenge is not None
        space = data.rfind(b" ")
        if space <= 0:
            return Failure("missing digest")
        return VerifyCramMd5(
            decode_text(data[:space]), self._challenge, decode_text(data[space + 1 :])
        )
