"""Changing users' password fields in a store file, atomically and without losing edits.

:func:`rewrite_passwords` takes the file's lock (``flock`` on ``FILE.lock`` beside it,
so two authbridge processes never write at once), reads the file as it is *now*, and
replaces the password field of each user whose field still holds exactly the stored
value the login verified; a user whose line changed meanwhile (the admin edited it) or
is gone is left alone. Every other byte of the file is kept: other lines, comments,
CRLF endings, the rest of the user's own line.

The new version is written to a temporary file in the same directory, given the old
file's mode, owner and group, fsynced, renamed over the old one, and the directory is
fsynced: a crash leaves the old file or the new one, never a torn one.

Which bytes of a line are a user's password field is the store's business (a
:data:`Locate` function); so is how a field's text reads as a stored password
(:data:`ParseField`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from authbridge.observability.logs import get_stdlib_logger
from authbridge.passdb.base import FileSignature
from authbridge.schemes import SchemeError, StoredPassword

log = get_stdlib_logger(__name__)

#: Seconds to wait for another writer's lock before giving up (the rehash fails).
LOCK_TIMEOUT = 5.0

#: Results of one user's change.
WRITTEN = "written"
CHANGED = "skipped_changed"

#: (user as the store keys it, start, end) of the password field in one line's bytes
#: (without its line ending), or ``None`` for a line that holds no user.
Locate = Callable[[bytes], "tuple[str, int, int] | None"]
#: The stored password a field's text stands for (raises SchemeError if none).
ParseField = Callable[[str, str], StoredPassword | None]


@dataclass(frozen=True)
class PasswordChange:
    """Replace ``user``'s password field by ``new`` if it still holds ``verified``."""

    user: str
    verified: StoredPassword
    new: str


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def locked(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (OSError if it cannot be had in ``timeout``
    seconds, by default :data:`LOCK_TIMEOUT`)."""
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{lock_path(path)}: held by another writer") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def rewrite_passwords(
    path: Path,
    changes: Sequence[PasswordChange],
    locate: Locate,
    parse_field: ParseField,
    before_rename: Callable[[FileSignature], None] | None = None,
) -> dict[str, str]:
    """Apply ``changes`` to the file at ``path``; each user's result (WRITTEN, CHANGED).

    Call under :func:`locked`. The first line of a user counts (the one its store
    serves). ``before_rename`` gets the new version's signature just before it replaces
    the old file (the store's watcher then knows it for its own). OSError: nothing was
    changed.
    """
    wanted = {change.user: change for change in changes}
    results = dict.fromkeys(wanted, CHANGED)
    data = path.read_bytes()
    pieces: list[bytes] = []
    seen: set[str] = set()
    pos, kept = 0, 0
    while pos < len(data) and len(seen) < len(wanted):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        body_end = end - 1 if end > pos and data[end - 1] == 13 else end  # "\r"
        found = locate(data[pos:body_end])
        if found is not None and found[0] in wanted and found[0] not in seen:
            user, start, stop = found
            seen.add(user)
            change = wanted[user]
            field = data[pos + start : pos + stop].decode("utf-8", "surrogateescape")
            if _same(parse_field, field, user, change.verified):
                pieces += [data[kept : pos + start], change.new.encode()]
                kept = pos + stop
                results[user] = WRITTEN
        pos = end + 1
    if WRITTEN in results.values():
        pieces.append(data[kept:])
        replace_file(path, b"".join(pieces), before_rename)
    return results


def rewrite_and_reload(
    path: Path,
    changes: Sequence[PasswordChange],
    locate: Locate,
    parse_field: ParseField,
    load: Callable[[], object],
    own_write: Callable[[FileSignature | None], None],
) -> dict[str, str]:
    """:func:`rewrite_passwords` under the file's lock, then the store's ``load``.

    ``own_write`` is told the signature of the version being written (and ``None`` once
    it is loaded), so that the store's watcher takes it for the version in service
    instead of an outside change. A load that fails is logged: the new file is written,
    and the watcher reloads it as it would any change. Blocking: run it in a thread.
    """
    real = Path(os.path.realpath(path))  # a symlinked store file stays a symlink
    with locked(real):
        try:
            results = rewrite_passwords(real, changes, locate, parse_field, own_write)
            if WRITTEN in results.values():
                try:
                    load()
                except Exception as exc:
                    log.warning(
                        "store reload after a rehash failed; the watcher retries",
                        store=str(path),
                        error=type(exc).__name__,
                    )
        finally:
            own_write(None)
    return results


def _same(parse_field: ParseField, field: str, user: str, verified: StoredPassword) -> bool:
    try:
        return parse_field(field, user) == verified
    except SchemeError:
        return False


def replace_file(
    path: Path, data: bytes, before_rename: Callable[[FileSignature], None] | None = None
) -> None:
    """Put ``data`` in place of ``path``'s contents, atomically, keeping mode and owner."""
    old = os.stat(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    try:
        with open(fd, "wb", closefd=True) as out:
            out.write(data)
            out.flush()
            own = os.fstat(fd)
            if (own.st_uid, own.st_gid) != (old.st_uid, old.st_gid):
                os.fchown(fd, old.st_uid, old.st_gid)
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            os.fsync(fd)
            new = os.fstat(fd)
        if before_rename is not None:
            before_rename((new.st_mtime_ns, new.st_size, new.st_ino))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
