"""Changing users' password fields in a store file, atomically and without losing edits.

:func:`rewrite_passwords` takes the file's lock (``flock`` on ``FILE.lock`` beside it,
so two authbridge processes never write at once), reads the file as it is *now*, and
replaces the password field of each user whose field still holds exactly the stored
value the login verified; a user whose line changed meanwhile (the admin edited it) or
is gone is left alone. Every other byte of the file is kept: other lines, comments,
CRLF endings, the rest of the user's own line.

The new version is written to a temporary file in the same directory, given the old
file's mode, owner and group, fsynced, renamed over the old one, and the directory is
fsynced: a crash (kill -9, power loss) leaves the old file or the new one, never a torn
one. A writer killed before its rename leaves its temporary file
(``.NAME.PID.XXXX.new``); the next write removes those whose process is gone.

The admin does not take the lock, so an edit can land between the read and the rename.
The rename is an exchange (``renameat2(RENAME_EXCHANGE)``): the version it displaced is
compared with the one read, and if it differs (an append, an editor's rename, any
change) the exchange is undone, the temporary file dropped and the whole rewrite done
again on the new version; the admin's version is never unlinked. Where the exchange is
unsupported the file is compared just before a plain rename (a window of microseconds
instead of none).

Which bytes of a line are a user's password field is the store's business (a
:data:`Locate` function); so is how a field's text reads as a stored password
(:data:`ParseField`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
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

#: Rewrites started again because the file changed under one, before giving up (OSError).
ATTEMPTS = 8
#: Rehash writes remembered in the lock file (see :func:`rehash_chain`).
HISTORY = 32

#: Results of one user's change.
WRITTEN = "written"
CHANGED = "skipped_changed"
#: The user's entry is there but its field cannot be replaced in place (Locate said so).
UNWRITABLE = "skipped_unwritable"

#: (user as the store keys it, start, end) of the password field in one line's bytes
#: (without its line ending), or ``None`` for a line that holds no user; a negative
#: start: the user's entry, whose field cannot be rewritten (:data:`UNWRITABLE`).
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


class ChangedMeanwhile(OSError):
    """The file changed between its read and the rename: nothing was replaced."""


@contextlib.contextmanager
def locked(path: Path, timeout: float | None = None) -> Iterator[int]:
    """Hold the exclusive lock of ``path`` (OSError if it cannot be had in ``timeout``
    seconds, by default :data:`LOCK_TIMEOUT`); yields the lock file's descriptor."""
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
        yield fd
    finally:
        os.close(fd)  # releases the lock


def rewrite_passwords(
    path: Path,
    changes: Sequence[PasswordChange],
    locate: Locate,
    parse_field: ParseField,
    before_rename: Callable[[FileSignature], None] | None = None,
    continues: Callable[[bytes], bool] | None = None,
    on_read: Callable[[FileSignature], None] | None = None,
) -> dict[str, str]:
    """Apply ``changes`` to the file at ``path``; each user's result (WRITTEN, CHANGED,
    UNWRITABLE).

    Call under :func:`locked`. The first entry of a user counts (the one its store
    serves). ``before_rename`` gets the new version's signature just before it replaces
    the old file (the store's watcher then knows it for its own); ``on_read`` the
    signature of the version the changes were applied to. With ``continues``, a line for
    which it is true belongs to the entry above (Exim's continuation lines): ``locate``
    then gets the whole entry, its lines joined by their line endings. OSError: nothing
    was changed (:class:`ChangedMeanwhile` if the file kept changing under it).
    """
    for _attempt in range(ATTEMPTS):
        data, signature = _read(path)
        if on_read is not None:
            on_read(signature)
        results, new = _apply(data, changes, locate, parse_field, continues)
        if new is None:
            return results
        try:
            replace_file(path, new, before_rename, expected=(signature, data))
        except ChangedMeanwhile:
            continue
        return results
    raise ChangedMeanwhile(errno.EAGAIN, "the file kept changing during the rewrite", str(path))


def edit_file(path: Path, edit: Callable[[bytes], bytes | None]) -> bool:
    """Replace the file by ``edit(its bytes)`` (``None``: leave it); whether it was written.

    Call under :func:`locked`. Like :func:`rewrite_passwords`, only the version read is
    replaced: an outside edit that lands between the read and the rename (the admin's
    ``echo >>``, an editor's rename) makes ``edit`` start over on the new version, so
    that edit is kept. ``edit`` may raise to stop (nothing is written then). An admin
    command is not in a hurry: it tries again for up to :data:`LOCK_TIMEOUT` seconds
    (and at least :data:`ATTEMPTS` times). OSError: nothing was changed
    (:class:`ChangedMeanwhile` if the file kept changing).
    """
    deadline = time.monotonic() + LOCK_TIMEOUT
    attempt = 0
    while attempt < ATTEMPTS or time.monotonic() < deadline:
        attempt += 1
        data, signature = _read(path)
        new = edit(data)
        if new is None:
            return False
        try:
            replace_file(path, new, expected=(signature, data))
        except ChangedMeanwhile:
            continue
        return True
    raise ChangedMeanwhile(errno.EAGAIN, "the file kept changing during the edit", str(path))


