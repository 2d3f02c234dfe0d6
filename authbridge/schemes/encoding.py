"""Dovecot's hex/base64 rules for stored data: suffixes, auto-detection, strict decoding."""

from __future__ import annotations

import base64
import binascii

from authbridge.schemes._core import Encoding, Scheme, SchemeError, StoredPassword

_WHITESPACE = str.maketrans("", "", " \t\r\n")


def to_bytes(text: str) -> bytes:
    """Stored text to bytes; surrogateescape keeps non-UTF-8 bytes of a file intact."""
    return text.encode("utf-8", "surrogateescape")


def to_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def b64decode(scheme: str, text: str) -> bytes:
    """Strict base64 (padding required) that skips whitespace, as Dovecot's decoder does."""
    if " " in text or "\t" in text or "\r" in text or "\n" in text:
        text = text.translate(_WHITESPACE)  # rare; translate costs ten times the test
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SchemeError(f"{scheme}: stored data is not valid base64") from None


def hexdecode(scheme: str, text: str) -> bytes:
    try:
        return binascii.unhexlify(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        raise SchemeError(f"{scheme}: stored data is not valid hex") from None


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode(entry: Scheme, stored: StoredPassword) -> bytes:
    """The raw bytes of ``stored`` for scheme ``entry`` (Dovecot ``password_decode``)."""
    data = stored.data
    encoding = stored.encoding or entry.encoding
    guessed = False
    if stored.encoding is None and entry.raw_len and entry.encoding != "none":
        # Fixed-length digest without an explicit suffix: hex if the length fits, else base64.
        encoding = "hex" if len(to_bytes(data)) == 2 * entry.raw_len else "b64"
        guessed = True
    if encoding == "none":
        raw = to_bytes(data)
    elif encoding == "hex":
        try:
            raw = hexdecode(stored.scheme, data)
        except SchemeError:
            if not guessed:
                raise
            raw = b64decode(stored.scheme, data)
    else:
        raw = b64decode(stored.scheme, data)
    if entry.raw_len and len(raw) != entry.raw_len:
        raise SchemeError(
            f"{stored.scheme}: stored data has length {len(raw)} instead of {entry.raw_len}"
        )
    return raw


def encode(raw: bytes, encoding: Encoding) -> str:
    if encoding == "hex":
        return raw.hex()
    if encoding == "b64":
        return b64encode(raw)
    return to_text(raw)
