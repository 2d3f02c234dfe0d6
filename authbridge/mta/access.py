"""Can a given system user read a file, or connect to a socket?

The classic traps: "Exim cannot read its TLS key", "Exim cannot reach the auth socket".

Exim drops to its own user before it loads the TLS key, so a ``root:root 0600`` key
makes every STARTTLS fail at run time while ``exim -bV`` is happy. We answer from the
file's and its directories' modes instead of switching users, so it works without
privileges and never opens the key.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AccessReport:
    readable: bool
    reason: str
    world_readable: bool = False
    missing: bool = False
    blocking_directory: Path | None = None


def _can(
    st: os.stat_result, uid: int, gids: set[int], owner_bit: int, group_bit: int, other_bit: int
) -> bool:
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & owner_bit)
    if st.st_gid in gids:
        return bool(st.st_mode & group_bit)
    return bool(st.st_mode & other_bit)


def readable_by(path: str | Path, user: str) -> AccessReport | None:
    """Whether ``user`` can open ``path`` for reading; None if the user does not exist."""
    return _check(path, user, write=False)


def connectable_by(path: str | Path, user: str) -> AccessReport | None:
    """Whether ``user`` may connect to the UNIX socket ``path`` (needs write permission)."""
    return _check(path, user, write=True)


def _check(path: str | Path, user: str, *, write: bool) -> AccessReport | None:
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return None
    uid = account.pw_uid
    gids = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    target = Path(path)
    try:
        st = target.stat()
    except FileNotFoundError:
        return AccessReport(False, f"{target} does not exist", missing=True)
    except OSError as exc:
        return AccessReport(False, f"{target}: {exc.strerror}")
    for directory in reversed(target.resolve().parents):
        try:
            dst = directory.stat()
        except OSError as exc:
            return AccessReport(False, f"{directory}: {exc.strerror}")
        if not _can(dst, uid, gids, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return AccessReport(
                False, f"{user} cannot enter directory {directory}", blocking_directory=directory
            )
    world = bool(st.st_mode & stat.S_IROTH)
    if write:
        bits = (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH)
    else:
        bits = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    if not _can(st, uid, gids, *bits):
        kind = "write" if write else "read"
        return AccessReport(False, f"{user} has no {kind} permission on {target}", world)
    return AccessReport(True, "ok", world)
