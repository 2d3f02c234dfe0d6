"""The MD5 block function (RFC 1321 §3.4), exposed so HMAC-MD5 can start from a saved state.

``hashlib`` hides MD5's chaining value, but Dovecot's CRAM-MD5 stored form *is* that value
after one block (protocol.md §8.3), so both making and using it need the bare compression.
"""

from __future__ import annotations

import math
import struct

State = tuple[int, int, int, int]

IV: State = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_MASK = 0xFFFFFFFF
# Per-round left-rotation amounts and additive constants floor(|sin(i + 1)| * 2**32).
_SHIFTS = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
_CONSTANTS = tuple(int(abs(math.sin(i + 1)) * 2**32) & _MASK for i in range(64))


def _rotl(value: int, count: int) -> int:
    return ((value << count) | (value >> (32 - count))) & _MASK


def compress(state: State, block: bytes) -> State:
    """Process one 64-byte block from ``state``, feed-forward included."""
    words = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & d)
            g = i
        elif i < 32:
            f = (d & b) | (~d & c)
            g = (5 * i + 1) % 16
        elif i < 48:
            f = b ^ c ^ d
            g = (3 * i + 5) % 16
        else:
            f = c ^ (b | (~d & _MASK))
            g = (7 * i) % 16
        f = (f + a + _CONSTANTS[i] + words[g]) & _MASK
        a, d, c = d, c, b
        b = (b + _rotl(f, _SHIFTS[i])) & _MASK
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def finish(state: State, data: bytes, already: int = 0) -> bytes:
    """MD5 digest of (``already`` bytes that led to ``state``) + ``data``.

    ``already`` must be a multiple of 64: the bytes before were whole blocks.
    """
    total = already + len(data)
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", total * 8)
    for offset in range(0, len(padded), 64):
        state = compress(state, padded[offset : offset + 64])
    return struct.pack("<4I", *state)


def state_to_bytes(state: State) -> bytes:
    return struct.pack("<4I", *state)


def state_from_bytes(raw: bytes) -> State:
    a, b, c, d = struct.unpack("<4I", raw)
    return (a, b, c, d)
