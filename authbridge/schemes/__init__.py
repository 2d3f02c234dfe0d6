"""Dovecot-compatible password schemes: parse a stored value, verify, derive, generate.

Everything the core needs goes through the functions here; the schemes themselves live
in one registry (``registry.py``, filled by ``builtin.py``). All functions are pure and
take picklable arguments so the core may run them in a process pool.
"""

from __future__ import annotations

from typing import Literal

from authbridge.schemes import builtin as _builtin  # noqa: F401  (registers the schemes)
from authbridge.schemes import cram_md5 as _cram_md5
from authbridge.schemes import digest_md5 as _digest_md5
from authbridge.schemes import scram as _scram
from authbridge.schemes._core import Scheme, SchemeError, StoredPassword
from authbridge.schemes.encoding import decode as _decode
from authbridge.schemes.encoding import encode as _encode
from authbridge.schemes.passwd_file_compat import apply_compat_suffix
from authbridge.schemes.registry import get as _get
from authbridge.schemes.registry import lookup as _lookup
from authbridge.schemes.registry import names as _names

__all__ = [
    "Scheme",
    "SchemeError",
    "StoredPassword",
    "apply_compat_suffix",
    "available_schemes",
    "cram_md5_context",
    "cram_md5_digest",
    "credentials",
    "digest_md5_secret",
    "generate",
    "is_expensive",
    "mechanisms_allowed",
    "parse_stored",
    "plaintext",
    "scram_credentials",
    "verify_password",
]

_SUFFIXES: dict[str, Literal["b64", "hex"]] = {"B64": "b64", "BASE64": "b64", "HEX": "hex"}


def _split_name(name: str) -> tuple[str, Literal["b64", "hex"] | None]:
    """``sha1.HEX`` → ("SHA1", "hex"); an unknown suffix keeps the whole (unknown) name."""
    upper = name.upper()
    base, dot, suffix = upper.partition(".")
    if not dot:
        return upper, None
    encoding = _SUFFIXES.get(suffix)
    return (base, encoding) if encoding else (upper, None)


def parse_stored(value: str, default_scheme: str = "CRYPT") -> StoredPassword:
    """Split a stored password like Dovecot's ``password_get_scheme`` (protocol.md §8.1).

    A bare ``$1$salt$hash`` is MD5-CRYPT (anything after a further ``$`` is dropped);
    ``{SCHEME}data`` names its scheme; anything else gets ``default_scheme``.
    Unknown schemes are not an error here; ``verify_password`` raises for them.
    """
    if value.startswith("$1$"):
        salt_end = value.find("$", 3)
        if salt_end >= 0:
            hash_end = value.find("$", salt_end + 1)
            data = value if hash_end < 0 else value[:hash_end]
            return StoredPassword("MD5-CRYPT", data, None)
    if value.startswith("{"):
        end = value.find("}")
        if end >= 0:
            scheme, encoding = _split_name(value[1:end])
            return StoredPassword(scheme, value[end + 1 :], encoding)
    scheme, encoding = _split_name(default_scheme)
    return StoredPassword(scheme, value, encoding)


def _decoded(entry: Scheme, stored: StoredPassword) -> bytes:
    """``stored``'s data decoded for ``entry``, once per ``StoredPassword`` object."""
    raw = stored.raw
    if raw is None:
        raw = _decode(entry, stored)
        object.__setattr__(stored, "raw", raw)  # a cache, not part of the value
    return raw


def _raw(stored: StoredPassword) -> tuple[Scheme, bytes]:
    entry = _lookup(stored)
    return entry, _decoded(entry, stored)


def verify_password(stored: StoredPassword, password: bytes, user: str) -> bool:
    """True if ``password`` matches; False if not; SchemeError if the stored value is unusable."""
    entry, raw = _raw(stored)
    try:
        return entry.verify(raw, password, user)
    except SchemeError:
        raise
    except (ValueError, TypeError):
        # Library errors may quote the hash; never pass their text on.
        raise SchemeError(f"{stored.scheme}: stored data is not usable") from None


def is_expensive(stored: StoredPassword) -> bool:
    """True when verifying costs real CPU (crypt family, bcrypt, argon2, PBKDF2, SCRAM)."""
    entry = _get(stored.scheme)
    return entry is not None and entry.expensive


