"""Keyed fingerprints of guesses and user names: what the penalty remembers instead of
passwords.

A repeated identical wrong password must be recognised (a phone retrying a stale saved
password is not an attacker) without storing the password or an unkeyed hash of it,
which a stolen Redis dump would open to a dictionary attack. BLAKE2b keyed with a
secret: the fleet's shared file (every host must compute the same fingerprint) or, for
a process that keeps its penalty to itself, a random key that never leaves it.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

#: Bytes of a guess fingerprint: collisions only merge two guesses into one.
GUESS_SIZE = 8
#: Bytes of a user-name fingerprint (a Redis key part; hex in the key).
USER_SIZE = 12


def load_key(path: str) -> bytes:
    """The fleet's secret from ``path`` (checked by the config: readable, >= 16 bytes)."""
    return hashlib.blake2b(Path(path).read_bytes().strip(), digest_size=32).digest()


class Fingerprints:
    """Fingerprints under one key (``None``: a random key for this process)."""

    __slots__ = ("_guess", "_user")

    def __init__(self, key: bytes | None = None) -> None:
        key = key if key is not None else secrets.token_bytes(32)
        # Two derived keys: a guess fingerprint never equals a user-name fingerprint.
        self._guess = hashlib.blake2b(key, digest_size=32, person=b"ab-guess").digest()
        self._user = hashlib.blake2b(key, digest_size=32, person=b"ab-user").digest()

    def guess(self, user: str, password: bytes) -> bytes:
        """The fingerprint of ``password`` tried for ``user``."""
        data = user.encode("utf-8", "surrogateescape") + b"\0" + password
        return hashlib.blake2b(data, key=self._guess, digest_size=GUESS_SIZE).digest()

    def user(self, user: str) -> str:
        """The fingerprint of a user name (hex): how Redis keys name an account."""
        data = user.encode("utf-8", "surrogateescape")
        return hashlib.blake2b(data, key=self._user, digest_size=USER_SIZE).hexdigest()
