"""CRAM-MD5 (RFC 2195): the server sends a fresh challenge, the client an HMAC-MD5 of it.

The mechanism asks for the user's CRAM-MD5 credentials and compares the digest itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import time
from typing import ClassVar

from authbridge.core.mechanisms.base import (
    Accepted,
    Challenge,
    Credentials,
    Failure,
    Mechanism,
    NeedCredentials,
    Step,
    decode_text,
)
from authbridge.schemes import cram_md5_digest


def make_challenge(hostname: str, now: float) -> bytes:
    """``<16 random digits.unix-time@hostname>``, the shape Dovecot uses."""
    digits = f"{secrets.randbelow(10**16):016d}"
    return f"<{digits}.{int(now)}@{hostname}>".encode()


class CramMd5(Mechanism):
    name: ClassVar[str] = "CRAM-MD5"
    flags: ClassVar[tuple[str, ...]] = ("dictionary", "active")
    allows_nuls: ClassVar[bool] = False

    hostname: ClassVar[str] = socket.gethostname()

    def __init__(self, challenge: bytes | None = None) -> None:
        #: A given challenge is sent as is (tests); otherwise a fresh one per exchange.
        self._given = challenge
        self._challenge: bytes | None = None
        self._response = b""

    def initial(self, data: bytes | None) -> Step:
        # An initial response is ignored (the exchange always starts with our
        # challenge), but like Dovecot it is still screened: a NUL in it fails.
        refused = self.screen(data) if data else None
        if refused is not None:
            return refused
        self._challenge = self._given or make_challenge(self.hostname, time.time())
        return Challenge(self._challenge)

    def _step(self, data: bytes) -> Step:
        assert self._challenge is not None
        space = data.rfind(b" ")
        if space <= 0:
            return Failure("missing digest")
        self._response = data[space + 1 :]
        return NeedCredentials(decode_text(data[:space]), self.name)

    def resume(self, credentials: Credentials) -> Step:
        assert self._challenge is not None
        if credentials.plaintext is not None:
            # From a plaintext password the C HMAC gives the same digest ~50x faster
            # than the precomputed-context path in pure Python.
            digest = hmac.new(credentials.plaintext, self._challenge, hashlib.md5).digest()
        else:
            assert isinstance(credentials.data, bytes)
            digest = cram_md5_digest(credentials.data, self._challenge)
        given = self._response[:32]
        if len(given) == 32 and hmac.compare_digest(digest.hex().encode(), given):
            return Accepted()
        return Failure("password mismatch", password_mismatch=True)