def plaintext(stored: StoredPassword) -> bytes | None:
    """The password itself for plaintext schemes (PLAIN, CLEAR, ..., PLAIN-TRUNC), else None."""
    entry = _get(stored.scheme)
    if entry is None or entry.kind != "plain":
        return None
    raw = _decoded(entry, stored)
    return entry.extract(raw) if entry.extract is not None else raw


def cram_md5_context(stored: StoredPassword) -> bytes | None:
    """The 32-byte HMAC-MD5 context from {CRAM-MD5}/{HMAC-MD5} data or a plaintext scheme."""
    entry = _get(stored.scheme)
    if entry is None:
        return None
    if entry.kind == "cram-md5":
        return _decoded(entry, stored)
    secret = plaintext(stored)
    return None if secret is None else _cram_md5.context_from_password(secret)


def cram_md5_digest(context: bytes, challenge: bytes) -> bytes:
    """HMAC-MD5(password, challenge) from a stored context (16 bytes)."""
    return _cram_md5.digest(context, challenge)


def scram_credentials(
    stored: StoredPassword, algorithm: str, user: str
) -> tuple[int, bytes, bytes, bytes] | None:
    """(iterations, salt, StoredKey, ServerKey) for SCRAM-``algorithm`` ("SHA-1"/"SHA-256").

    From {SCRAM-*} data as stored, or derived from a plaintext scheme with a fresh random
    salt and 4096 iterations on every call (Dovecot does the same per lookup). None when
    the stored scheme cannot serve that algorithm.
    """
    scheme = "SCRAM-" + algorithm.upper()
    if scheme not in _scram.HASHES:
        raise ValueError(f"unsupported SCRAM algorithm {algorithm!r}")
    entry = _get(stored.scheme)
    if entry is None:
        return None
    if entry.kind == scheme.lower():
        keys = _scram.parse(scheme, _decoded(entry, stored))
    else:
        secret = plaintext(stored)
        if secret is None:
            return None
        keys = _scram.new_keys(scheme, secret)
    return keys.iterations, keys.salt, keys.stored_key, keys.server_key


def credentials(
    stored: StoredPassword, scheme: str, user: str
) -> tuple[object, bytes | None] | None:
    """``stored`` as credentials of ``scheme`` (Dovecot's lookup_credentials), with the
    plaintext password when the store keeps one: ``(data, plaintext)``, or ``None``
    when the stored scheme cannot serve ``scheme``. SchemeError: unusable stored data.

    CRAM-MD5: the HMAC context (``None`` from a plaintext, whose password is faster to
    use as is); SCRAM-SHA-1/256: (iterations, salt, StoredKey, ServerKey).
    """
    if scheme == "CRAM-MD5":
        secret = plaintext(stored)
        if secret is not None:
            return None, secret
        context = cram_md5_context(stored)
        return None if context is None else (context, None)
    if scheme.startswith("SCRAM-"):
        keys = scram_credentials(stored, scheme[6:], user)
        return None if keys is None else (keys, None)
    raise ValueError(f"no credentials of scheme {scheme!r}")


def digest_md5_secret(stored: StoredPassword, user: str) -> bytes | None:
    """MD5(user:realm:password) for DIGEST-MD5, from {DIGEST-MD5} data or a plaintext."""
    entry = _get(stored.scheme)
    if entry is None:
        return None
    if entry.kind == "digest-md5":
        return _decoded(entry, stored)
    secret = plaintext(stored)
    return None if secret is None else _digest_md5.secret(secret, user)


def mechanisms_allowed(stored: StoredPassword) -> frozenset[str]:
    """SASL mechanisms the stored value can serve (protocol.md §5.8)."""
    allowed = {"PLAIN", "LOGIN"}
    entry = _get(stored.scheme)
    kind = entry.kind if entry is not None else "other"
    if kind == "plain":
        allowed |= {"CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "DIGEST-MD5"}
    elif kind != "other":
        allowed.add(kind.upper())
    return frozenset(allowed)


def generate(scheme: str, password: bytes, user: str, rounds: int | None = None) -> str:
    """``{SCHEME}data`` as ``doveadm pw -s SCHEME`` prints it (suffixes such as .b64 allowed)."""
    name, encoding = _split_name(scheme)
    entry = _get(name)
    if entry is None:
        raise SchemeError(f"unknown password scheme {scheme.upper()!r}")
    raw = entry.generate(password, user, rounds)
    return "{" + scheme.upper() + "}" + _encode(raw, encoding or entry.encoding)


def available_schemes() -> list[str]:
    return _names()
