"""App passwords of a file store: a companion file beside the passwd-file.

One app password per line, comments (``#``) and blank lines allowed::

    # user:label:{SCHEME}hash:services:expires
    alice@example.org:phone:{ARGON2ID}$argon2id$v=19$...:smtp:20270307T044500Z
    alice@example.org:laptop:{ARGON2ID}$argon2id$v=19$...::

``services`` is empty (any service) or a comma-separated list matched against the
request's ``service=``; ``expires`` is empty (never) or a UTC time in ISO 8601 basic
form (``YYYYMMDDTHHMMSSZ``, no colons). A label is unique per user.

Last-used times are not kept in this file: the admin edits it and the daemon's
watcher reloads it on every change, so a write per login would race the admin and
reload the file for nothing. They go to a small state file beside it (``FILE.used``,
``user:label:unix-seconds`` lines), written by the daemon at most once per
``used_interval`` per app password, from a background task; losing it loses nothing
but those times.

Writes (``authbridge app-password``) take the file's lock and replace the file
atomically with :func:`authbridge.passdb.rewrite.edit_file`, which replaces only the
version read (an admin edit landing meanwhile is kept: the change is made again on
it); every other line is kept byte for byte.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from authbridge.passdb.base import (
    FileSignature,
    StoreFormatError,
    StoreUnavailable,
    file_signature,
    read_store_bytes,
)
from authbridge.passdb.rewrite import edit_file, locked, replace_file
from authbridge.schemes import SchemeError, StoredPassword, parse_stored, wellformed

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SERVICE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
#: App passwords one user may have in a store (a lookup reads no more).
MAX_PER_USER = 100


class DuplicateLabel(ValueError):
    """The user already has an app password with this label."""


@dataclass(frozen=True, slots=True)
class AppPassword:
    """One app password: whose, its label, its hash, where and until when it works."""

    user: str
    label: str
    password: StoredPassword = field(repr=False)
    #: Services it works for (empty: any).
    services: tuple[str, ...] = ()
    #: Unix time it stops working at (``None``: never).
    expires: float | None = None
    #: Unix time of its last successful login, as last written (``None``: unknown).
    last_used: float | None = None

    def usable(self, service: str, now: float) -> bool:
        """Whether it may log in to ``service`` (lower case) at ``now``."""
        if self.expires is not None and now >= self.expires:
            return False
        return not self.services or service in self.services


def format_time(when: float) -> str:
    return time.strftime(_TIME_FORMAT, time.gmtime(when))


def parse_time(text: str) -> float:
    """``YYYYMMDDTHHMMSSZ`` (UTC) as Unix time; ValueError otherwise."""
    return float(calendar.timegm(time.strptime(text, _TIME_FORMAT)))


def parse_services(text: str) -> tuple[str, ...]:
    """``smtp,imap`` as a tuple; ValueError naming a bad one."""
    services = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    for service in services:
        if not SERVICE.fullmatch(service):
            raise ValueError(f"{service!r} is not a service name")
    return services


def format_line(entry: AppPassword, value: str) -> str:
    """The file line of ``entry`` whose hash is ``value`` (``{SCHEME}data``)."""
    expires = "" if entry.expires is None else format_time(entry.expires)
    return f"{entry.user}:{entry.label}:{value}:{','.join(entry.services)}:{expires}\n"


def parse_line(line: str, where: str, default_scheme: str = "CRYPT") -> AppPassword:
    """One line; StoreFormatError ``where: reason`` (``where`` is ``file:line``)."""
    parts = line.split(":")
    if len(parts) != 5:
        raise StoreFormatError(
            f"{where}: expected user:label:{{SCHEME}}hash:services:expires "
            f"(5 fields), found {len(parts)}"
        )
    user, label, value, services, expires = parts
    if not user:
        raise StoreFormatError(f"{where}: empty user name")
    if not LABEL.fullmatch(label):
        raise StoreFormatError(
            f"{where}: label {label!r}: letters, digits, '.', '_' and '-', at most 64"
        )
    try:
        stored = parse_stored(value, default_scheme)
    except SchemeError as exc:
        raise StoreFormatError(f"{where}: user {user!r} label {label!r}: {exc}") from None
    problem = wellformed.problem(stored)
    if problem is not None:
        raise StoreFormatError(f"{where}: user {user!r} label {label!r}: {problem}")
    try:
        scope = parse_services(services)
    except ValueError as exc:
        raise StoreFormatError(f"{where}: services: {exc}") from None
    try:
        until = parse_time(expires) if expires else None
    except ValueError:
        raise StoreFormatError(
            f"{where}: expires {expires!r}: expected YYYYMMDDTHHMMSSZ (UTC) or nothing"
        ) from None
    return AppPassword(user, label, stored, scope, until)


def _lines(data: bytes) -> Iterable[tuple[int, int, int, str]]:
    """(line number, start, end including the newline, text without CR/LF) of each line."""
    pos, lineno = 0, 0
    while pos < len(data):
        lineno += 1
        end = data.find(b"\n", pos)
        stop = len(data) if end < 0 else end + 1
        text = data[pos:stop].decode("utf-8", "surrogateescape").rstrip("\r\n")
        yield lineno, pos, stop, text
        pos = stop


def parse_file(
    data: bytes, path: str = "<string>", default_scheme: str = "CRYPT"
) -> dict[str, tuple[AppPassword, ...]]:
    """Every app password of a file by user; StoreFormatError at the first bad line
    (``file:line: reason``), or at a label a user has twice."""
    found: dict[str, list[AppPassword]] = {}
    for lineno, _start, _stop, text in _lines(data):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        entry = parse_line(text, f"{path}:{lineno}", default_scheme)
        mine = found.setdefault(entry.user, [])
        if any(other.label == entry.label for other in mine):
            raise StoreFormatError(
                f"{path}:{lineno}: user {entry.user!r} has label {entry.label!r} twice"
            )
        mine.append(entry)
    return {user: tuple(entries) for user, entries in found.items()}


# ---------------------------------------------------------------------- last used


def used_path(path: Path) -> Path:
    return path.with_name(path.name + ".used")


def read_used(path: Path) -> dict[tuple[str, str], float]:
    """The state file of ``path``'s last-used times (missing or garbled lines: none)."""
    try:
        data = used_path(path).read_bytes()
    except FileNotFoundError:
        return {}
    used: dict[tuple[str, str], float] = {}
    for _lineno, _start, _stop, text in _lines(data):
        parts = text.split(":")
        if len(parts) != 3 or not parts[0]:
            continue
        try:
            used[(parts[0], parts[1])] = float(parts[2])
        except ValueError:
            continue
    return used


