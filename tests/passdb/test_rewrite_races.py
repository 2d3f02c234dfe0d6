"""passdb.rewrite against writers that do not take its lock (the admin) and against its
own crashes: an edit landing between the read and the rename is never lost, a killed
writer's temporary file is removed by the next write, Exim continuation lines are
rewritten where the value is, and another process's rehash is taken in quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from authbridge.passdb import rewrite
from authbridge.passdb.exim_file import EximFileStore
from authbridge.passdb.passwd_file import PasswdFileStore, locate_password
from authbridge.passdb.rewrite import (
    UNWRITABLE,
    WRITTEN,
    ChangedMeanwhile,
    PasswordChange,
    rehash_chain,
    remove_stale_temporaries,
)
from authbridge.passdb.watch import StoreWatcher, watched_files
from authbridge.schemes import generate, verify_password

MD5_PASSWORD = "5f4dcc3b5aa765d61d8327deb882cf99"  # MD5("password")


def _store(path: Path, users: tuple[str, ...] = ("alice", "bob")) -> PasswdFileStore:
    path.write_text("".join(f"{u}:{generate('PLAIN-MD5', b'password', u)}\n" for u in users))
    store = PasswdFileStore(path)
    store.load()
    return store


def _change(store: PasswdFileStore | EximFileStore, user: str) -> PasswordChange:
    entry = store.get(user)
    assert entry is not None and entry.password is not None
    return PasswordChange(user, entry.password, generate("ARGON2ID", b"password", user))


def _append(path: Path) -> None:
    with open(path, "a") as out:
        out.write("new:{PLAIN}x\n")


def _editor(path: Path) -> None:
    """Write a new version beside the file and rename it over (vim, sed -i, install)."""
    temp = path.with_name("users.swp")
    temp.write_text(path.read_text().replace("bob:", "bob-renamed:") + "by-editor:{PLAIN}y\n")
    os.replace(temp, path)


def _touch(path: Path) -> None:
    os.utime(path, ns=(1, 1))


@pytest.mark.parametrize("edit", [_append, _editor, _touch], ids=["append", "editor", "touch"])
@pytest.mark.parametrize("where", ["before the check", "in the rename's window"])
def test_an_edit_during_the_rewrite_is_kept_and_the_rewrite_redone(
    tmp_path: Path, edit: Callable[[Path], None], where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users"
    store = _store(path)
    edits: list[str] = []
    if where == "before the check":
        real_is_version = rewrite._is_version

        def edit_first(p: Path, signature: object, data: bytes) -> bool:
            if not edits and p == path:
                edits.append("done")
                edit(path)
            return real_is_version(p, signature, data)  # type: ignore[arg-type]

        monkeypatch.setattr(rewrite, "_is_version", edit_first)
        hook = None
    else:  # after the last check, just before the exchange: only the exchange can see it

        def hook(_signature: object) -> None:
            if not edits:
                edits.append("done")
                edit(path)

    results = rewrite.rewrite_passwords(
        path, [_change(store, "alice")], locate_password, store._field_password, hook
    )
    assert results == {"alice": WRITTEN}
    text = path.read_text()
    assert text.startswith("alice:{ARGON2ID}")
    if edit is _append:
        assert text.endswith("new:{PLAIN}x\n")
    if edit is _editor:
        assert "bob-renamed:" in text and text.endswith("by-editor:{PLAIN}y\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")] == []


def test_a_file_that_keeps_changing_gives_up_with_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _store(path)

    def hook(_signature: object) -> None:
        _append(path)

    with pytest.raises(ChangedMeanwhile):
        rewrite.rewrite_passwords(
            path, [_change(store, "alice")], locate_password, store._field_password, hook
        )
    text = path.read_text()
    assert "{ARGON2ID}" not in text
    assert text.count("new:{PLAIN}x\n") == rewrite.ATTEMPTS  # every append kept


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _store(path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    stale = tmp_path / f".users.{pid}.abc123.new"
    stale.write_text("half a file")
    alive = tmp_path / f".users.{os.getppid()}.def456.new"  # a live writer's: kept
    alive.write_text("being written")
    other = tmp_path / f".other.{pid}.ghi789.new"  # another file's: kept
    other.write_text("x")
    rewrite.rewrite_passwords(
        path, [_change(store, "alice")], locate_password, store._field_password
    )
    assert not stale.exists()
    assert alive.exists() and other.exists()
    assert remove_stale_temporaries(path) == 0


def test_exim_continuation_lines_are_rewritten_where_the_value_is(tmp_path: Path) -> None:
    path = tmp_path / "exim-passwd"
    before = (
        "# users\n"
        "Anna:\r\n"
        "   # a comment inside the entry\n"
        f"\t{MD5_PASSWORD} : extra\r\n"
        "bert\n"
        "  :\n"
        f"  {{md5}}{MD5_PASSWORD}\n"
        f"carl:{MD5_PASSWORD}\n"
        "  : more data\n"
    )
    path.write_bytes(before.encode())
    store = EximFileStore(path)
    store.load()
    changes = [_change(store, user) for user in ("anna", "bert", "carl")]
    assert store.rewrite_passwords(changes) == dict.fromkeys(("anna", "bert", "carl"), WRITTEN)
    lines = path.read_bytes().decode().split("\n")
    assert lines[:3] == ["# users", "Anna:\r", "   # a comment inside the entry"]
    assert lines[3].startswith("\t{ARGON2ID}$argon2id$") and lines[3].endswith(" : extra\r")
    assert lines[4:6] == ["bert", "  :"]
    assert lines[6].startswith("  {ARGON2ID}$argon2id$")
    assert lines[7].startswith("carl:{ARGON2ID}$argon2id$")
    assert lines[8:] == ["  : more data", ""]
    reread = EximFileStore(path)
    reread.load()
    for user in ("anna", "bert", "carl"):
        entry = reread.get(user)
        assert entry is not None and entry.password is not None
        assert entry.password.scheme == "ARGON2ID"
        assert verify_password(entry.password, b"password", user)


def test_an_exim_value_spanning_lines_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "exim-passwd"
    before = "dora:\n  {PLAIN}two\n  words\n"
    path.write_text(before)
    store = EximFileStore(path)
    store.load()
    assert store.rewrite_passwords([_change(store, "dora")]) == {"dora": UNWRITABLE}
    assert path.read_text() == before


class _Calls:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def reloaded(self, ok: bool) -> None:
        self.calls.append(("reloaded", ok))

    def store_unavailable(self, store: str, unavailable: bool) -> None:
        self.calls.append(("unavailable", unavailable))

    def internal_error(self, where: str) -> None:
        self.calls.append(("internal_error", where))


def test_another_process_rehash_is_taken_in_quietly_an_admin_edit_is_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users"
    writer = _store(path, ("alice", "bob", "carl"))  # another worker, same file
    reader = PasswdFileStore(path)
    reader.load()
    calls = _Calls()
    watcher = StoreWatcher(calls, lambda: calls.calls.append("cache flushed"))
    (watched,) = watched_files([reader])

    # Two rehashes in a row by the other process: one chain from the reader's version.
    writer.rewrite_passwords([_change(writer, "alice")])
    writer.rewrite_passwords([_change(writer, "bob")])
    trio.run(watcher.check, watched)
    assert calls.calls == []
    entry = reader.get("bob")
    assert entry is not None and entry.password is not None
    assert entry.password.scheme == "ARGON2ID"

    # An admin edit, then a rehash on top of it: the admin's edit is a reload.
    _append(path)
    writer.load()  # (the writer's watcher took the edit in)
    writer.rewrite_passwords([_change(writer, "carl")])
    trio.run(watcher.check, watched)
    assert calls.calls == ["cache flushed", ("reloaded", True)]
    assert reader.get("new") is not None


def test_a_rehash_over_an_edit_not_yet_in_service_leaves_the_load_to_the_watcher(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users"
    store = _store(path)
    calls = _Calls()
    watcher = StoreWatcher(calls, lambda: calls.calls.append("cache flushed"))
    _append(path)  # the watcher has not seen it yet
    assert store.rewrite_passwords([_change(store, "alice")]) == {"alice": WRITTEN}
    assert store.get("new") is None  # the store did not absorb the edit silently...
    trio.run(watcher.check_all, [store])
    assert calls.calls == ["cache flushed", ("reloaded", True)]  # ...the watcher logged it
    assert store.get("new") is not None
    entry = store.get("alice")
    assert entry is not None and entry.password is not None
    assert entry.password.scheme == "ARGON2ID"


def test_the_chain_needs_the_version_in_service(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _store(path)
    before = store.loaded_signature
    store.rewrite_passwords([_change(store, "alice")])
    after = store.loaded_signature
    assert before is not None and after is not None
    assert rehash_chain(path, before, after)
    assert not rehash_chain(path, after, before)
    assert not rehash_chain(path, None, after)
    assert not rehash_chain(path, (1, 2, 3), after)