def _read(path: Path) -> tuple[bytes, FileSignature]:
    """The file's bytes and the signature of exactly that version."""
    for _attempt in range(ATTEMPTS):
        with open(path, "rb") as source:
            before = os.fstat(source.fileno())
            data = source.read()
            after = os.fstat(source.fileno())
        if _signature(before) == _signature(after):
            return data, _signature(after)
    raise ChangedMeanwhile(errno.EAGAIN, "the file kept changing while read", str(path))


def _signature(st: os.stat_result) -> FileSignature:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _apply(
    data: bytes,
    changes: Sequence[PasswordChange],
    locate: Locate,
    parse_field: ParseField,
    continues: Callable[[bytes], bool] | None,
) -> tuple[dict[str, str], bytes | None]:
    """Each user's result, and the new contents (``None``: nothing to write)."""
    wanted = {change.user: change for change in changes}
    results = dict.fromkeys(wanted, CHANGED)
    pieces: list[bytes] = []
    seen: set[str] = set()
    pos, kept = 0, 0
    while pos < len(data) and len(seen) < len(wanted):
        end = _line_end(data, pos)
        if continues is not None:
            while end < len(data) and continues(_body(data, end + 1, _line_end(data, end + 1))):
                end = _line_end(data, end + 1)
        found = locate(_body(data, pos, end))
        if found is not None and found[0] in wanted and found[0] not in seen:
            user, start, stop = found
            seen.add(user)
            if start < 0:
                results[user] = UNWRITABLE
                pos = end + 1
                continue
            change = wanted[user]
            field = data[pos + start : pos + stop].decode("utf-8", "surrogateescape")
            if _same(parse_field, field, user, change.verified):
                pieces += [data[kept : pos + start], change.new.encode()]
                kept = pos + stop
                results[user] = WRITTEN
        pos = end + 1
    if WRITTEN not in results.values():
        return results, None
    pieces.append(data[kept:])
    return results, b"".join(pieces)


def _line_end(data: bytes, pos: int) -> int:
    end = data.find(b"\n", pos)
    return len(data) if end < 0 else end


def _body(data: bytes, pos: int, end: int) -> bytes:
    """``data[pos:end]`` without a final ``\\r``."""
    return data[pos : end - 1 if end > pos and data[end - 1] == 13 else end]


def rewrite_and_reload(
    path: Path,
    changes: Sequence[PasswordChange],
    locate: Locate,
    parse_field: ParseField,
    load: Callable[[], object],
    own_write: Callable[[FileSignature | None], None],
    continues: Callable[[bytes], bool] | None = None,
    in_service: Callable[[], FileSignature | None] | None = None,
) -> dict[str, str]:
    """:func:`rewrite_passwords` under the file's lock, then the store's ``load``.

    ``own_write`` is told the signature of the version being written (and ``None`` once
    it is loaded), so that the store's watcher takes it for the version in service
    instead of an outside change. When the version the rewrite read is not the one
    ``in_service`` (an outside edit the watcher has not taken in yet), the new version
    is left to the watcher, which loads it as the outside change it contains (logged,
    cache emptied). The write is recorded in the lock file (see :func:`rehash_chain`),
    so that other processes serving the file take it in quietly too. A load that fails
    is logged: the new file is written, and the watcher reloads it as it would any
    change. Blocking: run it in a thread.
    """
    real = Path(os.path.realpath(path))  # a symlinked store file stays a symlink
    read: list[FileSignature] = []
    written: list[FileSignature] = []

    def before_rename(signature: FileSignature) -> None:
        written.append(signature)
        if in_service is None or in_service() == read[-1]:
            own_write(signature)

    with locked(real) as lock:
        try:
            results = rewrite_passwords(
                real, changes, locate, parse_field, before_rename, continues, read.append
            )
            wrote = WRITTEN in results.values()  # by the last attempt: written[-1]
            if wrote:
                _record(lock, read[-1], written[-1])
            if wrote and (in_service is None or in_service() == read[-1]):
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


