"""Dovecot's passwd-file: ``user:password:uid:gid:gecos:home:shell:extra fields``.

The file is indexed once into a dict of user -> rest of the line (and again on reload);
a lookup is a dict hit plus parsing that one line. Only the fields that matter on the
authentication path are used: the username, the password and the extra fields (field 8
onwards, space separated).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

from authbridge.passdb.base import (
    FileSignature,
    PassdbEntry,
    StoreFormatError,
    pick_dummy_password,
    read_store_file,
)
from authbridge.schemes import StoredPassword, apply_compat_suffix, parse_stored

log = logging.getLogger(__name__)

_MISSING = "\x00missing"  # a value no indexed line can hold (NUL bytes are refused)


def _extra_fields(parts: list[str]) -> tuple[tuple[str, str | None], ...]:
    if len(parts) < 8:
        return ()
    text = ":".join(parts[7:])
    fields: list[tuple[str, str | None]] = []
    for token in text.split(" "):
        if not token:
            continue
        key, sep, value = token.partition("=")
        fields.append((key, value if sep else None))
    return tuple(fields)


def index_passwd_file(text: str, path: str = "<string>") -> dict[str, str | None]:
    """Map each user to the rest of its line (``None``: no password field at all).

    Only what every line needs is done here (comments, CR, duplicates, NUL bytes): a
    100k-user file is indexed in a fraction of a second and kept as compact strings;
    each line is fully parsed when its user logs in.
    """
    index: dict[str, str | None] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if not raw or raw[0] in "#:":
            continue
        line = raw[:-1] if raw[-1] == "\r" else raw
        if "\x00" in line:
            raise StoreFormatError(f"{path}:{lineno}: NUL byte in line (not a passwd-file?)")
        user, sep, rest = line.partition(":")
        if user in index:
            log.warning(
                "%s:%d: user %r exists more than once; the first entry wins", path, lineno, user
            )
            continue
        index[user] = rest if sep else None
    return index


def parse_entry(
    user: str, rest: str | None, default_scheme: str = "CRYPT", path: str = "<string>"
) -> PassdbEntry | None:
    """The entry for one indexed line; ``None`` when Dovecot would drop the user."""
    if rest is None:
        return PassdbEntry(user, None)
    parts = [user, *rest.split(":")]
    try:
        password = parse_stored(apply_compat_suffix(parts[1]), default_scheme)
    except ValueError as exc:
        # Dovecot drops just this user (e.g. a [56] value that is not 32 hex).
        log.error("%s: user %r skipped: %s", path, user, exc)
        return None
    return PassdbEntry(user, password, _extra_fields(parts))


def parse_passwd_file(
    text: str, path: str = "<string>", default_scheme: str = "CRYPT"
) -> dict[str, PassdbEntry]:
    """Parse every line of passwd-file text (reports and tests; the store is lazy)."""
    entries: dict[str, PassdbEntry] = {}
    for user, rest in index_passwd_file(text, path).items():
        entry = parse_entry(user, rest, default_scheme, path)
        if entry is not None:
            entries[user] = entry
    return entries


@dataclass
class PasswdFileStore:
    """A passwd-file held in memory."""

    path: Path
    default_scheme: str = "CRYPT"

    def __post_init__(self) -> None:
        self._index: dict[str, str | None] = {}
        self.loaded_signature: FileSignature | None = None

    @property
    def name(self) -> str:
        return f"passwd-file:{self.path}"

    def load(self) -> int:
        """Read and index the file; the old copy stays if this raises."""
        text, signature = read_store_file(self.path)
        self._index = index_passwd_file(text, str(self.path))
        self.loaded_signature = signature
        return len(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def get(self, user: str) -> PassdbEntry | None:
        rest = self._index.get(user, _MISSING)
        if rest is _MISSING:
            return None
        return parse_entry(user, rest, self.default_scheme, str(self.path))

    def entries(self) -> list[PassdbEntry]:
        """Every user, in file order (reports, not the lookup path)."""
        parsed = (self.get(user) for user in self._index)
        return [entry for entry in parsed if entry is not None]

    def sample_password(self, scan: int = 200) -> StoredPassword | None:
        """The hash unknown users are checked against (see pick_dummy_password); only
        the first ``scan`` users are looked at, so start-up stays fast."""
        users = itertools.islice(self._index, scan)
        return pick_dummy_password(e for e in map(self.get, users) if e is not None)

    async def lookup(self, user: str, info: object = None) -> PassdbEntry | None:
        return self.get(user)
