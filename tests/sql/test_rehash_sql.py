"""Rehash on login for SQL stores: ``update_query`` with bound parameters (``%u``, ``%w``
the new hash, ``%{old}`` the verified one, so a concurrent change wins), on SQLite and a
real PostgreSQL, in-process and through a real ``authbridge serve``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from authbridge.config import StoreConfig
from authbridge.passdb.rewrite import CHANGED, WRITTEN, PasswordChange
from authbridge.passdb.sql import SqlConfigError, SqlStore, open_sql_store
from authbridge.passdb.sql_sqlite import SqliteBackend
from authbridge.schemes import generate, parse_stored, verify_password
from tests.sql.conftest import QUERY, make_sqlite
from tests.sql.daemon import auth, start_bridge
from tests.sql.pgcluster import PgCluster
from tests.support import runtime_dir, wait_for_value

UPDATE = "UPDATE mail_users SET password = %w WHERE username = '%u' AND password = %{old}"
MD5 = "{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99"  # "password"


def _sqlite_password(path: Path, user: str) -> str:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT password FROM mail_users WHERE username = ?", (user,)).fetchone()
    conn.close()
    return str(row[0])


def _change(user: str, verified: str = MD5) -> PasswordChange:
    return PasswordChange(user, parse_stored(verified), generate("ARGON2ID", b"password", user))


async def _rewrite(store: SqlStore, change: PasswordChange) -> dict[str, str]:
    entry = await store.lookup(change.user)  # as the login did
    assert entry is not None and entry.password == change.verified
    return await store.arewrite_passwords([change])


def test_sqlite_update_query_writes_the_new_hash(tmp_path: Path) -> None:
    db = make_sqlite(tmp_path / "users.sqlite", [("alice@example.org", MD5)])
    store = SqlStore(SqliteBackend(str(db)), QUERY, update_query=UPDATE)
    assert store.can_rewrite
    change = _change("alice@example.org")
    assert trio.run(_rewrite, store, change) == {"alice@example.org": WRITTEN}
    assert _sqlite_password(db, "alice@example.org") == change.new

    async def again() -> None:
        entry = await store.lookup("alice@example.org")
        assert entry is not None and entry.password is not None
        assert verify_password(entry.password, b"password", "alice@example.org")

    trio.run(again)


def test_a_concurrent_change_in_the_database_wins(tmp_path: Path) -> None:
    db = make_sqlite(tmp_path / "users.sqlite", [("bob@example.org", MD5)])
    store = SqlStore(SqliteBackend(str(db)), QUERY, update_query=UPDATE)
    change = _change("bob@example.org")

    async def main() -> dict[str, str]:
        await store.lookup("bob@example.org")
        with sqlite3.connect(db) as conn:  # the admin sets a new password meanwhile
            conn.execute(
                "UPDATE mail_users SET password = '{PLAIN}new' WHERE username = 'bob@example.org'"
            )
        conn.close()
        return await store.arewrite_passwords([change])

    assert trio.run(main) == {"bob@example.org": CHANGED}
    assert _sqlite_password(db, "bob@example.org") == "{PLAIN}new"


def test_without_update_query_the_store_is_not_rewritten(tmp_path: Path) -> None:
    db = make_sqlite(tmp_path / "users.sqlite", [("carol@example.org", MD5)])
    store = SqlStore(SqliteBackend(str(db)), QUERY)
    assert not store.can_rewrite


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("UPDATE mail_users SET password = %{nope} WHERE username = %u", "update_query: unknown"),
        ("UPDATE mail_users SET password = '%w@x' WHERE username = %u", "update_query: a %-var"),
    ],
)
def test_a_bad_update_query_is_refused_by_name(tmp_path: Path, query: str, message: str) -> None:
    db = make_sqlite(tmp_path / "users.sqlite", [])
    config = StoreConfig(
        "sql", driver="sqlite", dsn=str(db), password_query=QUERY, update_query=query
    )
    with pytest.raises(SqlConfigError, match=message):
        open_sql_store(config)


def test_the_new_hash_is_no_password_query_variable(tmp_path: Path) -> None:
    db = make_sqlite(tmp_path / "users.sqlite", [])
    config = StoreConfig("sql", driver="sqlite", dsn=str(db), password_query=QUERY + " AND %w")
    with pytest.raises(SqlConfigError, match="password_query: unknown variable"):
        open_sql_store(config)


def _rehash_config(store: str) -> str:
    return (
        f"{store}[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n"
        '[rehash]\nenabled = true\nscheme = "ARGON2ID"\n'
    )


def test_sqlite_user_is_rehashed_by_the_daemon(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = runtime_dir(tmp_path_factory, "sql-rehash")
    db = make_sqlite(base / "users.sqlite", [("dave@example.org", MD5)])
    store = (
        f'[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "{db}"\n'
        f'password_query = """{QUERY}"""\nupdate_query = """{UPDATE}"""\n'
    )
    bridge = start_bridge(base / "bridge", _rehash_config(store))
    try:
        assert auth(bridge, "dave@example.org", "password") == "OK"
        wait_for_value(
            lambda: _sqlite_password(db, "dave@example.org"),
            lambda value: value.startswith("{ARGON2ID}$argon2id$"),
            what="an ARGON2ID hash in the SQLite row",
        )
        assert auth(bridge, "dave@example.org", "password") == "OK"
        assert auth(bridge, "dave@example.org", "wrong") == "FAIL"
    finally:
        bridge.stop()


# ---------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_writable(pg: PgCluster) -> PgCluster:
    """The shared cluster, its authbridge role allowed to change the password column."""
    with pg.admin() as conn:
        conn.execute("GRANT UPDATE (password) ON mail_users TO authbridge")
    return pg


def _pg_password(pg: PgCluster, user: str) -> str:
    with pg.admin() as conn:
        row = conn.execute(
            "SELECT password FROM mail_users WHERE username = %s", (user,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def _pg_store(pg: PgCluster) -> SqlStore:
    config = StoreConfig(
        "sql",
        driver="postgresql",
        dsn=pg.dsn(),
        password_query=QUERY,
        update_query=UPDATE,
        timeout=2.0,
        pool_size=2,
    )
    return open_sql_store(config)


def test_postgresql_update_and_a_concurrent_change(
    pg_writable: PgCluster, pg_users: Callable[..., None]
) -> None:
    pg_users("erin@example.org", MD5)
    pg_users("fred@example.org", MD5)
    store = _pg_store(pg_writable)
    erin, fred = _change("erin@example.org"), _change("fred@example.org")

    async def main() -> tuple[dict[str, str], dict[str, str]]:
        written = await _rewrite(store, erin)
        await store.lookup("fred@example.org")
        with pg_writable.admin() as conn:
            conn.execute(
                "UPDATE mail_users SET password = '{PLAIN}new' WHERE username = 'fred@example.org'"
            )
        changed = await store.arewrite_passwords([fred])
        await store.aclose()
        return written, changed

    written, changed = trio.run(main)
    assert written == {"erin@example.org": WRITTEN}
    assert _pg_password(pg_writable, "erin@example.org") == erin.new
    assert changed == {"fred@example.org": CHANGED}
    assert _pg_password(pg_writable, "fred@example.org") == "{PLAIN}new"


def test_postgresql_user_is_rehashed_by_the_daemon(
    pg_writable: PgCluster, pg_users: Callable[..., None], tmp_path_factory: pytest.TempPathFactory
) -> None:
    pg_users("gina@example.org", MD5)
    base = runtime_dir(tmp_path_factory, "pg-rehash")
    store = (
        f'[[store]]\ntype = "sql"\ndriver = "postgresql"\ndsn = "{pg_writable.dsn()}"\n'
        f'password_query = """{QUERY}"""\nupdate_query = """{UPDATE}"""\n'
    )
    bridge = start_bridge(base, _rehash_config(store))
    try:
        assert auth(bridge, "gina@example.org", "password") == "OK"
        wait_for_value(
            lambda: _pg_password(pg_writable, "gina@example.org"),
            lambda value: value.startswith("{ARGON2ID}$argon2id$"),
            what="an ARGON2ID hash in the PostgreSQL row",
        )
        assert auth(bridge, "gina@example.org", "password") == "OK"
    finally:
        bridge.stop()
