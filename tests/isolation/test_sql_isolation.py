"""The SQL pool: an exception nobody expected is a temporary failure for one request.

The driver (here SQLite, through the real backend) raises something that is not a
database error for one user's lookup. That request must fail temporarily, as an
outage does, and nothing else: the pool keeps answering every later lookup, the
exception is logged once by type and place (never its message, which holds a
password here), and counted under ``where="store"``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.isolation.background import PASSWORD, USER, FaultyDaemon, assert_contained_once

QUERY = "SELECT password FROM users WHERE name = '%u'"


def _database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT PRIMARY KEY, password TEXT)")
        db.executemany(
            "INSERT INTO users VALUES (?, ?)",
            [(USER, f"{{PLAIN}}{PASSWORD}"), ("inject-fault@example.org", "{PLAIN}x")],
        )
    path.chmod(0o644)


def test_an_unexpected_driver_exception_fails_that_request_only(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    database = directory / "users.sqlite"
    _database(database)
    config = (
        f'[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "{database}"\n'
        f'password_query = "{QUERY}"\npool_size = 1\n'
        "[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n"
    )
    with FaultyDaemon(directory, ["sql_param"], config=config) as daemon:
        assert daemon.login() == "OK"
        assert daemon.login("inject-fault@example.org", "x") in ("FAIL", "CLOSED")
        line = assert_contained_once(
            daemon, "sql lookup failed unexpectedly; answered as a temporary failure", "store"
        )
        assert line["store"] == f"sql:sqlite:{database}"
        assert daemon.internal_errors("store") == 1
        # One pooled connection: every later lookup needs the pool to be sound.
        for _ in range(3):
            assert daemon.login() == "OK"
        assert daemon.login(USER, "wrong") == "FAIL"
        assert daemon.internal_errors("store") == 1
