"""SCRAM-SHA-1 / SCRAM-SHA-256 stored keys (RFC 5802): ``<iter>,<salt>,<StoredKey>,<ServerKey>``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from authbridge.schemes._core import GenerateFn, SchemeError, VerifyFn
from authbridge.schemes.encoding import b64decode

MIN_ITERATIONS = 4096
MAX_ITERATIONS = 2**31 - 1
SALT_LEN = 16
HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


@dataclass(frozen=True, slots=True)
class Keys:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def derive(algorithm: str, password: bytes, salt: bytes, iterations: int) -> Keys:
    salted = hashlib.pbkdf2_hmac(algorithm, password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", algorithm).digest()
    server_key = hmac.new(salted, b"Server Key", algorithm).digest()
    return Keys(iterations, salt, hashlib.new(algorithm, client_key).digest(), server_key)


def parse(scheme: str, raw: bytes) -> Keys:
    algorithm = HASHES[scheme]
    size = hashlib.new(algorithm).digest_size
    fields = raw.split(b",")
    if len(fields) != 4:
        raise SchemeError(f"{scheme}: stored data does not have four comma-separated fields")
    if not fields[0].isdigit() or not MIN_ITERATIONS <= int(fields[0]) <= MAX_ITERATIONS:
        raise SchemeError(f"{scheme}: stored iteration count is invalid")
    try:
        texts = [field.decode("ascii") for field in fields[1:]]
    except UnicodeDecodeError:
        raise SchemeError(f"{scheme}: stored data is not ASCII") from None
    salt, stored_key, server_key = (b64decode(scheme, text) for text in texts)
    if len(stored_key) != size or len(server_key) != size:
        raise SchemeError(f"{scheme}: stored keys do not have the digest length")
    return Keys(int(fields[0]), salt, stored_key, server_key)


def encode(keys: Keys) -> bytes:
    parts = [str(keys.iterations).encode("ascii")] + [
        base64.b64encode(value) for value in (keys.salt, keys.stored_key, keys.server_key)
    ]
    return b",".join(parts)


def new_keys(scheme: str, password: bytes) -> Keys:
    """Keys with a fresh random salt, as Dovecot derives them from a plaintext per lookup."""
    return derive(HASHES[scheme], password, secrets.token_bytes(SALT_LEN), MIN_ITERATIONS)


def scheme_functions(scheme: str) -> tuple[VerifyFn, GenerateFn]:
    algorithm = HASHES[scheme]

    def verify(raw: bytes, password: bytes, user: str) -> bool:
        keys = parse(scheme, raw)
        computed = derive(algorithm, password, keys.salt, keys.iterations)
        return hmac.compare_digest(computed.stored_key, keys.stored_key)

    def generate(password: bytes, user: str, rounds: int | None) -> bytes:
        # doveadm pw ignores -r for SCRAM and always writes 4096 iterations.
        return encode(new_keys(scheme, password))

    return verify, generate
