"""StoreWatcher in-process: each state change reported once, a broken version not retried."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from authbridge.config import Config, ConfigError, StoreConfig
from authbridge.passdb.passwd_file import PasswdFileStore
from authbridge.passdb.sql import open_sql_store
from authbridge.passdb.watch import StoreWatcher, watched_files
from tests.sql.conftest import make_sqlite
from tests.support import runtime_dir


class Recorded:
    """What a watcher told the metrics, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def reloaded(self, ok: bool) -> None:
        self.calls.append(("reloaded", ok))

    def store_unavailable(self, store: str, unavailable: bool) -> None:
        self.calls.append(("unavailable", unavailable))

    def internal_error(self, where: str) -> None:
        self.calls.append(("internal_error", where))


def _store(path: Path, text: str = "alice:{PLAIN}a\n") -> PasswdFileStore:
    path.write_text(text)
    store = PasswdFileStore(path)
    store.load()
    return store


async def test_gone_is_reported_once_and_back_once(tmp_path: Path) -> None:
    store = _store(tmp_path / "users")
    metrics, flushed = Recorded(), []
    watcher = StoreWatcher(metrics, lambda: flushed.append(1))
    os.rename(store.path, tmp_path / "away")
    for _ in range(3):
        await watcher.check_all([store])
    assert metrics.calls == [("unavailable", True), ("reloaded", False)]
    assert watcher.unavailable(store.name) == "No such file or directory"
    assert store.get("alice") is not None  # the last good copy
    os.rename(tmp_path / "away", store.path)
    await watcher.check_all([store])
    await watcher.check_all([store])
    assert metrics.calls[2:] == [("unavailable", False)]  # same version: no reload
    assert watcher.unavailable(store.name) is None and not flushed


async def test_a_changed_file_after_an_absence_is_loaded(tmp_path: Path) -> None:
    store = _store(tmp_path / "users")
    metrics, flushed = Recorded(), []
    watcher = StoreWatcher(metrics, lambda: flushed.append(1))
    store.path.unlink()
    await watcher.check_all([store])
    store.path.write_text("bob:{PLAIN}b\n")
    await watcher.check_all([store])
    assert metrics.calls[2:] == [("unavailable", False), ("reloaded", True)]
    assert store.get("bob") is not None and store.get("alice") is None
    assert flushed == [1]


def _unreadable_then_readable(directory: Path) -> list[object]:
    path = directory / "users"
    store = _store(path)
    metrics = Recorded()
    watcher = StoreWatcher(metrics, lambda: None)
    path.chmod(0)
    trio.run(watcher.check_all, [store])
    why = watcher.unavailable(store.name)
    trio.run(watcher.check_all, [store])
    path.chmod(0o644)
    trio.run(watcher.check_all, [store])
    return [why, watcher.unavailable(store.name), metrics.calls]


def test_an_unreadable_file_is_unavailable(tmp_path_factory: pytest.TempPathFactory) -> None:
    """chmod 0 under the daemon, checked by an ordinary user (root reads any mode): as
    root, a forked child drops to nobody first."""
    directory = runtime_dir(tmp_path_factory, "unreadable")
    if os.geteuid() != 0:
        result = _unreadable_then_readable(directory)
    else:
        os.chown(directory, 65534, 65534)
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            status = 1
            try:
                os.close(reader)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                os.write(writer, json.dumps(_unreadable_then_readable(directory)).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        result = json.loads(data)
        result[2] = [tuple(call) for call in result[2]]
    assert result == [
        "Permission denied",
        None,
        [("unavailable", True), ("reloaded", False), ("unavailable", False)],
    ]


async def test_a_broken_version_is_logged_once_and_not_retried(tmp_path: Path) -> None:
    store = _store(tmp_path / "users")
    metrics = Recorded()
    watcher = StoreWatcher(metrics, lambda: None)
    store.path.write_text("alice:{PLAIN}a\nbroken:\x00binary\n")
    for _ in range(3):
        await watcher.check_all([store])
    assert metrics.calls == [("reloaded", False)]
    assert watcher.unavailable(store.name) is None


async def test_a_store_dropped_from_the_config_is_unflagged(tmp_path: Path) -> None:
    store = _store(tmp_path / "users")
    metrics = Recorded()
    watcher = StoreWatcher(metrics, lambda: None)
    store.path.unlink()
    await watcher.check_all([store])
    await watcher.check_all([])
    assert metrics.calls[-1] == ("unavailable", False)


async def test_sqlite_stores_are_watched_and_postgresql_ones_are_not(tmp_path: Path) -> None:
    db = make_sqlite(tmp_path / "u.sqlite", [("alice", "{PLAIN}a")])
    sqlite = open_sql_store(
        StoreConfig("sql", driver="sqlite", dsn=str(db), password_query="SELECT 1 WHERE %u")
    )
    pg = open_sql_store(
        StoreConfig("sql", driver="postgresql", dsn="host=/nonexistent", password_query="SELECT %u")
    )
    try:
        assert [w.path for w in watched_files([sqlite, pg])] == [db]
    finally:
        await sqlite.aclose()
        await pg.aclose()


def test_open_stores_refuses_a_missing_sqlite_file_so_a_reload_is_refused(
    tmp_path: Path,
) -> None:
    from authbridge.commands.serve import open_stores

    db = tmp_path / "gone.sqlite"
    config = Config(
        stores=(StoreConfig("sql", driver="sqlite", dsn=str(db), password_query="SELECT %u"),),
        source="test.toml",
    )
    with pytest.raises(ConfigError, match=r"test\.toml: store\[0\]\.dsn: .*does not exist"):
        open_stores(config)
    assert not db.exists()
