"""PLAIN (RFC 4616): ``authzid NUL authcid NUL password`` in one message."""

from __future__ import annotations

from typing import ClassVar

from authbridge.core.mechanisms.base import Failure, Mechanism, Step, VerifyPlain, decode_text


def split_plain(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The three parts as Dovecot 2.3 reads them, or ``None`` for invalid input.

    Exactly two separating NULs, with one quirk kept for compat: Dovecot's scan skips
    the byte right after the second NUL, so a NUL there is not counted; the password is
    a C string, so it ends at its first NUL (such a password is empty).
    """
    first = data.find(b"\x00")
    second = data.find(b"\x00", first + 1) if first >= 0 else -1
    if second < 0 or b"\x00" in data[second + 2 :]:
        return None
    password = data[second + 1 :].partition(b"\x00")[0]
    return data[:first], data[first + 1 : second], password


class Plain(Mechanism):
    name: ClassVar[str] = "PLAIN"
    flags: ClassVar[tuple[str, ...]] = ("plaintext",)
    allows_nuls: ClassVar[bool] = True
    plaintext: ClassVar[bool] = True

    def _step(self, data: bytes) -> Step:
        parts = split_plain(data)
        if parts is None:
            return Failure("invalid input")
        authzid, authcid, password = parts
        if authzid == authcid:
            authzid = b""
        return VerifyPlain(decode_text(authcid), decode_text(authzid), password)
