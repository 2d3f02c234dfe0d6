"""Exim's ``login:hash`` password file, as used with ``crypteq`` and ``lsearch``.

The recipe this project grew from keeps ``login:md5hash`` lines in /etc/exim4/passwd and
checks them with ``${if crypteq{$auth3}{\\{md5\\}...}}``. Those lines are served as-is:

- the key ends at the first ``:`` or whitespace and is matched case-insensitively;
- the value is the first ``:``-separated field after it, surrounding blanks removed;
- a bare value is Exim's ``{md5}``: 32 hex digits (any case) or 24 base64 characters;
- a ``{SCHEME}`` prefix picks any Dovecot scheme (``{md5}`` included);
- ``#`` lines and blank lines are comments; a line starting with blanks continues the
  previous one, as in lsearch.

Every entry is checked at load (see validation): a line with no key is skipped, a user
whose value is no usable hash stays known (a login is a plain failure), and each
problem is logged as ``file:line: reason``; with ``strict`` the file is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authbridge.core.usernames import UsernamePolicy
from authbridge.passdb.app_passwords import AppPasswordSource
from authbridge.passdb.base import (
    FileSignature,
    PassdbEntry,
    pick_dummy_password,
    read_store_file,
)
from authbridge.passdb.rewrite import PasswordChange, rewrite_and_reload
from authbridge.passdb.validation import (
    EntryProblem,
    log_problems,
    name_problem,
    password_problem,
    strict_error,
)
from authbridge.schemes import StoredPassword, parse_stored

_KEY = re.compile(r"([^:\s]+)\s*:?\s*(.*)")
_BARE_MD5 = re.compile(r"[0-9A-Fa-f]{32}|[A-Za-z0-9+/]{22}==")
_KEY_BYTES = re.compile(rb"([^:\s]+)\s*:?\s*")


def continues_entry(line: bytes) -> bool:
    """True for a line that belongs to the entry above it, as the parser reads the file:
    a continuation (it starts with a blank), and the blank and comment lines it skips."""
    return not line or line[0] in b" \t#"


def locate_password(entry: bytes) -> tuple[str, int, int] | None:
    """The (lower-cased) key of one entry and where its value is (for a rewrite).

    ``entry`` is a line with its continuation lines (see :func:`continues_entry`), joined
    by their line endings. The value is found as :func:`read_exim_file` finds it in the
    joined logical line, so it may sit on a continuation line; a value that spans lines
    (only a ``{PLAIN}`` value with a blank could) cannot be replaced in place: the
    entry's key with a negative start. ``None`` for comments, blank lines and an entry
    without a value.
    """
    if not entry or entry[0] in b" \t#\r\n":
        return None
    logical, pieces = _logical(entry)
    match = _KEY_BYTES.match(logical)
    if match is None:
        return None
    user = match.group(1).decode("utf-8", "surrogateescape").lower()
    rest = logical[match.end() :]
    field = rest.split(b":", 1)[0]
    value = field.strip()
    if not value:
        return None
    start = match.end() + len(field) - len(field.lstrip())
    for logical_start, entry_start, length in pieces:
        if logical_start <= start and start + len(value) <= logical_start + length:
            at = entry_start + start - logical_start
            return user, at, at + len(value)
    return user, -1, -1


def _logical(entry: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
    """The entry's lines joined as the parser joins them, and where each piece of that
    logical line is in ``entry``: (logical start, entry start, length)."""
    lines = entry.split(b"\n")
    first = lines[0].rstrip(b"\r")
    logical, pieces = first, [(0, 0, len(first))]
    offset = len(lines[0]) + 1
    for line in lines[1:]:
        body = line.rstrip(b"\r")
        text = body.strip()
        if text and not text.startswith(b"#"):
            logical += b" "
            pieces.append((len(logical), offset + len(body) - len(body.lstrip()), len(text)))
            logical += text
        offset += len(line) + 1
    return logical, pieces


def _password(value: str, user: str) -> tuple[StoredPassword | None, str | None]:
    """The stored password of a value, and why it cannot work (``None``: it can)."""
    value = value.split(":", 1)[0].strip()
    if not value:
        return None, f"user {user!r} has no password"
    if value.startswith("{"):
        stored = parse_stored(value)
        return stored, password_problem(user, stored)
    # Kept as PLAIN-MD5 even when malformed: the user stays known and fails to log in.
    stored = parse_stored("{PLAIN-MD5}" + value)
    if not _BARE_MD5.fullmatch(value):
        return stored, (
            f"user {user!r}: expected an MD5 hash (32 hex digits or 24 base64 characters) "
            "or a {SCHEME}-prefixed value"
        )
    return stored, None


def _field_password(text: str, user: str) -> StoredPassword | None:
    return _password(text, user)[0]


def parse_exim_file(text: str, path: str = "<string>") -> dict[str, PassdbEntry]:
    """The entries of an Exim password file; its problems are logged (see read_exim_file)."""
    entries, problems = read_exim_file(text, path)
    log_problems(f"exim-file:{path}", problems)
    return entries


def read_exim_file(
    text: str, path: str = "<string>", usernames: UsernamePolicy | None = None
) -> tuple[dict[str, PassdbEntry], list[EntryProblem]]:
    """The entries of an Exim password file and every problem found in it."""
    policy = usernames or UsernamePolicy()
    problems: list[EntryProblem] = []
    first_line: dict[str, int] = {}
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
            problems.append(EntryProblem(path, lineno, "not a 'login:hash' line: skipped"))
            continue
        user, value = match.group(1).lower(), match.group(2)
        if user in entries:
            repeat = f"user {user!r} exists more than once; line {first_line[user]} wins"
            problems.append(EntryProblem(path, lineno, repeat))
            continue
        password, reason = _password(value, user)
        reason = name_problem(user, policy) or reason
        if reason is not None:
            problems.append(EntryProblem(path, lineno, reason, user))
        entries[user] = PassdbEntry(user, password)
        first_line[user] = lineno
    return entries, problems


@dataclass
class EximFileStore:
    """An Exim ``login:hash`` file held in memory."""

    path: Path
    strict: bool = False
    usernames: UsernamePolicy = field(default_factory=UsernamePolicy)

    def __post_init__(self) -> None:
        self._entries: dict[str, PassdbEntry] = {}
        self.loaded_signature: FileSignature | None = None
        #: What the last successful load found wrong, in file order.
        self.problems: list[EntryProblem] = []
        self._invalid: dict[str, EntryProblem] = {}
        #: Called with the store after every successful load (the daemon's metric).
        self.on_loaded: Callable[[EximFileStore], None] | None = None
        #: The signature of a version this store is writing itself (see rewrite).
        self.own_write: FileSignature | None = None
        #: The user's app passwords (``None``: the store has none configured).
        self.app_passwords: AppPasswordSource | None = None

    @property
    def name(self) -> str:
        return f"exim-file:{self.path}"

    @property
    def can_rewrite(self) -> bool:
        """``[rehash]`` may write new hashes here (see rewrite_passwords)."""
        return True

    def rewrite_passwords(self, changes: Sequence[PasswordChange]) -> dict[str, str]:
        """Write new password values (see passdb.rewrite) and serve the new version.

        Blocking (a lock, a file write, fsyncs, a load): run it in a thread.
        """
        lowered = [PasswordChange(c.user.lower(), c.verified, c.new) for c in changes]
        results = rewrite_and_reload(
            self.path,
            lowered,
            locate_password,
            _field_password,
            self.load,
            self._own,
            continues=continues_entry,
            in_service=lambda: self.loaded_signature,
        )
        return {c.user: results[c.user.lower()] for c in changes}

    def _own(self, signature: FileSignature | None) -> None:
        self.own_write = signature

    def load(self) -> int:
        """Read and parse the file; the old copy stays if this raises."""
        text, signature = read_store_file(self.path)
        entries, problems = read_exim_file(text, str(self.path), self.usernames)
        log_problems(self.name, problems)
        if problems and self.strict:
            raise strict_error(self.name, problems)
        self._entries = entries
        self.problems = problems
        self._invalid = {p.user: p for p in problems if p.user is not None}
        self.loaded_signature = signature
        if self.on_loaded is not None:
            self.on_loaded(self)
        return len(self._entries)

    def invalid_entry(self, user: str) -> EntryProblem | None:
        """The load's problem with ``user``'s entry, if it had one."""
        return self._invalid.get(user.lower()) if self._invalid else None

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
