"""Property tests of the wire layer: framing, escaping, base64 and integers."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authbridge.core import wire
from tests.fuzz.settings import FUZZ

# Bytes rich in the characters the protocol cares about.
PROTOCOL_BYTES = st.binary(max_size=300) | st.lists(
    st.sampled_from([b"\n", b"\r", b"\t", b"\x01", b"\x00", b"A", b"=", b"\xff", b"\xc3\xa9"]),
    max_size=300,
).map(b"".join)


def _feed_all(chunks: list[bytes], max_length: int) -> list[str] | None:
    buffer = wire.LineBuffer(max_length=max_length)
    lines: list[str] = []
    try:
        for chunk in chunks:
            lines.extend(buffer.feed(chunk))
    except wire.LineTooLong:
        return None
    return lines


@FUZZ
@given(data=PROTOCOL_BYTES, cuts=st.lists(st.integers(0, 300), max_size=10))
def test_line_framing_does_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = _feed_all([data], 40)
    assert _feed_all(chunks, 40) == whole
    if whole is not None:
        for line in whole:
            assert "\n" not in line
            assert len(line.encode(wire.ENCODING, wire.ERRORS)) < 40
        # Lines are exactly the bytes between line feeds, minus one CR before the LF,
        # up to the first NUL (Dovecot reads lines as C strings).
        segments = data.split(b"\n")[:-1]
        expected = [(seg[:-1] if seg.endswith(b"\r") else seg).split(b"\0")[0] for seg in segments]
        assert [x.encode(wire.ENCODING, wire.ERRORS) for x in whole] == expected


@FUZZ
@given(text=st.text(max_size=200))
def test_tab_escaping_round_trips_and_leaves_no_separator(text: str) -> None:
    escaped = wire.tabescape(text)
    for forbidden in "\t\n\r\x00":
        assert forbidden not in escaped
    assert wire.tabunescape(escaped) == text


@FUZZ
@given(fields=st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_joined_escaped_fields_split_back(fields: list[str]) -> None:
    line = wire.join_line(*(wire.tabescape(f) for f in fields))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = line[:-1].decode(wire.ENCODING, wire.ERRORS)
    # A NUL ends its field, as in Dovecot's C strings.
    assert wire.split_fields(text) == [f.partition("\x00")[0] for f in fields]


@FUZZ
@given(text=st.text(max_size=200))
def test_strict_base64_raises_only_value_error(text: str) -> None:
    try:
        decoded = wire.b64decode_strict(text)
    except ValueError:
        return
    cleaned = "".join(text.split())
    canonical = base64.b64encode(decoded).decode()
    # Same length and padding; only the unused low bits of the last data character may
    # differ ("001=" is "000="), which Dovecot's decoder ignores too.
    assert len(canonical) == len(cleaned)
    assert canonical.count("=") == cleaned.count("=")
    assert canonical.rstrip("=")[:-1] == cleaned.rstrip("=")[:-1]
    assert wire.b64decode_strict(canonical) == decoded


def test_unused_low_bits_are_ignored_as_dovecot_does() -> None:
    """Dovecot's base64 decoder (src/lib/base64.c) drops the leftover bits unchecked."""
    assert wire.b64decode_strict("001=") == wire.b64decode_strict("000=") == b"\xd3M"
    assert wire.b64decode_strict("AB==") == wire.b64decode_strict("AA==") == b"\x00"


@FUZZ
@given(data=st.binary(max_size=200))
def test_base64_round_trip(data: bytes) -> None:
    assert wire.b64decode_strict(wire.b64encode(data)) == data


@FUZZ
@given(text=st.text(max_size=15))
def test_parse_uint_is_strict(text: str) -> None:
    value = wire.parse_uint(text)
    if value is not None:
        assert 0 <= value <= 0xFFFFFFFF
        assert text == str(value) or text.lstrip("0") == str(value) or value == 0


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1 ", "4294967296", "١"])
def test_parse_uint_rejects(text: str) -> None:
    assert wire.parse_uint(text) is None
