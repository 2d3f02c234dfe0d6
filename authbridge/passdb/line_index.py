"""Find a user's line in a store file kept as one ``bytes`` object.

A dict of user -> line costs about 250 bytes per user in Python objects, and building it
from a split of the whole text peaks at several times the file's size: a 100k-user file
took 31 MB to hold and over 60 MB to load. Here the file stays one bytes object and the
index is an open-addressing table of line offsets (4 bytes each, at most half full), so
holding a file costs its size plus about 10 bytes per user, and loading it allocates
nothing per line that outlives the line.

Names are compared as bytes; a lookup encodes the name the way the file was decoded
(UTF-8 with surrogateescape), so the answers are the same as a dict of decoded lines.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator

_NL, _CR, _COLON, _HASH = 10, 13, 58, 35


class LineIndex:
    """User name -> its line; the first line of a name wins, as in Dovecot."""

    def __init__(
        self,
        data: bytes,
        on_duplicate: Callable[[str, int], None] | None = None,
    ) -> None:
        """Index ``data``; ``on_duplicate(user, line_number)`` hears of every repeat."""
        self.data = data
        lines = data.count(b"\n") + 1
        self._mask = (1 << max(4, (2 * lines).bit_length())) - 1
        self._table = array("I", bytes(4 * (self._mask + 1)))  # offset + 1; 0 = empty
        self._count = 0
        find, end_of_data = data.find, len(data)
        pos = 0
        while pos < end_of_data:
            end = find(b"\n", pos)
            if end < 0:
                end = end_of_data
            if end > pos and data[pos] not in (_HASH, _COLON):
                colon = find(b":", pos, end)
                # No colon: the name is the whole line, less a CR ending.
                no_colon_end = end - 1 if data[end - 1] == _CR else end
                name_end = colon if colon >= 0 else no_colon_end
                if not self._insert(data[pos:name_end], pos) and on_duplicate is not None:
                    name = data[pos:name_end].decode("utf-8", "surrogateescape")
                    on_duplicate(name, data.count(b"\n", 0, pos) + 1)
            pos = end + 1

    def __len__(self) -> int:
        return self._count

    def _insert(self, name: bytes, offset: int) -> bool:
        table, mask = self._table, self._mask
        slot = hash(name) & mask
        while True:
            stored = table[slot]
            if stored == 0:
                table[slot] = offset + 1
                self._count += 1
                return True
            if self._named(stored - 1, name):
                return False
            slot = (slot + 1) & mask

    def _named(self, offset: int, name: bytes) -> bool:
        """Whether the line at ``offset`` belongs to ``name`` (and not to a longer one)."""
        data = self.data
        if not data.startswith(name, offset):
            return False
        after = offset + len(name)
        if after == len(data) or data[after] == _NL:
            # The whole line: its name is the line less one CR ending.
            return not name.endswith(b"\r")
        char = data[after]
        if char == _COLON:
            return True
        # "name\r\n": a line without any colon loses its CR, as in the line parser.
        return char == _CR and (after + 1 == len(data) or data[after + 1] == _NL)

    def offset(self, user: str) -> int | None:
        name = user.encode("utf-8", "surrogateescape")
        if b":" in name or b"\n" in name:
            return None  # no line can be named so
        table, mask = self._table, self._mask
        slot = hash(name) & mask
        while True:
            stored = table[slot]
            if stored == 0:
                return None
            if self._named(stored - 1, name):
                return stored - 1
            slot = (slot + 1) & mask

    def line(self, user: str) -> str | None:
        """The whole line of ``user`` (no line ending), or ``None`` when there is none."""
        start = self.offset(user)
        if start is None:
            return None
        end = self.data.find(b"\n", start)
        raw = self.data[start : end if end >= 0 else len(self.data)]
        text = raw.decode("utf-8", "surrogateescape")
        return text[:-1] if text.endswith("\r") else text

    def users(self) -> Iterator[str]:
        """Indexed names in file order (the first line of each)."""
        data, find = self.data, self.data.find
        pos = 0
        while pos < len(data):
            end = find(b"\n", pos)
            if end < 0:
                end = len(data)
            if end > pos and data[pos] not in (_HASH, _COLON):
                line = data[pos:end].decode("utf-8", "surrogateescape")
                if line.endswith("\r"):
                    line = line[:-1]
                user = line.partition(":")[0]
                if self.offset(user) == pos:
                    yield user
            pos = end + 1
