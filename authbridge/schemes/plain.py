"""Plaintext schemes: PLAIN / CLEAR / CLEARTEXT and libpam-pwdfile's PLAIN-TRUNC."""

from __future__ import annotations

import hmac

from authbridge.schemes._core import SchemeError


def verify(raw: bytes, password: bytes, user: str) -> bool:
    return hmac.compare_digest(raw, password)


def generate(password: bytes, user: str, rounds: int | None) -> bytes:
    return password


def split_trunc(raw: bytes) -> tuple[int, bytes]:
    """``<len>-<password>`` → (len, password)."""
    digits, dash, rest = raw.partition(b"-")
    if not dash or not digits.isdigit():
        raise SchemeError("PLAIN-TRUNC: stored data lacks the '<length>-' prefix")
    return int(digits), rest


def verify_trunc(raw: bytes, password: bytes, user: str) -> bool:
    """A password longer than a stored, truncated one matches on its first ``len`` bytes."""
    length, stored = split_trunc(raw)
    if len(stored) == length and len(password) >= length:
        return hmac.compare_digest(stored, password[:length])
    return hmac.compare_digest(stored, password)


def generate_trunc(password: bytes, user: str, rounds: int | None) -> bytes:
    # doveadm prints the bare password here, which its own verifier then rejects;
    # writing the length prefix gives a value both Dovecot and authbridge accept.
    return str(len(password)).encode("ascii") + b"-" + password