def _record(lock: int, base: FileSignature, new: FileSignature) -> None:
    """Note in the lock file that ``new`` is ``base`` with rehashed passwords only."""
    try:
        old = os.pread(lock, 64 * HISTORY, 0).decode("ascii", "replace").splitlines()
        line = " ".join(str(n) for n in (*base, *new))
        text = "\n".join([*old[-(HISTORY - 1) :], line]) + "\n"
        os.ftruncate(lock, 0)
        os.pwrite(lock, text.encode("ascii"), 0)
    except OSError:
        pass  # only the other processes' quiet reload depends on it


def rehash_chain(path: Path, loaded: FileSignature | None, current: FileSignature) -> bool:
    """True if ``current`` is the version ``loaded`` with only rehashes applied (one or
    more, by any process), as recorded in the lock file: a reload that need not be logged
    nor empty a cache. Reads a small file; called only when the file changed."""
    if loaded is None:
        return False
    try:
        text = lock_path(Path(os.path.realpath(path))).read_bytes().decode("ascii", "replace")
    except OSError:
        return False
    links: dict[FileSignature, FileSignature] = {}
    for line in text.splitlines():
        numbers = line.split()
        if len(numbers) == 6 and all(n.isdigit() for n in numbers):
            values = [int(n) for n in numbers]
            links[(values[0], values[1], values[2])] = (values[3], values[4], values[5])
    step: FileSignature | None = loaded
    for _hop in range(HISTORY):
        step = links.get(step) if step is not None else None
        if step is None:
            return False
        if step == current:
            return True
    return False


def _same(parse_field: ParseField, field: str, user: str, verified: StoredPassword) -> bool:
    try:
        return parse_field(field, user) == verified
    except SchemeError:
        return False


def replace_file(
    path: Path,
    data: bytes,
    before_rename: Callable[[FileSignature], None] | None = None,
    expected: tuple[FileSignature, bytes] | None = None,
) -> None:
    """Put ``data`` in place of ``path``'s contents, atomically, keeping mode and owner.

    With ``expected`` (the signature and bytes of the version ``data`` was made from),
    replace only that version: :class:`ChangedMeanwhile` if the file is another one by
    the time of the rename, and then the file is as it was (see the module's text).
    """
    remove_stale_temporaries(path)
    old = os.stat(path)
    fd, temp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".new", dir=path.parent
    )
    keep = False
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
        if expected is not None and not _is_version(path, *expected):
            raise ChangedMeanwhile(errno.EAGAIN, "changed before the rename", str(path))
        if before_rename is not None:
            before_rename(_signature(new))
        # ``keep``: True while ``temp`` holds an outside version, which is never unlinked.
        if expected is None or not _exchange(temp, path):
            os.replace(temp, path)
        elif not _is_version(Path(temp), *expected):
            keep = True
            _undo_exchange(temp, path, new.st_ino)
            keep = False
            raise ChangedMeanwhile(errno.EAGAIN, "changed during the rename", str(path))
    except BaseException:
        if not keep:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)  # the displaced old version, after an exchange
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _is_version(path: Path, signature: FileSignature, data: bytes) -> bool:
    """True if ``path`` is still the version read (signature and, as mtimes are coarse,
    the bytes too)."""
    try:
        with open(path, "rb") as current:
            if _signature(os.fstat(current.fileno())) != signature:
                return False
            return current.read(len(data) + 1) == data
    except FileNotFoundError:
        return False


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: ctypes.CDLL | None = None


def _exchange(a: str | Path, b: str | Path) -> bool:
    """Swap two names atomically; False where the system cannot (then nothing moved)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    code = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if code == 0:
        return True
    number = ctypes.get_errno()
    if number in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(number, os.strerror(number), str(b))


def _undo_exchange(temp: str, path: Path, ours: int) -> None:
    """Put the outside version the exchange displaced (now at ``temp``) back in place."""
    _exchange(temp, path)
    if os.stat(temp).st_ino != ours:
        # Yet another version came in between the two exchanges: it is the newest, so
        # it stays; the one displaced first goes (as an editor's rename would have done).
        _exchange(temp, path)
        log.warning("store file replaced twice during a rehash write", store=str(path))


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.new")


def remove_stale_temporaries(path: Path) -> int:
    """Remove the temporary files writers of ``path`` left when they were killed (their
    process is gone); how many. Never fails: a leftover is harmless, only untidy."""
    removed = 0
    try:
        names = os.listdir(path.parent)
    except OSError:
        return 0
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is None or match["name"] != path.name or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path.parent / name)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: leave its files alone
    return True
