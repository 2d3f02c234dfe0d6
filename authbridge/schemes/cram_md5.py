"""CRAM-MD5 / HMAC-MD5: the 32-byte HMAC-MD5 context Dovecot stores (protocol.md §8.3)."""

from __future__ import annotations

import hashlib
import hmac

from authbridge.schemes import md5_block

CONTEXT_LEN = 32


def context_from_password(password: bytes) -> bytes:
    """Outer then inner MD5 state after the HMAC key block, little-endian words."""
    key = hashlib.md5(password).digest() if len(password) > 64 else password
    key = key.ljust(64, b"\x00")
    inner = md5_block.compress(md5_block.IV, bytes(b ^ 0x36 for b in key))
    outer = md5_block.compress(md5_block.IV, bytes(b ^ 0x5C for b in key))
    return md5_block.state_to_bytes(outer) + md5_block.state_to_bytes(inner)


def digest(context: bytes, challenge: bytes) -> bytes:
    """HMAC-MD5(password, challenge), computed from the stored context alone."""
    if len(context) != CONTEXT_LEN:
        raise ValueError("CRAM-MD5 context must be 32 bytes")
    outer = md5_block.state_from_bytes(context[:16])
    inner = md5_block.state_from_bytes(context[16:])
    inner_digest = md5_block.finish(inner, challenge, already=64)
    return md5_block.finish(outer, inner_digest, already=64)


def verify(raw: bytes, password: bytes, user: str) -> bool:
    return hmac.compare_digest(context_from_password(password), raw)


def generate(password: bytes, user: str, rounds: int | None) -> bytes:
    return context_from_password(password)
