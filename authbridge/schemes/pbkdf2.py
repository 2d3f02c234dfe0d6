"""Dovecot's PBKDF2: ``$1$<salt>$<rounds>$<40 hex>``, PBKDF2-HMAC-SHA1 over the salt *text*.

passlib's pbkdf2_sha1 uses another string format and a decoded salt, so this is the
standard-library primitive with Dovecot's framing around it.
"""

from __future__ import annotations

import hashlib
import hmac

from authbridge.schemes._core import SchemeError
from authbridge.schemes.crypt_family import salt

KEY_LEN = 20
DEFAULT_ROUNDS = 5000


def _parse(raw: bytes) -> tuple[bytes, int, bytes]:
    fields = raw.split(b"$")
    # b"$1$salt$rounds$hash" splits into ["", "1", salt, rounds, hash]
    if len(fields) != 5 or fields[0] or fields[1] != b"1":
        raise SchemeError("PBKDF2: stored data is not $1$<salt>$<rounds>$<hash>")
    if not fields[3].isdigit() or int(fields[3]) < 1:
        raise SchemeError("PBKDF2: stored rounds are not a positive number")
    if len(fields[4]) != 2 * KEY_LEN:
        raise SchemeError("PBKDF2: stored hash is not 40 hex characters")
    try:
        key = bytes.fromhex(fields[4].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise SchemeError("PBKDF2: stored hash is not 40 hex characters") from None
    return fields[2], int(fields[3]), key


def verify(raw: bytes, password: bytes, user: str) -> bool:
    salt_text, rounds, key = _parse(raw)
    computed = hashlib.pbkdf2_hmac("sha1", password, salt_text, rounds, KEY_LEN)
    return hmac.compare_digest(computed, key)


def generate(password: bytes, user: str, rounds: int | None) -> bytes:
    count = DEFAULT_ROUNDS if rounds is None else max(rounds, 1)
    salt_text = salt(16).encode("ascii")
    key = hashlib.pbkdf2_hmac("sha1", password, salt_text, count, KEY_LEN)
    return b"$1$" + salt_text + b"$" + str(count).encode("ascii") + b"$" + key.hex().encode()
