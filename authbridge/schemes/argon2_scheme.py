"""ARGON2I / ARGON2ID in libsodium's PHC string form, through argon2-cffi.

Like libsodium's ``crypto_pwhash_str_verify`` (what Dovecot calls), the variant is taken
from the stored string, so either prefix verifies under either scheme name.
"""

from __future__ import annotations

import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import Type, hash_secret

from authbridge.schemes._core import GenerateFn, SchemeError, VerifyFn

SALT_LEN = 16
HASH_LEN = 32
# Dovecot 2.3's defaults as doveadm pw prints them: (time cost, memory KiB).
DEFAULTS = {"ARGON2I": (4, 32768), "ARGON2ID": (3, 65536)}
# libsodium (what Dovecot uses) refuses to make argon2i hashes with a time cost below 3.
MIN_TIME_COST = {"ARGON2I": 3, "ARGON2ID": 1}
_TYPES = {"ARGON2I": Type.I, "ARGON2ID": Type.ID}
_HASHER = argon2.PasswordHasher()


def verify(scheme: str, raw: bytes, password: bytes) -> bool:
    if not raw.startswith((b"$argon2i$", b"$argon2id$")):
        raise SchemeError(f"{scheme}: stored data is not an argon2i/argon2id hash")
    try:
        return bool(_HASHER.verify(raw, password))
    except VerifyMismatchError:
        return False
    except (InvalidHashError, VerificationError, ValueError):
        raise SchemeError(f"{scheme}: stored data is not a valid argon2 hash") from None


def scheme_functions(scheme: str) -> tuple[VerifyFn, GenerateFn]:
    time_cost, memory = DEFAULTS[scheme]

    def verify_scheme(raw: bytes, password: bytes, user: str) -> bool:
        return verify(scheme, raw, password)

    def generate(password: bytes, user: str, rounds: int | None) -> bytes:
        hashed: bytes = hash_secret(
            password,
            secrets.token_bytes(SALT_LEN),
            time_cost=time_cost if rounds is None else max(rounds, MIN_TIME_COST[scheme]),
            memory_cost=memory,
            parallelism=1,
            hash_len=HASH_LEN,
            type=_TYPES[scheme],
        )
        return hashed

    return verify_scheme, generate
