"""Fixtures for the sql store tests: a real PostgreSQL cluster and SQLite files.

The cluster is the Debian ``postgresql`` package's binaries run as the ``postgres``
user on a private socket directory (no TCP); it is made once per session with the
schema of ``deploy/sql/postgresql.sql``. Tests that stop the database make their own.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sql.pgcluster import PgCluster
from tests.support import runtime_dir

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "sql"
QUERY = (
    "SELECT username AS user, password, allow_nets, nologin, "
    "CASE WHEN nologin THEN reason END AS reason "
    "FROM mail_users WHERE username = '%u' AND active"
)


def make_cluster(base: Path) -> PgCluster:
    """A started cluster with role ``authbridge``, database ``mail`` and the deploy schema."""
    return load_schema(PgCluster(base).init().start())


def load_schema(cluster: PgCluster) -> PgCluster:
    with cluster.admin("postgres") as conn:
        conn.execute("CREATE ROLE authbridge LOGIN")
        conn.execute("CREATE DATABASE mail")
    with cluster.admin() as conn:
        conn.execute((DEPLOY / "postgresql.sql").read_text())
        conn.execute("DELETE FROM mail_users")  # the example rows are not test data
    return cluster


@pytest.fixture(scope="session")
def sql_dir() -> Iterator[Path]:
    base = runtime_dir(None, "authbridge-sql")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(sql_dir: Path) -> Iterator[PgCluster]:
    cluster = make_cluster(sql_dir / "pg-shared")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_users(pg: PgCluster) -> Iterator[Callable[..., None]]:
    """``add(username, password, **columns)`` into the shared cluster; rows removed after."""
    added: list[str] = []

    def add(username: str, password: str | None, **columns: object) -> None:
        names = ["username", "password", *columns]
        marks = ", ".join(["%s"] * len(names))
        with pg.admin() as conn:
            conn.execute(
                f"INSERT INTO mail_users ({', '.join(names)}) VALUES ({marks})",
                (username, password, *columns.values()),
            )
        added.append(username)

    yield add
    with pg.admin() as conn:
        for name in added:
            conn.execute("DELETE FROM mail_users WHERE username = %s", (name,))


def make_sqlite(path: Path, rows: list[tuple[object, ...]]) -> Path:
    """An SQLite file with the deploy schema and ``rows`` (username, password, ...)."""
    with sqlite3.connect(path) as conn:
        conn.executescript((DEPLOY / "sqlite.sql").read_text())
        conn.execute("DELETE FROM mail_users")
        for row in rows:
            names = ["username", "password", "active", "allow_nets", "nologin", "reason"]
            names = names[: len(row)]
            conn.execute(
                f"INSERT INTO mail_users ({', '.join(names)}) VALUES ({', '.join('?' * len(row))})",
                row,
            )
    conn.close()
    return path
