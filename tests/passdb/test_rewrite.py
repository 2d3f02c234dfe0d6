"""passdb.rewrite through the real file stores: one field changed, every other byte kept.

The file is rewritten only where the user's entry still holds the value the login
verified; mode, owner and group survive; the store serves the new version at once and
its watcher does not take the store's own write for an outside change.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from authbridge.passdb.exim_file import EximFileStore
from authbridge.passdb.passwd_file import PasswdFileStore
from authbridge.passdb.rewrite import CHANGED, WRITTEN, PasswordChange, lock_path, locked
from authbridge.passdb.watch import StoreWatcher, watched_files
from authbridge.schemes import generate, parse_stored, verify_password
from tests.support import missing_peer

MD5_PASSWORD = "5f4dcc3b5aa765d61d8327deb882cf99"  # MD5("password"), Exim's bare {md5}


def _passwd_store(path: Path, data: bytes) -> PasswdFileStore:
    path.write_bytes(data)
    store = PasswdFileStore(path)
    store.load()
    return store


def _change(store: PasswdFileStore | EximFileStore, user: str, password: bytes) -> PasswordChange:
    entry = store.get(user)
    assert entry is not None and entry.password is not None
    return PasswordChange(user, entry.password, generate("ARGON2ID", password, user))


def test_passwd_file_one_field_changes_every_other_byte_kept(tmp_path: Path) -> None:
    md5 = generate("PLAIN-MD5", b"password", "alice")
    before = (
        b"# the users\r\n"
        b"bob:{PLAIN}bobpass::::::\n"
        + f"alice:{md5}:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G\r\n".encode()
        + b"\n"
        b"#alice:{PLAIN}commented-out\n"
        b"carol:{SSHA}abcdefghijklmnopqrstuvwxyz12\xff-not-utf8\n"
        b"no-newline-at-end:{PLAIN}x"
    )
    path = tmp_path / "users"
    store = _passwd_store(path, before)
    change = _change(store, "alice", b"password")

    assert store.rewrite_passwords([change]) == {"alice": WRITTEN}

    after = path.read_bytes()
    assert after == before.replace(md5.encode(), change.new.encode())
    entry = store.get("alice")  # served at once
    assert entry is not None and entry.password is not None
    assert entry.password.scheme == "ARGON2ID"
    assert verify_password(entry.password, b"password", "alice")
    assert entry.field("userdb_quota_rule") == "*:storage=1G"


def test_only_the_first_line_of_a_repeated_user_changes(tmp_path: Path) -> None:
    md5 = generate("PLAIN-MD5", b"pw", "dup")
    before = f"dup:{md5}\ndup:{md5}\n".encode()
    store = _passwd_store(tmp_path / "users", before)
    change = _change(store, "dup", b"pw")
    store.rewrite_passwords([change])
    assert (tmp_path / "users").read_bytes() == f"dup:{change.new}\ndup:{md5}\n".encode()


def test_a_line_changed_meanwhile_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _passwd_store(path, f"alice:{generate('PLAIN-MD5', b'old', 'alice')}\n".encode())
    change = _change(store, "alice", b"old")
    # The admin sets a new password after the login verified the old one.
    edited = f"alice:{generate('SHA512-CRYPT', b'new', 'alice')}\nbob:{{PLAIN}}b\n".encode()
    path.write_bytes(edited)

    assert store.rewrite_passwords([change]) == {"alice": CHANGED}
    assert path.read_bytes() == edited  # not even rewritten


def test_a_user_removed_meanwhile_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _passwd_store(path, f"alice:{generate('PLAIN-MD5', b'pw', 'alice')}\n".encode())
    change = _change(store, "alice", b"pw")
    path.write_bytes(b"bob:{PLAIN}b\n")
    assert store.rewrite_passwords([change]) == {"alice": CHANGED}
    assert path.read_bytes() == b"bob:{PLAIN}b\n"


def test_an_edit_elsewhere_in_the_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "users"
    md5 = generate("PLAIN-MD5", b"pw", "alice")
    store = _passwd_store(path, f"alice:{md5}\n".encode())
    change = _change(store, "alice", b"pw")
    path.write_bytes(f"new:{{PLAIN}}n\nalice:{md5}::::::nologin\n".encode())  # admin edits
    assert store.rewrite_passwords([change]) == {"alice": WRITTEN}
    assert path.read_bytes() == f"new:{{PLAIN}}n\nalice:{change.new}::::::nologin\n".encode()


def test_mode_owner_and_group_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _passwd_store(path, f"alice:{generate('PLAIN-MD5', b'pw', 'alice')}\n".encode())
    path.chmod(0o640)
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        owner = (65534, 65534)  # nobody: the temp file is root's, the result must not be
        os.chown(path, *owner)
    inode = path.stat().st_ino
    store.rewrite_passwords([_change(store, "alice", b"pw")])
    st = path.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, *owner)
    assert st.st_ino != inode  # a new file renamed over the old one, not an in-place write
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_symlinked_store_file_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real-users"
    real.write_text(f"alice:{generate('PLAIN-MD5', b'pw', 'alice')}\n")
    link = tmp_path / "users"
    link.symlink_to(real)
    store = PasswdFileStore(link)
    store.load()
    store.rewrite_passwords([_change(store, "alice", b"pw")])
    assert link.is_symlink()
    assert "{ARGON2ID}" in real.read_text()


def test_exim_file_bare_md5_and_scheme_values(tmp_path: Path) -> None:
    before = (
        "# Exim passwords, as in the crypteq recipe\n"
        f"Alice@Example.org:{MD5_PASSWORD}\n"
        f"bob: {{md5}}{MD5_PASSWORD}  :extra\r\n"
        "  continued words\n"
        f"carol:{MD5_PASSWORD}\n"
    ).encode()
    path = tmp_path / "passwd"
    path.write_bytes(before)
    store = EximFileStore(path)
    store.load()
    alice = _change(store, "alice@example.org", b"password")
    bob = _change(store, "bob", b"password")

    assert store.rewrite_passwords([alice, bob]) == {"alice@example.org": WRITTEN, "bob": WRITTEN}
    expected = before.replace(f"org:{MD5_PASSWORD}".encode(), f"org:{alice.new}".encode()).replace(
        f"{{md5}}{MD5_PASSWORD}".encode(), bob.new.encode()
    )
    assert path.read_bytes() == expected
    for user in ("alice@example.org", "bob"):
        entry = store.get(user)
        assert entry is not None and entry.password is not None
        assert entry.password.scheme == "ARGON2ID"
        assert verify_password(entry.password, b"password", user)
    entry = store.get("carol")
    assert entry is not None and entry.password == parse_stored("{PLAIN-MD5}" + MD5_PASSWORD)


def test_the_lock_is_taken_and_a_held_lock_makes_the_write_fail(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _passwd_store(path, f"alice:{generate('PLAIN-MD5', b'pw', 'alice')}\n".encode())
    change = _change(store, "alice", b"pw")
    with open(lock_path(path), "a+") as other:  # another writer holds it
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(TimeoutError), locked(path, timeout=0.1):
            pass
        with pytest.raises(OSError):
            from authbridge.passdb import rewrite

            saved, rewrite.LOCK_TIMEOUT = rewrite.LOCK_TIMEOUT, 0.1
            try:
                rewrite.rewrite_and_reload(
                    path, [change], lambda line: None, lambda t, u: None, store.load, store._own
                )
            finally:
                rewrite.LOCK_TIMEOUT = saved
    assert "{PLAIN-MD5}" in path.read_text()


def test_the_watcher_takes_the_stores_own_write_quietly(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _passwd_store(path, f"alice:{generate('PLAIN-MD5', b'pw', 'alice')}\n".encode())
    calls: list[object] = []

    class Metrics:
        def reloaded(self, ok: bool) -> None:
            calls.append(("reloaded", ok))

        def store_unavailable(self, store: str, unavailable: bool) -> None:
            calls.append(("unavailable", unavailable))

        def internal_error(self, where: str) -> None:
            calls.append(("internal_error", where))

    watcher = StoreWatcher(Metrics(), lambda: calls.append("cache flushed"))
    loads: list[int] = []
    load = store.load

    def counting_load() -> int:
        loads.append(1)
        return load()

    store.load = counting_load  # type: ignore[method-assign]
    (watched,) = watched_files([store])

    # Mid-write: the new version renamed in, not loaded yet. The watcher leaves it alone.
    def before_load() -> int:
        trio.run(watcher.check, watched)
        return counting_load()

    from authbridge.passdb import rewrite

    results = rewrite.rewrite_and_reload(
        path,
        [_change(store, "alice", b"pw")],
        __import__("authbridge.passdb.passwd_file", fromlist=["x"]).locate_password,
        store._field_password,
        before_load,
        store._own,
    )
    assert results == {"alice": WRITTEN}
    trio.run(watcher.check_all, [store])  # after: the loaded version is the file's
    assert calls == []  # no reload logged or counted, no cache flush
    assert len(loads) == 1  # loaded once, by the store itself
    assert store.own_write is None


@contextlib.contextmanager
def read_only_directory(directory: Path) -> Iterator[None]:
    """``directory`` as the daemon's user cannot write it: mode 0555, or for root (whom
    modes do not stop) a read-only bind mount of it."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)], check=False)
    if mounted.returncode != 0:
        missing_peer("cannot bind-mount a directory read-only here")
    try:
        remount = ["mount", "-o", "remount,ro,bind", str(directory)]
        if subprocess.run(remount, check=False).returncode != 0:
            missing_peer("cannot remount a directory read-only here")
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_a_read_only_directory_fails_with_oserror_and_changes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    path = directory / "users"
    store = _passwd_store(path, f"alice:{generate('PLAIN-MD5', b'pw', 'alice')}\n".encode())
    before = path.read_bytes()
    with read_only_directory(directory), pytest.raises(OSError):
        store.rewrite_passwords([_change(store, "alice", b"pw")])
    assert path.read_bytes() == before
    entry = store.get("alice")
    assert entry is not None and entry.password is not None
    assert entry.password.scheme == "PLAIN-MD5"
