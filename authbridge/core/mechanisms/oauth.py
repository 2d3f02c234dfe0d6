"""OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's de-facto format): a bearer token.

Both carry an OAuth 2.0 access token in one client message; the mechanism only parses
it and asks the check pipeline to validate the token (:class:`VerifyToken`). When the
token is refused, the server first sends an error status (a JSON object) and the
client's answer to it (RFC 7628's dummy ``%x01``; XOAUTH2 clients send an empty line)
releases the FAIL: :attr:`Mechanism.failure_status`, handled by the session.
"""

from __future__ import annotations

from typing import ClassVar

from authbridge.core.mechanisms.base import Failure, Mechanism, Step, VerifyToken, decode_text

#: RFC 7628 key/value separator.
KVSEP = b"\x01"
#: RFC 6750's ``b64token`` characters (the token after ``Bearer``).
_B64TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")


def bearer_token(value: bytes) -> bytes | None:
    """The token of an ``auth`` value (``Bearer <b64token>``, scheme in any case)."""
    scheme, space, token = value.partition(b" ")
    if not space or scheme.lower() != b"bearer":
        return None
    token = token.strip(b" ")
    if not token or any(byte not in _B64TOKEN for byte in token):
        return None
    return token


def _pairs(data: bytes) -> dict[bytes, bytes] | None:
    """``key=value`` pairs separated by ^A and ended by ^A^A; ``None``: malformed."""
    if not data.endswith(KVSEP + KVSEP):
        return None
    pairs: dict[bytes, bytes] = {}
    for item in data[:-2].split(KVSEP):
        key, eq, value = item.partition(b"=")
        if not eq or not key or key in pairs:
            return None
        pairs[key] = value
    return pairs


def _unescape_saslname(value: str) -> str | None:
    """RFC 5801 ``saslname``: ``=2C`` is ``,`` and ``=3D`` is ``=``; no other ``=``."""
    out = value.replace("=2C", ",").replace("=3D", "=")
    return None if "=" in value.replace("=2C", "").replace("=3D", "") else out


def _verify(user: str, pairs: dict[bytes, bytes]) -> Step:
    """The token to validate for ``user`` (the name the client gave, '' for none).

    As in Dovecot 2.3: an ``auth`` value that is not a bearer token fails before the
    name is taken; no ``auth`` at all fails after it, so that FAIL carries ``user=``.
    """
    if b"auth" not in pairs:
        return Failure("no bearer token", username=user or None)
    token = bearer_token(pairs[b"auth"])
    if token is None:
        return Failure("invalid bearer token")
    return VerifyToken(user, token)


class OAuthBearer(Mechanism):
    """RFC 7628: ``n,a=user,`` ^A ``auth=Bearer TOKEN`` ^A ... ^A^A."""

    name: ClassVar[str] = "OAUTHBEARER"
    flags: ClassVar[tuple[str, ...]] = ("plaintext",)
    plaintext: ClassVar[bool] = True
    #: Dovecot 2.3's error status, byte for byte (RFC 7628 §3.2.2 requires only ``status``).
    failure_status: ClassVar[bytes | None] = b'{"status":"invalid_token"}'

    def _step(self, data: bytes) -> Step:
        header, sep, rest = data.partition(KVSEP)
        if not sep:
            return Failure("invalid OAUTHBEARER message: no key/value part")
        fields = header.split(b",")
        if len(fields) != 3 or fields[2] != b"":
            return Failure("invalid GS2 header")
        cbind, authzid_field = fields[0], fields[1]
        if cbind.startswith(b"p"):
            return Failure("channel binding not supported")
        if cbind not in (b"n", b"y"):
            return Failure("invalid GS2 header")
        authzid = ""
        if authzid_field:
            if not authzid_field.startswith(b"a="):
                return Failure("invalid authzid field")
            unescaped = _unescape_saslname(decode_text(authzid_field[2:]))
            if unescaped is None:
                return Failure("authzid escaping is invalid")
            authzid = unescaped
        pairs = _pairs(rest)
        if pairs is None:
            return Failure("invalid OAUTHBEARER key/value pairs")
        return _verify(authzid, pairs)


class XOAuth2(Mechanism):
    """Google's format: ``user=USER`` ^A ``auth=Bearer TOKEN`` ^A^A."""

    name: ClassVar[str] = "XOAUTH2"
    flags: ClassVar[tuple[str, ...]] = ("plaintext",)
    plaintext: ClassVar[bool] = True
    #: Dovecot 2.3's error status, byte for byte (Google's fields).
    failure_status: ClassVar[bytes | None] = b'{"status":"401","schemes":"bearer","scope":"mail"}'

    def _step(self, data: bytes) -> Step:
        pairs = _pairs(data)
        if pairs is None:
            return Failure("invalid XOAUTH2 message")
        user = pairs.get(b"user")
        if user is None:
            return Failure("XOAUTH2 message without user")
        return _verify(decode_text(user), pairs)
