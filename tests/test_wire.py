"""Framing, tab-escaping and base64 rules of the auth-client wire format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authbridge.core import wire


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("a\tb", "a\x01tb"),
        ("line\nbreak", "line\x01nbreak"),
        ("cr\r", "cr\x01r"),
        ("soh\x01", "soh\x011"),
        ("nul\x00", "nul\x010"),
    ],
)
def test_tabescape_known_values(raw: str, escaped: str) -> None:
    assert wire.tabescape(raw) == escaped
    assert wire.tabunescape(escaped) == raw


def test_unknown_escape_yields_the_character_and_trailing_escape_is_dropped() -> None:
    assert wire.tabunescape("a\x01xb") == "axb"
    assert wire.tabunescape("end\x01") == "end"


@given(st.text())
def test_tabescape_round_trips_and_never_leaves_separators(value: str) -> None:
    escaped = wire.tabescape(value)
    assert "\t" not in escaped and "\n" not in escaped and "\r" not in escaped
    assert wire.tabunescape(escaped) == value


def test_line_buffer_splits_lines_and_strips_cr() -> None:
    buf = wire.LineBuffer()
    assert buf.feed(b"VERSION\t1\t0\r\nCPI") == ["VERSION\t1\t0"]
    assert buf.feed(b"D\t42\n") == ["CPID\t42"]
    assert buf.buffered == 0


def test_line_buffer_rejects_an_unterminated_line_of_the_limit() -> None:
    buf = wire.LineBuffer()
    buf.feed(b"x" * (wire.MAX_LINE_LENGTH - 1))
    with pytest.raises(wire.LineTooLong):
        buf.feed(b"x")


def test_line_buffer_accepts_the_longest_legal_line() -> None:
    buf = wire.LineBuffer()
    line = b"x" * (wire.MAX_LINE_LENGTH - 1) + b"\n"
    assert buf.feed(line) == ["x" * (wire.MAX_LINE_LENGTH - 1)]


def test_line_buffer_keeps_arbitrary_bytes_through_surrogateescape() -> None:
    buf = wire.LineBuffer()
    (line,) = buf.feed(b"AUTH\t1\tPLAIN\tservice=\xff\n")
    assert line.encode(wire.ENCODING, wire.ERRORS).endswith(b"\xff")


@pytest.mark.parametrize("bad", ["%%%", "AAA", "AA=A", "YQ"])
def test_strict_base64_refuses_invalid_or_unpadded_input(bad: str) -> None:
    with pytest.raises(ValueError):
        wire.b64decode_strict(bad)


def test_strict_base64_decodes_padded_input() -> None:
    assert wire.b64decode_strict("AHVzZXJ4AHNlY3JldA==") == b"\x00userx\x00secret"


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("4294967295", 4294967295)])
def test_parse_uint_accepts_decimal_u32(text: str, value: int) -> None:
    assert wire.parse_uint(text) == value


@pytest.mark.parametrize("text", ["", "-1", "+1", "1a", " 1", "4294967296", "١"])
def test_parse_uint_refuses_everything_else(text: str) -> None:
    assert wire.parse_uint(text) is None
