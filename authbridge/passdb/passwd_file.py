"""Dovecot's passwd-file: ``user:password:uid:gid:gecos:home:shell:extra fields``.

The file is kept as bytes with an index of line offsets (see line_index), rebuilt on
reload; a lookup is a hash probe plus parsing that one line. Only the fields that matter on the
authentication path are used: the username, the password and the extra fields (field 8
onwards, space separated).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authbridge.core.usernames import UsernamePolicy
from authbridge.observability.logs import get_stdlib_logger
from authbridge.passdb.app_passwords import AppPasswordSource
from authbridge.passdb.base import (
    FileSignature,
    PassdbEntry,
    StoreFormatError,
    pick_dummy_password,
    read_store_bytes,
)
from authbridge.passdb.line_index import LineIndex
from authbridge.passdb.rewrite import PasswordChange, rewrite_and_reload
from authbridge.passdb.validation import (
    EntryProblem,
    all_lines_usual,
    log_problems,
    name_problem,
    password_problem,
    strict_error,
)
from authbridge.schemes import SchemeError, StoredPassword, apply_compat_suffix, parse_stored

log = get_stdlib_logger(__name__)

#: Parsed entries kept per file version (a user who logs in again is not re-parsed);
#: bounded, so a 100k-user file stays within its memory target: when full, it starts over.
PARSED_ENTRIES = 8192


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


def find_nul(data: bytes, path: str = "<string>") -> None:
    """Refuse a file with a NUL byte in a line that counts (binary data, not a passwd-file).

    Comment lines, and lines starting with a colon, are skipped unread, as before.
    """
    pos = data.find(b"\0")
    while pos >= 0:
        start = data.rfind(b"\n", 0, pos) + 1
        if data[start] not in b"#:":
            lineno = data.count(b"\n", 0, pos) + 1
            raise StoreFormatError(f"{path}:{lineno}: NUL byte in line (not a passwd-file?)")
        end = data.find(b"\n", pos)
        pos = -1 if end < 0 else data.find(b"\0", end)


def index_passwd_file(data: bytes, path: str = "<string>") -> LineIndex:
    """Index each user's line; only what every line needs is done here (comments, CR,
    duplicates, NUL bytes), and each line is fully parsed when its user logs in."""
    find_nul(data, path)

    def duplicate(user: str, lineno: int) -> None:
        log.warning(
            "duplicate user",
            where=f"{path}:{lineno}",
            user=user,
            reason=f"user {user!r} exists more than once; the first entry wins",
        )

    return LineIndex(data, duplicate)


def _rest(line: str) -> str | None:
    """The part after ``user:`` (``None``: no password field at all)."""
    _user, sep, rest = line.partition(":")
    return rest if sep else None


def parse_entry(
    user: str, rest: str | None, default_scheme: str = "CRYPT", path: str = "<string>"
) -> PassdbEntry | None:
    """The entry for one indexed line; ``None`` when Dovecot would drop the user."""
    try:
        return _entry(user, rest, default_scheme)
    except SchemeError as exc:
        # Dovecot drops just this user (e.g. a [56] value that is not 32 hex); the
        # load reported it with its line (validate_passwd_file).
        log.debug("user skipped", store=path, user=user, error=str(exc))
        return None


def validate_passwd_file(
    index: LineIndex,
    path: str = "<string>",
    default_scheme: str = "CRYPT",
    usernames: UsernamePolicy | None = None,
    duplicates: Iterable[int] = (),
    names_only: bool = False,
) -> list[EntryProblem]:
    """Every line of an indexed file checked as a login would meet it (see validation).

    ``duplicates``: the numbers of the lines the index found a name repeated on;
    ``names_only``: a deny list, whose password fields do not matter.
    """
    policy = usernames or UsernamePolicy()
    problems: list[EntryProblem] = []
    data = index.data
    repeated = set(duplicates)
    if not repeated and all_lines_usual(data, policy):
        return problems
    for lineno, _offset, line in _lines(data):
        user = line.partition(":")[0]
        if not user:
            problems.append(EntryProblem(path, lineno, "empty user name: line skipped"))
            continue
        if repeated and lineno in repeated:
            first_line = data.count(b"\n", 0, index.offset(user) or 0) + 1
            repeat = f"user {user!r} exists more than once; line {first_line} wins"
            problems.append(EntryProblem(path, lineno, repeat))
            continue
        reason = name_problem(user, policy)
        if reason is None and not names_only:
            reason = _password_problem(user, _rest(line), default_scheme)
        if reason is not None:
            problems.append(EntryProblem(path, lineno, reason, user))
    return problems


def _password_problem(user: str, rest: str | None, default_scheme: str) -> str | None:
    """The password half of a line checked, without building its entry (load time)."""
    if rest is None:
        return password_problem(user, None)
    value, _sep, fields = rest.partition(":")
    try:
        stored = parse_stored(apply_compat_suffix(value), default_scheme)
    except SchemeError as exc:
        return f"user {user!r} skipped: {exc}"
    nopassword = "nopassword" in fields and _entry(user, rest, default_scheme).has("nopassword")
    return password_problem(user, stored, nopassword)


def _lines(data: bytes) -> Iterator[tuple[int, int, str]]:
    """(line number, offset, text less its CR) of every line a user could be on."""
    pos, lineno, end_of_data = 0, 0, len(data)
    find = data.find
    while pos < end_of_data:
        lineno += 1
        end = find(b"\n", pos)
        if end < 0:
            end = end_of_data
        if end > pos and data[pos] != 35:  # "#": a comment
            line = data[pos:end].decode("utf-8", "surrogateescape")
            yield lineno, pos, line[:-1] if line.endswith("\r") else line
        pos = end + 1


def _entry(user: str, rest: str | None, default_scheme: str) -> PassdbEntry:
    """The entry of one line; SchemeError when Dovecot would drop the user."""
    if rest is None:
        return PassdbEntry(user, None)
    parts = [user, *rest.split(":")]
    password = parse_stored(apply_compat_suffix(parts[1]), default_scheme)
    return PassdbEntry(user, password, _extra_fields(parts))


def locate_password(line: bytes) -> tuple[str, int, int] | None:
    """The user of one line and where its password field is (for a rewrite)."""
    if not line or line[0] == 35:  # "#": a comment
        return None
    colon = line.find(b":")
    if colon <= 0:
        return None  # no user name, or no password field at all
    end = line.find(b":", colon + 1)
    return (
        line[:colon].decode("utf-8", "surrogateescape"),
        colon + 1,
        len(line) if end < 0 else end,
    )


def parse_passwd_file(
    text: str, path: str = "<string>", default_scheme: str = "CRYPT"
) -> dict[str, PassdbEntry]:
    """Parse every line of passwd-file text (reports and tests; the store is lazy)."""
    entries: dict[str, PassdbEntry] = {}
    index = index_passwd_file(text.encode("utf-8", "surrogateescape"), path)
    for user in index.users():
        line = index.line(user)
        entry = parse_entry(user, None if line is None else _rest(line), default_scheme, path)
        if entry is not None:
            entries[user] = entry
    return entries


@dataclass
class PasswdFileStore:
    """A passwd-file held in memory.

    Every load checks every line (:func:`validate_passwd_file`): each problem is logged
    as ``file:line: reason`` and kept in :attr:`problems`; with ``strict`` a file with
    any problem is refused as one that does not parse.
    """

    path: Path
    default_scheme: str = "CRYPT"
    strict: bool = False
    usernames: UsernamePolicy = field(default_factory=UsernamePolicy)
    #: A Dovecot ``deny = yes`` passdb: only the names count, password fields are not
    #: checked (Dovecot's example deny-users file has none).
    names_only: bool = False

    def __post_init__(self) -> None:
        self._index = LineIndex(b"")
        self.loaded_signature: FileSignature | None = None
        #: Entries parsed from this version of the file (``None``: no such user).
        self._parsed: dict[str, PassdbEntry | None] = {}
        #: What the last successful load found wrong, in file order.
        self.problems: list[EntryProblem] = []
        self._invalid: dict[str, EntryProblem] = {}
        #: Called with the store after every successful load (the daemon's metric).
        self.on_loaded: Callable[[PasswdFileStore], None] | None = None
        #: The signature of a version this store is writing itself (see rewrite).
        self.own_write: FileSignature | None = None
        #: The user's app passwords (``None``: the store has none configured).
        self.app_passwords: AppPasswordSource | None = None

    @property
    def name(self) -> str:
        return f"passwd-file:{self.path}"

    @property
    def can_rewrite(self) -> bool:
        """``[rehash]`` may write new hashes here (see rewrite_passwords)."""
        return True

    def rewrite_passwords(self, changes: Sequence[PasswordChange]) -> dict[str, str]:
        """Write new password fields (see passdb.rewrite) and serve the new version.

        Blocking (a lock, a file write, fsyncs, a load): run it in a thread.
        """
        return rewrite_and_reload(
            self.path,
            changes,
            locate_password,
            self._field_password,
            self.load,
            self._own,
            in_service=lambda: self.loaded_signature,
        )

    def _field_password(self, text: str, user: str) -> StoredPassword:
        return parse_stored(apply_compat_suffix(text), self.default_scheme)

    def _own(self, signature: FileSignature | None) -> None:
        self.own_write = signature

    def load(self) -> int:
        """Read and index the file; the old copy stays if this raises."""
        data, signature = read_store_bytes(self.path)
        find_nul(data, str(self.path))
        repeats: list[int] = []  # duplicates are among the problems below
        index = LineIndex(data, lambda _user, lineno: repeats.append(lineno))
        problems = validate_passwd_file(
            index, str(self.path), self.default_scheme, self.usernames, repeats, self.names_only
        )
        log_problems(self.name, problems)
        if problems and self.strict:
            raise strict_error(self.name, problems)
        self._index = index
        self._parsed = {}
        self.problems = problems
        self._invalid = {p.user: p for p in problems if p.user is not None}
        self.loaded_signature = signature
        if self.on_loaded is not None:
            self.on_loaded(self)
        return len(self._index)

    def invalid_entry(self, user: str) -> EntryProblem | None:
        """The load's problem with ``user``'s entry, if it had one."""
        return self._invalid.get(user) if self._invalid else None

    def __len__(self) -> int:
        return len(self._index)

    def get(self, user: str) -> PassdbEntry | None:
        parsed = self._parsed
        try:
            return parsed[user]
        except KeyError:
            pass
        line = self._index.line(user)
        entry = (
            None
            if line is None
            else parse_entry(user, _rest(line), self.default_scheme, str(self.path))
        )
        if line is not None:  # unknown names are not kept: a spray of them evicts nothing
            if len(parsed) >= PARSED_ENTRIES:
                parsed.clear()
            parsed[user] = entry
        return entry

    def entries(self) -> list[PassdbEntry]:
        """Every user, in file order (reports, not the lookup path)."""
        parsed = (self.get(user) for user in self._index.users())
        return [entry for entry in parsed if entry is not None]

    def sample_password(self, scan: int = 200) -> StoredPassword | None:
        """The hash unknown users are checked against (see pick_dummy_password); only
        the first ``scan`` users are looked at, so start-up stays fast."""
        users = itertools.islice(self._index.users(), scan)
        return pick_dummy_password(e for e in map(self.get, users) if e is not None)

    async def lookup(self, user: str, info: object = None) -> PassdbEntry | None:
        return self.get(user)
