"""Exim's ``login:hash`` password file, as used with ``crypteq`` and ``lsearch``.

The recipe this project grew from keeps ``login:md5hash`` lines in /etc/exim4/passwd and
checks them with ``${if crypteq{$auth3}{\\{md5\\}...}}``. Those lines are served as-is:

- the key ends at the first ``:`` or whitespace and is matched case-insensitively;
- the value is the first ``:``-separated field after it, surrounding blanks removed;
- a bare value is Exim's ``{md5}``: 32 hex digits (any case) or 24 base64 characters;
- a ``{SCHEME}`` prefix picks any Dovecot scheme (``{md5}`` included);
- ``#`` lines and blank lines are comments; a line starting with blanks continues the
  previous one, as in lsearch.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from authbridge.passdb.base import (
    FileSignature,
    PassdbEntry,
    StoreFormatError,
    pick_dummy_password,
    read_store_file,
)
from authbridge.schemes import StoredPassword, parse_stored

log = logging.getLogger(__name__)

_KEY = re.compile(r"([^:\s]+)\s*:?\s*(.*)")
_BARE_MD5 = re.compile(r"[0-9A-Fa-f]{32}|[A-Za-z0-9+/]{22}==")


def _password(value: str, path: str, lineno: int, user: str) -> StoredPassword:
    value = value.split(":", 1)[0].strip()
    if value.startswith("{"):
        return parse_stored(value)
    if not _BARE_MD5.fullmatch(value):
        raise StoreFormatError(
            f"{path}:{lineno}: user {user!r}: expected an MD5 hash (32 hex digits or 24 "
            "base64 characters) or a {SCHEME}-prefixed value"
        )
    return parse_stored("{PLAIN-MD5}" + value)


def parse_exim_file(text: str, path: str = "<string>") -> dict[str, PassdbEntry]:
    logical: list[tuple[int, str]] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and logical:
            start, previous = logical[-1]
            logical[-1] = (start, previous + " " + line.strip())
            continue
        logical.append((lineno, line))
    entries: dict[str, PassdbEntry] = {}
    for lineno, line in logical:
        match = _KEY.fullmatch(line)
        if match is None:
            raise StoreFormatError(f"{path}:{lineno}: not a 'login:hash' line")
        user, value = match.group(1).lower(), match.group(2)
        if user in entries:
            log.warning(
                "%s:%d: user %r exists more than once; the first entry wins", path, lineno, user
            )
            continue
        entries[user] = PassdbEntry(user, _password(value, path, lineno, user))
    return entries


@dataclass
class EximFileStore:
    """An Exim ``login:hash`` file held in memory."""

    path: Path

    def __post_init__(self) -> None:
        self._entries: dict[str, PassdbEntry] = {}
        self.loaded_signature: FileSignature | None = None

    @property
    def name(self) -> str:
        return f"exim-file:{self.path}"

    def load(self) -> int:
        """Read and parse the file; the old copy stays if this raises."""
        text, signature = read_store_file(self.path)
        self._entries = parse_exim_file(text, str(self.path))
        self.loaded_signature = signature
        return len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[PassdbEntry]:
        """Every user, in file order (reports and start-up, not the lookup path)."""
        return list(self._entries.values())

    def sample_password(self) -> StoredPassword | None:
        """The hash unknown users are checked against (see pick_dummy_password)."""
        return pick_dummy_password(self._entries.values())

    def get(self, user: str) -> PassdbEntry | None:
        return self._entries.get(user.lower())

    async def lookup(self, user: str, info: object = None) -> PassdbEntry | None:
        return self.get(user)
