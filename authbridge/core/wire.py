"""Framing and encoding of the Dovecot auth-client protocol, with no I/O.

Lines are LF-terminated (a CR just before the LF is dropped, as Dovecot does; a NUL ends
the line early, as in Dovecot's C strings), fields are
separated by single TABs, and values that may hold control characters are "tab-escaped"
with 0x01 as the escape byte. Everything here works on ``str`` decoded with
``surrogateescape`` so that arbitrary client bytes survive a round trip unchanged.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from authbridge.errors import ProtocolError

#: Dovecot's AUTH_CLIENT_MAX_LINE_LENGTH: a line plus its LF must fit in this many bytes.
MAX_LINE_LENGTH = 16384

ENCODING = "utf-8"
ERRORS = "surrogateescape"

_ESCAPES = {"\x00": "\x010", "\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES = {"0": "\x00", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


class LineTooLong(ProtocolError):
    """The peer sent MAX_LINE_LENGTH bytes without a line feed."""


def tabescape(value: str) -> str:
    """Escape a value so it can travel inside one TAB-separated field."""
    # Every character that needs escaping is unprintable: the usual value is returned
    # after one C-level scan.
    if value.isprintable() or not any(ch in value for ch in _ESCAPES):
        return value
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def tabunescape(value: str) -> str:
    """Undo :func:`tabescape`; an unknown escape yields the escaped character itself."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch != "\x01":
            out.append(ch)
            continue
        nxt = next(chars, None)
        if nxt is not None:
            out.append(_UNESCAPES.get(nxt, nxt))
    return "".join(out)


def split_fields(line: str) -> list[str]:
    """Split a line on TAB and unescape every field.

    An escaped NUL (``\\x010``) ends its field: Dovecot unescapes into C strings.
    """
    if "\x01" not in line:
        return line.split("\t")  # nothing escaped anywhere: the usual line
    return [tabunescape(part).partition("\x00")[0] for part in line.split("\t")]


def join_line(*fields: str) -> bytes:
    """Join already-escaped fields into one wire line, LF included."""
    return ("\t".join(fields) + "\n").encode(ENCODING, ERRORS)


def keyvalue(key: str, value: str | None) -> str:
    """Render an extra field: ``key=value`` with the value escaped, or a bare ``key``."""
    return key if value is None else f"{key}={tabescape(value)}"


class InvalidBase64(ProtocolError, ValueError):
    """Client data that is not base64 as Dovecot reads it."""


def b64decode_strict(text: str) -> bytes:
    """Decode base64 the way Dovecot does for auth data: padding required, no junk.

    Raises :class:`InvalidBase64` for anything that is not valid base64.
    """
    cleaned = "".join(text.split())
    data_chars = len(cleaned.rstrip("="))
    if len(cleaned) - data_chars > -data_chars % 4:
        # "=" beyond what completes the last group ("AAAA="): Python's strict mode lets
        # it pass, Dovecot does not. Unused low bits ("AB==") pass in both.
        raise InvalidBase64("invalid base64")
    try:
        return base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidBase64("invalid base64") from exc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_uint(text: str) -> int | None:
    """Parse a decimal unsigned 32-bit integer strictly (digits only), else ``None``."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= 0xFFFFFFFF else None


@dataclass
class LineBuffer:
    """Accumulates received bytes and hands out complete lines.

    Mirrors Dovecot's bounded input buffer: once MAX_LINE_LENGTH bytes are waiting
    without a line feed, the connection is beyond repair and :class:`LineTooLong` is raised.
    """

    max_length: int = MAX_LINE_LENGTH
    _pending: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes | bytearray) -> list[str]:
        self._pending += data
        lines: list[str] = []
        start = 0
        pending = self._pending
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            if end - start >= self.max_length:
                raise LineTooLong
            raw = bytes(pending[start:end])
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            nul = raw.find(b"\x00")
            if nul >= 0:
                # Dovecot reads each line as a C string: a NUL ends it, and the bytes
                # after it (up to the LF) are never looked at.
                raw = raw[:nul]
            lines.append(raw.decode(ENCODING, ERRORS))
            start = end + 1
        if start:
            del pending[:start]
        if len(pending) >= self.max_length:
            raise LineTooLong
        return lines

    @property
    def buffered(self) -> int:
        return len(self._pending)
