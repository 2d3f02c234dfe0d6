"""The compact line index answers exactly as a dict of decoded lines would.

The oracle is the straightforward dict the store used before: decode the file, split
lines, skip comments and lines starting with a colon, strip one CR, first line of a
name wins. Hypothesis throws awkward files at both (CRs in odd places, colons, comments,
duplicates, non-ASCII and invalid UTF-8, names that prefix other names).
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authbridge.passdb.base import StoreFormatError
from authbridge.passdb.line_index import LineIndex
from authbridge.passdb.passwd_file import PasswdFileStore, index_passwd_file
from tests.fuzz.settings import EXAMPLES


def oracle(data: bytes) -> dict[str, str]:
    index: dict[str, str] = {}
    for raw in data.decode("utf-8", "surrogateescape").split("\n"):
        if not raw or raw[0] in "#:":
            continue
        line = raw[:-1] if raw[-1] == "\r" else raw
        index.setdefault(line.partition(":")[0], line)
    return index


PIECES = st.sampled_from(
    [b"a", b"ab", b"b", b":", b"\r", b"#", b" ", b"\xc3\xa9", b"\xff", b"{PLAIN}x", b"="]
)
LINE = st.lists(PIECES, max_size=6).map(b"".join)
FILE = st.lists(LINE, max_size=12).map(b"\n".join)
NAMES = st.lists(PIECES, max_size=4).map(b"".join)


@settings(max_examples=EXAMPLES, deadline=None)
@given(FILE, st.lists(NAMES, max_size=6))
def test_same_answers_as_a_dict(data: bytes, extra_names: list[bytes]) -> None:
    expected = oracle(data)
    index = LineIndex(data)
    assert len(index) == len(expected)
    assert list(index.users()) == list(expected)
    for name in [*expected, *(n.decode("utf-8", "surrogateescape") for n in extra_names)]:
        assert index.line(name) == expected.get(name)


def test_duplicates_are_reported_with_their_line() -> None:
    seen: list[tuple[str, int]] = []
    index = LineIndex(b"u:{PLAIN}one\n# u:x\nv:y\nu:{PLAIN}two\n", lambda u, n: seen.append((u, n)))
    assert index.line("u") == "u:{PLAIN}one"
    assert seen == [("u", 4)]


def test_a_name_never_matches_a_longer_one() -> None:
    index = LineIndex(b"alice2:{PLAIN}x\nalice\r\n")
    assert index.line("alice") == "alice"
    assert index.line("alice2") == "alice2:{PLAIN}x"
    assert index.line("alic") is None


def test_nul_in_a_counted_line_is_refused_with_its_line() -> None:
    with pytest.raises(StoreFormatError, match=r"^users:3: NUL byte"):
        index_passwd_file(b"a:{PLAIN}x\n# \0 in a comment is fine\nb:\0\n", "users")


def test_store_keeps_its_memory_to_about_the_file_size(tmp_path: pytest.TempPathFactory) -> None:
    """The index adds at most 16 bytes a user to the file it holds (the point of it)."""
    path = tmp_path / "users"  # type: ignore[operator]
    path.write_bytes(b"".join(b"user%d:{PLAIN}pw%d::::::\n" % (i, i) for i in range(5000)))
    store = PasswdFileStore(path)
    assert store.load() == 5000
    index = store._index
    assert index.data == path.read_bytes()
    assert index._table.itemsize * len(index._table) <= 16 * 5000
    assert store.get("user4999") is not None and store.get("user5000") is None


def test_duplicate_warning_names_file_and_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        index_passwd_file(b"u:a\nu:b\n", "users")
    assert "users:2: user 'u' exists more than once" in caplog.text
