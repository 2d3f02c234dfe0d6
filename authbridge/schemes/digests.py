"""Unsalted and salted plain digests: PLAIN-MD5, LDAP-MD5, SHA*, SMD5, SSHA*, PLAIN-MD4."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from passlib.crypto.digest import lookup_hash

from authbridge.schemes._core import GenerateFn, SchemeError, VerifyFn

SALT_LEN = 4  # what Dovecot generates


def _md4(data: bytes) -> bytes:
    # OpenSSL 3 hides MD4 in its legacy provider; passlib falls back to its own.
    result: bytes = lookup_hash("md4").const(data).digest()
    return result


def _hashlib(name: str) -> Callable[[bytes], bytes]:
    def digest(data: bytes) -> bytes:
        return hashlib.new(name, data).digest()

    return digest


DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    "md4": _md4,
    "md5": _hashlib("md5"),
    "sha1": _hashlib("sha1"),
    "sha256": _hashlib("sha256"),
    "sha512": _hashlib("sha512"),
}


def plain_digest(algorithm: str) -> tuple[VerifyFn, GenerateFn]:
    func = DIGESTS[algorithm]

    def verify(raw: bytes, password: bytes, user: str) -> bool:
        return hmac.compare_digest(func(password), raw)

    def generate(password: bytes, user: str, rounds: int | None) -> bytes:
        return func(password)

    return verify, generate


def salted_digest(scheme: str, algorithm: str) -> tuple[VerifyFn, GenerateFn]:
    """``digest(password ‖ salt) ‖ salt``; the salt is whatever follows the digest."""
    func = DIGESTS[algorithm]
    size = len(func(b""))

    def verify(raw: bytes, password: bytes, user: str) -> bool:
        if len(raw) <= size:
            raise SchemeError(f"{scheme}: stored data is too short ({len(raw)} bytes)")
        salt = raw[size:]
        return hmac.compare_digest(func(password + salt), raw[:size])

    def generate(password: bytes, user: str, rounds: int | None) -> bytes:
        salt = secrets.token_bytes(SALT_LEN)
        return func(password + salt) + salt

    return verify, generate
