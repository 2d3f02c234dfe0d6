"""BLF-CRYPT: bcrypt through the ``bcrypt`` package, with Dovecot's input rules.

Dovecot's crypt_blowfish reads the password as a C string and uses at most 72 bytes;
bcrypt 5 raises for longer input instead, so the password is cut the same way first.
"""

from __future__ import annotations

import hmac
import re

import bcrypt

from authbridge.schemes._core import SchemeError

MAX_PASSWORD = 72
DEFAULT_COST = 5
MIN_COST, MAX_COST = 4, 31
_FORMAT = re.compile(rb"\$2([abxy])\$(\d\d)\$[./A-Za-z0-9]{53}")


def _cut(password: bytes) -> bytes:
    return password.split(b"\x00", 1)[0][:MAX_PASSWORD]


def verify(raw: bytes, password: bytes, user: str) -> bool:
    match = _FORMAT.fullmatch(raw)
    if match is None or not MIN_COST <= int(match.group(2)) <= MAX_COST:
        raise SchemeError("BLF-CRYPT: stored data is not a valid bcrypt hash")
    secret = _cut(password)
    if match.group(1) == b"x" and not secret.isascii():
        # $2x$ reproduces an old sign-extension bug for 8-bit bytes that bcrypt lacks.
        raise SchemeError("BLF-CRYPT: $2x$ hashes are supported for ASCII passwords only")
    try:
        computed = bcrypt.hashpw(secret, raw)
    except ValueError:
        raise SchemeError("BLF-CRYPT: stored data is not a valid bcrypt hash") from None
    return hmac.compare_digest(computed, raw)


def generate(password: bytes, user: str, rounds: int | None) -> bytes:
    cost = DEFAULT_COST if rounds is None else min(max(rounds, MIN_COST), MAX_COST)
    hashed: bytes = bcrypt.hashpw(_cut(password), bcrypt.gensalt(cost, prefix=b"2b"))
    # $2b$ and $2y$ are the same algorithm; Dovecot writes $2y$.
    return b"$2y$" + hashed[4:]
