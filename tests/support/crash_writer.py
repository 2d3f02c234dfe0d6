"""Writers of a store file, run as their own process so that tests can SIGKILL them.

``python -m tests.support.crash_writer WRITER PATH A B`` turns the store file at PATH into
the contents of file A, then B, then A, ... through a real write path, forever. It prints
(one line each, flushed) ``T`` when passdb.rewrite.replace_file starts, ``W SECONDS`` when
it has returned, and ``F SECONDS`` when a whole change is done, so that the test can aim
its kills at the file write itself; the write path is not changed. A writer is a function
``(path, target bytes) -> None`` in :data:`WRITERS` that must leave PATH equal to the
target; a new write path (e.g. the app-password command's) is tested for crash safety by
adding it here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from authbridge.passdb import app_passwords, rewrite
from authbridge.passdb.exim_file import EximFileStore, continues_entry, read_exim_file
from authbridge.passdb.exim_file import locate_password as exim_locate
from authbridge.passdb.passwd_file import PasswdFileStore, parse_passwd_file
from authbridge.passdb.passwd_file import locate_password as passwd_locate
from authbridge.passdb.rewrite import Locate, PasswordChange, _body, _line_end

Writer = Callable[[Path, bytes], None]


def fields(
    data: bytes, locate: Locate, continues: Callable[[bytes], bool] | None
) -> dict[str, str]:
    """Each user's password field text, entry by entry as rewrite reads the file."""
    found: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        end = _line_end(data, pos)
        if continues is not None:
            while end < len(data) and continues(_body(data, end + 1, _line_end(data, end + 1))):
                end = _line_end(data, end + 1)
        entry = _body(data, pos, end)
        located = locate(entry)
        if located is not None and located[1] >= 0:
            found.setdefault(located[0], entry[located[1] : located[2]].decode())
        pos = end + 1
    return found


def _writer(make: Callable[[Path], PasswdFileStore | EximFileStore]) -> Writer:
    """The store's own rehash write: each user whose field differs from the target's gets
    it, verified against what the store serves now."""
    exim = make is EximFileStore
    locate: Locate = exim_locate if exim else passwd_locate
    continues = continues_entry if exim else None
    versions: dict[bytes, dict[str, str]] = {}
    current: list[dict[str, str]] = []

    def write(path: Path, target: bytes) -> None:
        if not current:
            current.append(fields(path.read_bytes(), locate, continues))
        if target not in versions:
            versions[target] = fields(target, locate, continues)
        store = make(path)
        store.load()
        changes = []
        for user, field in versions[target].items():
            if current[-1].get(user) != field:
                entry = store.get(user)
                assert entry is not None and entry.password is not None
                changes.append(PasswordChange(user, entry.password, field))
        store.rewrite_passwords(changes)
        current.append(versions[target])

    return write


def _app_password_writer(path: Path, target: bytes) -> None:
    """``authbridge app-password``'s write path: the two versions differ by the last line
    of the longer one, which ``add`` appends and ``revoke`` removes."""
    current = path.read_bytes()
    if current == target:  # a writer killed after its rename: already there
        return
    if len(target) > len(current):
        line = target[len(current) :].decode().rstrip("\n")
        entry = app_passwords.parse_line(line, "target")
        app_passwords.add(path, entry, line.split(":")[2])
    else:
        user, label = current[len(target) :].decode().split(":")[:2]
        assert app_passwords.revoke(path, user, label)


WRITERS: dict[str, Writer] = {
    "rehash-passwd-file": _writer(PasswdFileStore),
    "rehash-exim-file": _writer(EximFileStore),
    "app-password-file": _app_password_writer,
}
#: How each writer's file is checked after a kill: every entry, or an error.
PARSERS: dict[str, Callable[[str], int]] = {
    "rehash-passwd-file": lambda text: len(parse_passwd_file(text)),
    "rehash-exim-file": lambda text: len(read_exim_file(text)[0]),
    "app-password-file": lambda text: len(app_passwords.parse_file(text.encode())),
}


def _announced(replace: Callable[..., None]) -> Callable[..., None]:
    def replace_file(*args: object, **kwargs: object) -> None:
        print("T", flush=True)
        started = time.perf_counter()
        replace(*args, **kwargs)
        print(f"W {time.perf_counter() - started:.6f}", flush=True)

    return replace_file


def main(argv: list[str]) -> None:
    name, path, first, second = argv
    rewrite.replace_file = _announced(rewrite.replace_file)  # type: ignore[assignment]
    write = WRITERS[name]
    targets = [Path(first).read_bytes(), Path(second).read_bytes()]
    turn = 1  # the file starts as A: the first change is to B
    while True:
        started = time.perf_counter()
        write(Path(path), targets[turn % 2])
        print(f"F {time.perf_counter() - started:.6f}", flush=True)
        turn += 1


if __name__ == "__main__":
    main(sys.argv[1:])
