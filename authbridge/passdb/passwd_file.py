"""Dovecot's passwd-file: ``user:password:uid:gid:gecos:home:shell:extra fields``.

The file is parsed once into a dict (and again on reload); lookups are dict hits.
Only the fields that matter on the authentication path are kept: the username, the
password and the extra fields (field 8 onwards, space separated).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from authbridge.passdb.base import (
    PassdbEntry,
    StoreFormatError,
    StoreUnavailable,
    pick_dummy_password,
)
from authbridge.schemes import StoredPassword, apply_compat_suffix, parse_stored

log = logging.getLogger(__name__)


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


def parse_passwd_file(
    text: str, path: str = "<string>", default_scheme: str = "CRYPT"
) -> dict[str, PassdbEntry]:
    """Parse passwd-file text; raises StoreFormatError naming ``path`` and the line."""
    entries: dict[str, PassdbEntry] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line or line[0] in "#:":
            continue
        if "\x00" in line:
            raise StoreFormatError(f"{path}:{lineno}: NUL byte in line (not a passwd-file?)")
        parts = line.split(":")
        user = parts[0]
        password: StoredPassword | None = None
        if len(parts) > 1:
            try:
                password = parse_stored(apply_compat_suffix(parts[1]), default_scheme)
            except ValueError as exc:
                # Dovecot drops just this user (e.g. a [56] value that is not 32 hex).
                log.error("%s:%d: user %r skipped: %s", path, lineno, user, exc)
                continue
        if user in entries:
            log.warning(
                "%s:%d: user %r exists more than once; the first entry wins", path, lineno, user
            )
            continue
        entries[user] = PassdbEntry(user, password, _extra_fields(parts))
    return entries


@dataclass
class PasswdFileStore:
    """A passwd-file held in memory."""

    path: Path
    default_scheme: str = "CRYPT"

    def __post_init__(self) -> None:
        self._entries: dict[str, PassdbEntry] = {}

    @property
    def name(self) -> str:
        return f"passwd-file:{self.path}"

    def load(self) -> int:
        """Read and parse the file; the old copy stays if this raises."""
        try:
            text = self.path.read_bytes().decode("utf-8", "surrogateescape")
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {self.path}: {exc.strerror}") from None
        entries = parse_passwd_file(text, str(self.path), self.default_scheme)
        self._entries = entries
        return len(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[PassdbEntry]:
        """Every user, in file order (reports and start-up, not the lookup path)."""
        return list(self._entries.values())

    def sample_password(self) -> StoredPassword | None:
        """The hash unknown users are checked against (see pick_dummy_password)."""
        return pick_dummy_password(self._entries.values())

    async def lookup(self, user: str) -> PassdbEntry | None:
        return self._entries.get(user)