def write_used(path: Path, updates: dict[tuple[str, str], float]) -> None:
    """Merge ``updates`` into the state file (latest time wins), atomically, locked."""
    state = used_path(path)
    _ensure(state, 0o600)
    with locked(state):
        merged = read_used(path)
        for key, when in updates.items():
            merged[key] = max(when, merged.get(key, 0.0))
        text = "".join(f"{user}:{label}:{int(when)}\n" for (user, label), when in merged.items())
        replace_file(state, text.encode("utf-8", "surrogateescape"))


def _ensure(path: Path, mode: int) -> None:
    """Create ``path`` empty if it is missing (replace_file keeps an existing file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return
    os.close(fd)


# ---------------------------------------------------------------------- writes


def add(path: Path, entry: AppPassword, value: str, default_scheme: str = "CRYPT") -> None:
    """Append ``entry`` (hash ``value``) to the file, creating it (mode 0640) if missing.

    DuplicateLabel if the user has the label already; StoreFormatError if the file does
    not parse (nothing is written then).
    """
    line = format_line(entry, value)
    parse_line(line.rstrip("\n"), f"{path}:new", default_scheme)  # what is written reads back
    real = Path(os.path.realpath(path))
    _ensure(real, 0o640)
    encoded = line.encode("utf-8", "surrogateescape")

    def append(data: bytes) -> bytes:
        existing = parse_file(data, str(path), default_scheme).get(entry.user, ())
        if any(other.label == entry.label for other in existing):
            raise DuplicateLabel(f"user {entry.user!r} already has an app password {entry.label!r}")
        if data and not data.endswith(b"\n"):
            data += b"\n"
        return data + encoded

    with locked(real):
        edit_file(real, append)


def revoke(path: Path, user: str, label: str) -> bool:
    """Remove ``user``'s app password ``label`` (its whole line); False if there is none.

    Other lines are kept byte for byte. A line that does not parse is left alone (and
    does not stop the revoke).
    """
    real = Path(os.path.realpath(path))
    if not real.exists():
        return False

    def remove(data: bytes) -> bytes | None:
        for _lineno, start, stop, text in _lines(data):
            parts = text.split(":")
            if len(parts) >= 2 and parts[0] == user and parts[1] == label:
                return data[:start] + data[stop:]
        return None

    with locked(real):
        return edit_file(real, remove)


# ---------------------------------------------------------------------- the store's view


class AppPasswordSource(Protocol):
    """Where a store's app passwords come from (:class:`AppPasswordFile`, or the sql
    store's ``SqlAppPasswords``); a store holds one as ``app_passwords`` (or ``None``)."""

    @property
    def name(self) -> str: ...

    async def lookup(self, user: str, info: object = None) -> tuple[AppPassword, ...]: ...

    def used(self, user: str, label: str, now: float) -> None: ...

    def has_pending(self) -> bool: ...


