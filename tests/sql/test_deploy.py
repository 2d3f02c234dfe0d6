"""deploy/sql: the example schemas and configs work as written, hashes from `authbridge pw`."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from authbridge.config import load_config
from authbridge.passdb.sql import open_sql_store
from tests.sql.conftest import DEPLOY
from tests.sql.daemon import SqlBridge, auth
from tests.sql.pgcluster import PgCluster

EXAMPLES = {"alice@example.org": "alice-example-pass", "bob@example.org": "bob-example-pass"}


def example_hashes(sql_file: Path) -> dict[str, str]:
    return dict(re.findall(r"\('([a-z]+@example\.org)', '(\{[^']+)'\)", sql_file.read_text()))


def test_example_hashes_verify_with_authbridge_pw() -> None:
    for sql_file in ("postgresql.sql", "sqlite.sql"):
        hashes = example_hashes(DEPLOY / sql_file)
        assert set(hashes) == set(EXAMPLES)
        for user, hashed in hashes.items():
            run = subprocess.run(
                [sys.executable, "-m", "authbridge", "pw", "-t", hashed, "-p", EXAMPLES[user]],
                capture_output=True,
                check=False,
            )
            assert run.returncode == 0, (sql_file, user, run.stderr)


def test_sqlite_example_served_by_the_daemon(sql_dir: Path) -> None:
    site = sql_dir / "deploy-sqlite"
    site.mkdir()
    shutil.copy(DEPLOY / "authbridge-sqlite.toml", site / "authbridge.toml")
    with sqlite3.connect(site / "users.sqlite") as conn:
        conn.executescript((DEPLOY / "sqlite.sql").read_text())
        conn.execute(
            "INSERT INTO mail_users (username, password, active) VALUES ('off@example.org', ?, 0)",
            (example_hashes(DEPLOY / "sqlite.sql")["bob@example.org"],),
        )
    conn.close()
    bridge = SqlBridge(site / "authbridge.toml", site / "auth-client")
    bridge.start()
    try:
        assert auth(bridge, "alice@example.org", "alice-example-pass") == "OK"
        assert auth(bridge, "bob@example.org", "bob-example-pass") == "OK"
        assert auth(bridge, "bob@example.org", "alice-example-pass") == "FAIL"
        assert auth(bridge, "off@example.org", "bob-example-pass") == "FAIL"
    finally:
        bridge.stop()


async def test_postgresql_example_config_and_schema(pg: PgCluster) -> None:
    with pg.admin("postgres") as conn:
        conn.execute("CREATE DATABASE deploy_example")
    with pg.admin("deploy_example") as conn:
        conn.execute((DEPLOY / "postgresql.sql").read_text())
        conn.execute("UPDATE mail_users SET allow_nets = '192.0.2.0/24' WHERE username LIKE 'bob%'")
    config = load_config(DEPLOY / "authbridge-postgresql.toml")
    [store_config] = config.stores
    store = open_sql_store(replace(store_config, dsn=pg.dsn(dbname="deploy_example")))
    try:
        alice = await store.lookup("alice@example.org")
        assert alice is not None and alice.password is not None
        assert alice.password.scheme == "ARGON2ID"
        assert alice.fields == (("user", "alice@example.org"),)
        bob = await store.lookup("bob@example.org")
        assert bob is not None and bob.field("allow_nets") == "192.0.2.0/24"
        assert await store.lookup("carol@example.org") is None
    finally:
        await store.aclose()
