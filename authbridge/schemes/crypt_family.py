"""crypt(3)-style schemes: MD5-CRYPT (and MD5), SHA256-CRYPT, SHA512-CRYPT, DES-CRYPT, CRYPT.

libc does the work when it can (faster, see libc_crypt); passlib handlers otherwise. The
result is compared with the stored string in constant time, as Dovecot compares strings.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from passlib.hash import des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from authbridge.schemes import bcrypt_scheme, libc_crypt
from authbridge.schemes._core import GenerateFn, SchemeError, VerifyFn
from authbridge.schemes.digests import plain_digest
from authbridge.schemes.encoding import b64decode, hexdecode

SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MIN_SHA_ROUNDS = 1000
MAX_SHA_ROUNDS = 999_999_999


def salt(length: int) -> str:
    return "".join(secrets.choice(SALT_CHARS) for _ in range(length))


def _ascii(scheme: str, raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise SchemeError(f"{scheme}: stored data is not ASCII") from None


def _passlib_hash(handler: Any, password: bytes, stored: str) -> str:
    """The full hash string passlib makes for ``password`` with ``stored``'s settings."""
    parsed = handler.from_string(stored)
    parsed.checksum = parsed._calc_checksum(password)
    return str(parsed.to_string())


def crypt_scheme(scheme: str, handler: Any, prefix: str) -> VerifyFn:
    """Verifier for a fixed crypt method: the stored string must parse as that method."""

    def verify(raw: bytes, password: bytes, user: str) -> bool:
        stored = _ascii(scheme, raw)
        try:
            if not stored.startswith(prefix):
                raise ValueError
            handler.from_string(stored)  # format check, independent of the backend
            try:
                computed = libc_crypt.crypt(password, stored)
            except libc_crypt.Rejected:
                raise ValueError from None
            if computed is None:
                computed = _passlib_hash(handler, password, stored)
        except ValueError:
            raise SchemeError(f"{scheme}: stored data is not a valid {scheme} hash") from None
        return hmac.compare_digest(computed.encode("ascii"), stored.encode("ascii"))

    return verify


verify_md5_crypt = crypt_scheme("MD5-CRYPT", md5_crypt, "$1$")


def generate_md5_crypt(password: bytes, user: str, rounds: int | None) -> bytes:
    setting = "$1$" + salt(8)
    return _make(md5_crypt, password, setting)


_verify_plain_md5, _ = plain_digest("md5")


def verify_md5(raw: bytes, password: bytes, user: str) -> bool:
    """{MD5}: MD5-CRYPT when it starts with ``$1$``, else a PLAIN-MD5 digest (hex or base64)."""
    if raw.startswith(b"$1$"):
        return verify_md5_crypt(raw, password, user)
    text = _ascii("MD5", raw)
    try:
        digest = hexdecode("MD5", text) if len(text) == 32 else b64decode("MD5", text)
    except SchemeError:
        if len(text) != 32:
            raise SchemeError("MD5: stored data is neither MD5-CRYPT nor PLAIN-MD5") from None
        try:
            digest = b64decode("MD5", text)
        except SchemeError:
            raise SchemeError("MD5: stored data is neither MD5-CRYPT nor PLAIN-MD5") from None
    if len(digest) != 16:
        raise SchemeError("MD5: stored data is neither MD5-CRYPT nor PLAIN-MD5")
    return _verify_plain_md5(digest, password, user)


def _sha_setting(prefix: str, rounds: int | None) -> str:
    if rounds is None:
        return f"{prefix}{salt(16)}"
    rounds = min(max(rounds, MIN_SHA_ROUNDS), MAX_SHA_ROUNDS)
    return f"{prefix}rounds={rounds}${salt(16)}"


def _make(handler: Any, password: bytes, setting: str) -> bytes:
    try:
        result = libc_crypt.crypt(password, setting)
    except libc_crypt.Rejected:
        result = None
    if result is None:
        result = _passlib_hash(handler, password, setting)
    return result.encode("ascii")


def sha_crypt(scheme: str, handler: Any, prefix: str) -> tuple[VerifyFn, GenerateFn]:
    def generate(password: bytes, user: str, rounds: int | None) -> bytes:
        return _make(handler, password, _sha_setting(prefix, rounds))

    return crypt_scheme(scheme, handler, prefix), generate


verify_sha256_crypt, generate_sha256_crypt = sha_crypt("SHA256-CRYPT", sha256_crypt, "$5$")
verify_sha512_crypt, generate_sha512_crypt = sha_crypt("SHA512-CRYPT", sha512_crypt, "$6$")


_verify_des_strict = crypt_scheme("DES-CRYPT", des_crypt, "")


def verify_des_crypt(raw: bytes, password: bytes, user: str) -> bool:
    if len(raw) != 13:
        raise SchemeError(f"DES-CRYPT: stored data has {len(raw)} characters instead of 13")
    return _verify_des_strict(raw, password, user)


def generate_des_crypt(password: bytes, user: str, rounds: int | None) -> bytes:
    return _make(des_crypt, password, salt(2))


_PASSLIB_BY_PREFIX: tuple[tuple[str, Any], ...] = (
    ("$1$", md5_crypt),
    ("$5$", sha256_crypt),
    ("$6$", sha512_crypt),
)


def verify_crypt(raw: bytes, password: bytes, user: str) -> bool:
    """{CRYPT}: whatever libc crypt() knows; bcrypt by the built-in code, like Dovecot.

    An empty value, or one crypt() refuses (a locked ``!``/``*`` entry), never matches and
    is not an error: Dovecot behaves the same way.
    """
    if len(raw) > 4 and raw[:2] == b"$2" and raw[3:4] == b"$":
        return bcrypt_scheme.verify(raw, password, user)
    if not raw:
        return False
    stored = _ascii("CRYPT", raw)
    try:
        computed = libc_crypt.crypt(password, stored)
    except libc_crypt.Rejected:
        return False
    if computed is None:
        computed = _crypt_fallback(password, stored)
        if computed is None:
            return False
    return hmac.compare_digest(computed.encode("utf-8"), stored.encode("ascii"))


def _crypt_fallback(password: bytes, stored: str) -> str | None:
    handler = next((h for prefix, h in _PASSLIB_BY_PREFIX if stored.startswith(prefix)), des_crypt)
    try:
        return _passlib_hash(handler, password, stored)
    except ValueError:
        return None


def generate_crypt(password: bytes, user: str, rounds: int | None) -> bytes:
    return bcrypt_scheme.generate(password, user, rounds)
