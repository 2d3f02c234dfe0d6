"""OTP (RFC 2289 S/KEY state) as Dovecot 2.3 stores it: ``<algo> <seq> <seed> <16 hex>``.

Verifying a plaintext password re-derives the hash for the stored sequence number and
seed; the seed is folded to lower case first, as RFC 2289 requires.
"""

from __future__ import annotations

import hmac
import secrets
import struct

from passlib.crypto.digest import lookup_hash

from authbridge.schemes._core import SchemeError

ALGORITHMS = ("md4", "md5", "sha1")
DEFAULT_ALGORITHM = "sha1"
DEFAULT_SEQUENCE = 1024
MAX_SEED_LEN = 16


def _fold(algorithm: str, digest: bytes) -> bytes:
    """Reduce a digest to 64 bits (RFC 2289 appendix A)."""
    if algorithm == "sha1":
        words = struct.unpack(">5I", digest)
        return struct.pack("<2I", words[0] ^ words[2] ^ words[4], words[1] ^ words[3])
    return bytes(a ^ b for a, b in zip(digest[:8], digest[8:], strict=True))


def _hash(algorithm: str, data: bytes) -> bytes:
    return _fold(algorithm, lookup_hash(algorithm).const(data).digest())


def derive(algorithm: str, seed: bytes, password: bytes, sequence: int) -> bytes:
    result = _hash(algorithm, seed.lower() + password)
    for _ in range(sequence):
        result = _hash(algorithm, result)
    return result


def _parse(raw: bytes) -> tuple[str, int, bytes, bytes]:
    fields = raw.split(b" ")
    if len(fields) != 4:
        raise SchemeError("OTP: stored data is not '<algorithm> <sequence> <seed> <hash>'")
    algorithm = fields[0].decode("ascii", "replace")
    if algorithm not in ALGORITHMS:  # lower case only, as Dovecot
        raise SchemeError("OTP: stored algorithm is not md4, md5 or sha1")
    if not fields[1].isdigit():
        raise SchemeError("OTP: stored sequence is not a number")
    seed = fields[2]
    if not 0 < len(seed) <= MAX_SEED_LEN or not (seed.isalnum() and seed.isascii()):
        raise SchemeError("OTP: stored seed is not 1-16 letters or digits")
    try:
        expected = bytes.fromhex(fields[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise SchemeError("OTP: stored hash is not hex") from None
    if len(expected) != 8:
        raise SchemeError("OTP: stored hash is not 64 bits")
    return algorithm, int(fields[1]), seed, expected


def verify(raw: bytes, password: bytes, user: str) -> bool:
    algorithm, sequence, seed, expected = _parse(raw)
    return hmac.compare_digest(derive(algorithm, seed, password, sequence), expected)


def generate(password: bytes, user: str, rounds: int | None) -> bytes:
    seed = secrets.token_hex(MAX_SEED_LEN // 2).encode("ascii")
    value = derive(DEFAULT_ALGORITHM, seed, password, DEFAULT_SEQUENCE)
    return b"%s %d %s %s" % (
        DEFAULT_ALGORITHM.encode(),
        DEFAULT_SEQUENCE,
        seed,
        value.hex().encode(),
    )
