"""App passwords in SQL stores (the ``app_passwords`` table of deploy/sql/), on SQLite and
a real PostgreSQL: ``authbridge app-password add|list|revoke`` as an admin runs it, the
lookups with bound parameters, last-used written by the update query, and logins
through a real ``authbridge serve``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from authbridge.config import APP_PASSWORD_QUERIES, AppPasswordSettings, StoreConfig
from authbridge.passdb import attach_app_passwords
from authbridge.passdb.sql import open_sql_store
from authbridge.passdb.sql_app_passwords import SqlAppPasswords
from authbridge.schemes import verify_password
from tests.sql.conftest import QUERY, make_sqlite
from tests.sql.daemon import auth, start_bridge
from tests.sql.pgcluster import PgCluster
from tests.support import runtime_dir

ROOT = Path(__file__).resolve().parents[2]
USER = "alice@example.org"


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "app-password", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def store_config(driver: str, dsn: str) -> str:
    return (
        f'[[store]]\ntype = "sql"\ndriver = "{driver}"\ndsn = "{dsn}"\n'
        f'password_query = """{QUERY}"""\napp_passwords = true\n'
        '[app_passwords]\nscheme = "SSHA512"\n'
    )


def source_of(config: StoreConfig) -> SqlAppPasswords:
    store = open_sql_store(config)
    attach_app_passwords(store, config, AppPasswordSettings())
    assert isinstance(store.app_passwords, SqlAppPasswords)
    return store.app_passwords


def exercise_cli(config: Path, rows: Callable[[], list[tuple[object, ...]]]) -> str:
    """add (twice, the second refused), list, revoke: the common part of both engines;
    returns the password of the one left ("phone", smtp only)."""
    added = run_cli(config, "add", USER, "--label", "phone", "--service", "smtp")
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip()
    again = run_cli(config, "add", USER, "--label", "phone")
    assert again.returncode == 2 and "already has an app password 'phone'" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    laptop = run_cli(config, "add", USER, "--label", "laptop", "--expires", "30d")
    assert laptop.returncode == 0, laptop.stderr
    listed = run_cli(config, "list", USER)
    assert listed.returncode == 0, listed.stderr
    assert "phone" in listed.stdout and "laptop" in listed.stdout and "smtp" in listed.stdout
    assert "{SSHA512}" not in listed.stdout and password not in listed.stdout
    stored = {str(row[0]): row for row in rows()}
    assert set(stored) == {"phone", "laptop"}
    assert str(stored["phone"][1]).startswith("{SSHA512}")  # only the hash
    assert stored["phone"][2] == "smtp" and stored["laptop"][2] is None
    assert stored["phone"][3] is None and stored["laptop"][3] is not None
    revoked = run_cli(config, "revoke", USER, "laptop")
    assert revoked.returncode == 0, revoked.stderr
    assert run_cli(config, "revoke", USER, "laptop").returncode == 2
    assert {str(row[0]) for row in rows()} == {"phone"}
    return password


async def lookup_and_touch(source: SqlAppPasswords, password: str) -> float | None:
    found = await source.lookup(USER)
    assert [e.label for e in found] == ["phone"]
    assert found[0].services == ("smtp",) and found[0].expires is None
    assert verify_password(found[0].password, password.encode(), USER)
    assert await source.lookup("nobody@example.org") == ()
    source.used(USER, "phone", 1_800_000_000.0)
    assert await source.aflush() == 1
    source.used(USER, "phone", 1_800_000_100.0)  # within the interval: not written
    assert not source.has_pending()
    return (await source.lookup(USER))[0].last_used


# ---------------------------------------------------------------------- SQLite


def test_sqlite_cli_lookup_last_used_and_daemon(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = runtime_dir(tmp_path_factory, "sqlite-apppw")
    db = make_sqlite(base / "users.sqlite", [(USER, "{PLAIN}main-pass")])
    config = base / "cli.toml"
    config.write_text(store_config("sqlite", str(db)))

    def rows() -> list[tuple[object, ...]]:
        with sqlite3.connect(db) as conn:
            found = conn.execute(
                "SELECT label, password, service, expires_at FROM app_passwords"
            ).fetchall()
        conn.close()
        return found

    password = exercise_cli(config, rows)
    queries = tuple(APP_PASSWORD_QUERIES.items())
    source = source_of(
        StoreConfig(
            "sql", driver="sqlite", dsn=str(db), password_query=QUERY, app_password_queries=queries
        )
    )
    assert trio.run(lookup_and_touch, source, password) == 1_800_000_000.0
    bridge = start_bridge(
        base / "daemon",
        store_config("sqlite", str(db)).replace(
            "[app_passwords]\n", '[app_passwords]\nrequire_app_password_for = ["smtp"]\n'
        )
        + "[policy]\nfailure_delay = 0\n",
    )
    try:
        assert auth(bridge, USER, password) == "OK"
        assert auth(bridge, USER, "main-pass") == "FAIL"  # required for smtp
        assert run_cli(config, "revoke", USER, "phone").returncode == 0
        assert auth(bridge, USER, password) == "FAIL"  # SQL: at once, nothing cached
    finally:
        bridge.stop()


# ---------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_apps(pg: PgCluster, pg_users: Callable[..., None]) -> Iterator[PgCluster]:
    """The shared cluster with alice, its authbridge role allowed to run the CLI."""
    pg_users(USER, "{PLAIN}main-pass")
    with pg.admin() as conn:
        conn.execute("GRANT INSERT, DELETE ON app_passwords TO authbridge")
    yield pg
    with pg.admin() as conn:
        conn.execute("DELETE FROM app_passwords")
        conn.execute("REVOKE INSERT, DELETE ON app_passwords FROM authbridge")


def test_postgresql_cli_lookup_last_used_and_daemon(
    pg_apps: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = runtime_dir(tmp_path_factory, "pg-apppw")
    config = base / "cli.toml"
    config.write_text(store_config("postgresql", pg_apps.dsn()))

    def rows() -> list[tuple[object, ...]]:
        with pg_apps.admin() as conn:
            return conn.execute(
                "SELECT label, password, service, expires_at FROM app_passwords"
            ).fetchall()

    password = exercise_cli(config, rows)
    source = source_of(
        StoreConfig(
            "sql",
            driver="postgresql",
            dsn=pg_apps.dsn(),
            password_query=QUERY,
            app_password_queries=tuple(APP_PASSWORD_QUERIES.items()),
            timeout=2.0,
            pool_size=2,
        )
    )

    async def touched() -> float | None:
        try:
            return await lookup_and_touch(source, password)
        finally:
            await source.store.aclose()

    assert trio.run(touched) == 1_800_000_000.0
    bridge = start_bridge(base / "daemon", store_config("postgresql", pg_apps.dsn()))
    try:
        # The password query is the connection's prepared statement; the app password
        # query runs beside it on the same connections.
        assert auth(bridge, USER, "main-pass") == "OK"
        assert auth(bridge, USER, password) == "OK"
        assert auth(bridge, USER, "main-pass") == "OK"
        assert run_cli(config, "revoke", USER, "phone").returncode == 0
        assert auth(bridge, USER, password) == "FAIL"
    finally:
        bridge.stop()


# ---------------------------------------------------------------------- racing adds

RACES = 4


def race_adds(config: Path, rows: Callable[[], list[tuple[object, ...]]]) -> None:
    """Two ``add`` of one label started together, a few times: exactly one wins each
    time, the other answers one line and exit 2 (whether it saw the row at its lookup
    or the table's unique key refused its insert), never a traceback."""
    for race in range(RACES):
        label = f"race{race}"
        command = [sys.executable, "-m", "authbridge", "app-password", "add", USER]
        command += ["--label", label, "--config", str(config)]
        both = [
            subprocess.Popen(
                command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        answers = [(p.wait(60), *p.communicate()) for p in both]
        codes = sorted(code for code, _out, _err in answers)
        assert codes == [0, 2], answers
        for code, out, err in answers:
            assert "Traceback" not in err
            if code == 2:
                assert out == ""
                assert err.strip().splitlines() == [
                    f"authbridge app-password: error: user {USER!r} already has an app "
                    f"password {label!r}"
                ]
        assert [str(row[0]) for row in rows()].count(label) == 1


async def insert_twice(source: SqlAppPasswords) -> None:
    """The insert race itself, made certain: the second insert of a label (as by an
    ``add`` whose lookup came before the winner's insert) is a DuplicateLabel."""
    from authbridge.passdb.app_passwords import AppPassword, DuplicateLabel
    from authbridge.schemes import generate, parse_stored

    value = generate("SSHA512", b"x", USER)
    entry = AppPassword(USER, "twice", parse_stored(value))
    await source.add(entry, value, 1_800_000_000.0)
    with pytest.raises(DuplicateLabel, match="already has an app password 'twice'"):
        await source.add(entry, value, 1_800_000_000.0)
    assert await source.revoke(USER, "twice")


def test_sqlite_two_adds_of_one_label_at_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = runtime_dir(tmp_path_factory, "sqlite-apppw-race")
    db = make_sqlite(base / "users.sqlite", [(USER, "{PLAIN}main-pass")])
    config = base / "cli.toml"
    config.write_text(store_config("sqlite", str(db)))

    def rows() -> list[tuple[object, ...]]:
        with sqlite3.connect(db) as conn:
            found = conn.execute("SELECT label FROM app_passwords").fetchall()
        conn.close()
        return found

    race_adds(config, rows)
    queries = tuple(APP_PASSWORD_QUERIES.items())
    source = source_of(
        StoreConfig(
            "sql", driver="sqlite", dsn=str(db), password_query=QUERY, app_password_queries=queries
        )
    )
    trio.run(insert_twice, source)


def test_postgresql_two_adds_of_one_label_at_once(
    pg_apps: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = runtime_dir(tmp_path_factory, "pg-apppw-race")
    config = base / "cli.toml"
    config.write_text(store_config("postgresql", pg_apps.dsn()))

    def rows() -> list[tuple[object, ...]]:
        with pg_apps.admin() as conn:
            return conn.execute("SELECT label FROM app_passwords").fetchall()

    race_adds(config, rows)
    source = source_of(
        StoreConfig(
            "sql",
            driver="postgresql",
            dsn=pg_apps.dsn(),
            password_query=QUERY,
            app_password_queries=tuple(APP_PASSWORD_QUERIES.items()),
            timeout=2.0,
            pool_size=2,
        )
    )

    async def twice() -> None:
        try:
            await insert_twice(source)
        finally:
            await source.store.aclose()

    trio.run(twice)
