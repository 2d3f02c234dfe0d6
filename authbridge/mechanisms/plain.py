"""PLAIN (RFC 4616): ``authzid NUL authcid NUL password`` in one message."""

from __future__ import annotations

from typing import ClassVar

from authbridge.mechanisms.base import Failure, Mechanism, Step, VerifyPlain, decode_text


class Plain(Mechanism):
    name: ClassVar[str] = "PLAIN"
    flags: ClassVar[tuple[str, ...]] = ("plaintext",)
    allows_nuls: ClassVar[bool] = True
    plaintext: ClassVar[bool] = True

    def _step(self, data: bytes) -> Step:
        parts = data.split(b"\x00")
        if len(parts) != 3:
            return Failure("invalid input")
        authzid, authcid, password = parts
        if authzid == authcid:
            authzid = b""
        return VerifyPlain(decode_text(authcid), decode_text(authzid), password)