class AppPasswordFile:
    """The app passwords of one file store, held in memory, reloaded by the watcher."""

    def __init__(self, path: Path, default_scheme: str = "CRYPT", interval: float = 3600.0):
        self.path = path
        self.default_scheme = default_scheme
        #: Seconds between two writes of one app password's last-used time.
        self.interval = interval
        self._by_user: dict[str, tuple[AppPassword, ...]] = {}
        self.loaded_signature: FileSignature | None = None
        #: Last-used times not written yet, and those written (by this process).
        self._pending: dict[tuple[str, str], float] = {}
        self._written: dict[tuple[str, str], float] = {}

    @property
    def name(self) -> str:
        return f"app-passwords:{self.path}"

    def exists(self) -> bool:
        """Whether the file is there or was (a missing file is watched once it appears)."""
        return self.loaded_signature is not None or file_signature(self.path) is not None

    def load(self) -> int:
        """Read the file (a missing one: no app passwords); the old copy stays if it
        raises StoreFormatError or StoreUnavailable."""
        if not self.path.exists() and self.loaded_signature is None:
            self._by_user = {}
            return 0
        data, signature = read_store_bytes(self.path)
        self._by_user = parse_file(data, str(self.path), self.default_scheme)
        self.loaded_signature = signature
        return sum(len(entries) for entries in self._by_user.values())

    def is_current(self, signature: FileSignature) -> bool:
        return signature == self.loaded_signature

    def get(self, user: str) -> tuple[AppPassword, ...]:
        return self._by_user.get(user, ())

    async def lookup(self, user: str, info: object = None) -> tuple[AppPassword, ...]:
        return self.get(user)

    def used(self, user: str, label: str, now: float) -> None:
        """A login with this app password (cheap: written later by :meth:`flush`)."""
        key = (user, label)
        written = self._written.get(key)
        if written is None or now - written >= self.interval:
            self._pending[key] = now

    def has_pending(self) -> bool:
        return bool(self._pending)

    def flush(self) -> int:
        """Write the pending last-used times (blocking: run it in a thread)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        # Counted as written even if the write fails: tried again an interval later, not
        # every round (a read-only directory would log a warning every half minute).
        self._written.update(pending)
        write_used(self.path, pending)
        return len(pending)


def entries_with_use(source: AppPasswordFile, user: str) -> tuple[AppPassword, ...]:
    """``user``'s app passwords with their last-used times from the state file."""
    used = read_used(source.path)
    return tuple(
        AppPassword(e.user, e.label, e.password, e.services, e.expires, used.get((user, e.label)))
        for e in source.get(user)
    )


__all__ = [
    "MAX_PER_USER",
    "AppPassword",
    "AppPasswordFile",
    "AppPasswordSource",
    "DuplicateLabel",
    "StoreUnavailable",
    "add",
    "entries_with_use",
    "parse_file",
    "parse_line",
    "revoke",
]
