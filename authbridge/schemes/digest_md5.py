"""DIGEST-MD5 stored secret: MD5("user:realm:password"), user@realm split at the last '@'."""

from __future__ import annotations

import hashlib
import hmac

from authbridge.schemes._core import SchemeError


def secret(password: bytes, user: str) -> bytes:
    if not user:
        raise SchemeError("DIGEST-MD5: the user name is needed and was not given")
    name, at, realm = user.rpartition("@")
    if not at:
        name, realm = user, ""
    prefix = f"{name}:{realm}:".encode("utf-8", "surrogateescape")
    return hashlib.md5(prefix + password).digest()


def verify(raw: bytes, password: bytes, user: str) -> bool:
    return hmac.compare_digest(secret(password, user), raw)


def generate(password: bytes, user: str, rounds: int | None) -> bytes:
    return secret(password, user)
