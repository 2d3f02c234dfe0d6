"""Two ``authbridge serve`` daemons rehashing the same SQL row (SQLite and a real
PostgreSQL): every user logs in on both at once, so both verify the old hash and both
run the update_query. ``%{old}`` makes the later one match no row: each row ends with
exactly one valid ARGON2ID hash, written once, and no login failed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from authbridge.schemes import parse_stored, verify_password
from tests.passdb.test_rehash_two_daemons import login_everywhere, wait_all_attempted
from tests.sql.conftest import QUERY, make_sqlite
from tests.sql.daemon import start_bridge
from tests.sql.pgcluster import PgCluster
from tests.sql.test_rehash_sql import MD5, UPDATE, _pg_password, pg_writable  # noqa: F401
from tests.support import free_tcp_port, runtime_dir

USERS = [f"user{n}@example.org" for n in range(5)]


def _config(store: str, port: int) -> str:
    return (
        f"{store}[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n"
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        '[rehash]\nenabled = true\nscheme = "ARGON2ID"\n'
    )


def _two_daemons(base: Path, store: str, read: Callable[[str], str]) -> dict[str, float]:
    ports = [free_tcp_port(), free_tcp_port()]
    bridges = [start_bridge(base / f"d{n}", _config(store, p)) for n, p in enumerate(ports)]
    try:
        login_everywhere([b.socket_path for b in bridges], USERS)
        totals = wait_all_attempted(ports, 2 * len(USERS))
        login_everywhere([b.socket_path for b in bridges], USERS)  # the new hash serves
    finally:
        for bridge in bridges:
            bridge.stop()
    for user in USERS:
        value = parse_stored(read(user))
        assert value.scheme == "ARGON2ID"
        assert verify_password(value, b"password", user)
    return totals


def _sqlite_password(db: Path, user: str) -> str:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT password FROM mail_users WHERE username = ?", (user,)
        ).fetchall()
    finally:
        conn.close()
    assert len(rows) == 1
    return str(rows[0][0])


def test_two_daemons_rehash_the_same_sqlite_rows(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = runtime_dir(tmp_path_factory, "sql-two")
    db = make_sqlite(base / "users.sqlite", [(user, MD5) for user in USERS])
    store = (
        f'[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "{db}"\n'
        f'password_query = """{QUERY}"""\nupdate_query = """{UPDATE}"""\n'
    )
    totals = _two_daemons(base, store, lambda user: _sqlite_password(db, user))
    assert totals.get("written") == len(USERS)
    assert totals.get("skipped_changed", 0) >= 1  # %{old}: the later update matched no row
    assert totals.get("failed", 0) == 0


def test_two_daemons_rehash_the_same_postgresql_rows(
    pg_writable: PgCluster,  # noqa: F811
    pg_users: Callable[..., None],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    for user in USERS:
        pg_users(user, MD5)
    base = runtime_dir(tmp_path_factory, "pg-two")
    store = (
        f'[[store]]\ntype = "sql"\ndriver = "postgresql"\ndsn = "{pg_writable.dsn()}"\n'
        f'password_query = """{QUERY}"""\nupdate_query = """{UPDATE}"""\n'
    )
    totals = _two_daemons(base, store, lambda user: _pg_password(pg_writable, user))
    assert totals.get("written") == len(USERS)
    assert totals.get("skipped_changed", 0) >= 1
    assert totals.get("failed", 0) == 0
