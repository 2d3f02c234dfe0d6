"""Store files that change under a running daemon (issue #17 items 5 and 6).

Real ``authbridge serve`` processes: a passwd-file moved away is logged once and
flagged in /metrics while logins go on from the last good copy; an SQLite database
replaced by rename is reopened (a removed user fails, a new one logs in); a missing
SQLite file or a missing psycopg stops serve with one line, not a traceback. Every
wait is for a log line or a metric, with a deadline.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.observability.helpers import Scrape, scrape
from tests.policy.authclient import AuthClient, ConnectionClosed
from tests.sql.conftest import make_sqlite
from tests.sql.daemon import SqlBridge
from tests.support import free_tcp_port, runtime_dir, wait_for_text
from tests.support.authbridge_proc import AuthbridgeServer

REPO = Path(__file__).resolve().parents[2]
UNAVAILABLE = "authbridge_store_unavailable"
RELOADS = "authbridge_store_reloads_total"
SQLITE_QUERY = "SELECT password FROM mail_users WHERE username = '%u' AND active"


@pytest.fixture
def rundir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "watch")


def _metrics_args(port: int) -> list[str]:
    return ["--metrics-listen", f"127.0.0.1:{port}"]


def _wait_scrape(
    port: int, name: str, value: float, timeout: float = 10.0, **labels: str
) -> Scrape:
    """The first scrape where ``name{labels}`` equals ``value`` (else the test fails)."""
    # The daemon's HTTP thread can lag its event loop by a moment; poll with a deadline.
    deadline = time.monotonic() + timeout
    while True:
        now = scrape(port)
        if now.value(name, **labels) == value:
            return now
        if time.monotonic() >= deadline:
            pytest.fail(f"{name}{labels} stayed at {now.value(name, **labels)}, not {value}")
        time.sleep(0.05)


def _line(log: str, event: str) -> str:
    """The (first) log line holding ``event``."""
    return next(line for line in log.splitlines() if event in line)


def test_a_passwd_file_moved_away_is_logged_once_flagged_and_the_last_copy_serves(
    rundir: Path,
) -> None:
    users = rundir / "users"
    users.write_text("alice:{PLAIN}secret\n")
    # A second store whose reloads prove that the watcher went round while users was gone.
    clock = rundir / "clock"
    clock.write_text("tick:{PLAIN}x\n")
    port = free_tcp_port()
    server = AuthbridgeServer(
        users,
        rundir / "auth-client",
        extra_args=["--passwd-file", str(clock), "--failure-delay", "0", *_metrics_args(port)],
    )
    with server:
        store = f"passwd-file:{users}"
        before = _wait_scrape(port, UNAVAILABLE, 0, store=store)
        failures = before.value(RELOADS, result="failure")
        away = rundir / "users.away"
        os.rename(users, away)

        line = _line(wait_for_text(server.stderr_text, "store file unavailable"), "unavailable")
        assert str(users) in line and "No such file or directory" in line
        assert "last good copy keeps serving" in line
        flagged = _wait_scrape(port, UNAVAILABLE, 1, store=store)
        assert flagged.value(RELOADS, result="failure") == failures + 1

        assert _login(server, "alice", "secret") == "OK"  # the last good copy

        for n, text in enumerate(("tick:{PLAIN}xy\n", "tick:{PLAIN}xyz\n"), start=2):
            clock.write_text(text)
            wait_for_text(server.stderr_text, "store reloaded", count=n - 1)
        # Two more rounds went by with users still gone: still one line, one failure.
        assert server.stderr_text().count("store file unavailable") == 1
        assert scrape(port).value(RELOADS, result="failure") == failures + 1

        os.rename(away, users)  # back, unchanged: nothing to reload
        log = wait_for_text(server.stderr_text, "store file available again")
        assert str(users) in _line(log, "store file available again")
        _wait_scrape(port, UNAVAILABLE, 0, store=store)
        assert _login(server, "alice", "secret") == "OK"


def test_a_store_file_replaced_by_a_directory_is_unavailable_until_a_file_returns(
    rundir: Path,
) -> None:
    users = rundir / "users"
    users.write_text("alice:{PLAIN}secret\n")
    port = free_tcp_port()
    server = AuthbridgeServer(
        users, rundir / "auth-client", extra_args=["--failure-delay", "0", *_metrics_args(port)]
    )
    with server:
        users.unlink()
        users.mkdir()  # opens (as root too), but cannot be read
        log = wait_for_text(server.stderr_text, "store file unavailable")
        assert "Is a directory" in log
        _wait_scrape(port, UNAVAILABLE, 1, store=f"passwd-file:{users}")
        assert _login(server, "alice", "secret") == "OK"
        users.rmdir()
        users.write_text("alice:{PLAIN}changed\n")
        wait_for_text(server.stderr_text, "store reloaded")
        assert "store file available again" in server.stderr_text()
        _wait_scrape(port, UNAVAILABLE, 0, store=f"passwd-file:{users}")
        assert _login(server, "alice", "changed") == "OK"


def _login(server: AuthbridgeServer, user: str, password: str) -> str:
    """One PLAIN login (secured) on a fresh connection: "OK", "FAIL" or "CLOSED"."""
    with AuthClient(server.socket_path, timeout=10) as client:
        client.auth_plain(1, user, password, "secured")
        try:
            return client.reply(1).split("\t")[0]
        except ConnectionClosed:
            return "CLOSED"


def _sqlite_config(directory: Path, db: Path) -> Path:
    config = directory / "authbridge.toml"
    config.write_text(
        f'[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "{db}"\n'
        f'password_query = "{SQLITE_QUERY}"\npool_size = 2\n'
        "[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n"
    )
    return config


def test_an_sqlite_database_replaced_by_rename_is_reopened(rundir: Path) -> None:
    db = make_sqlite(
        rundir / "users.sqlite",
        [("alice@example.org", "{PLAIN}alice-pw"), ("bob@example.org", "{PLAIN}bob-pw")],
    )
    port = free_tcp_port()
    config = _sqlite_config(rundir, db)
    bridge = SqlBridge(config, rundir / "auth-client")
    bridge.extra_args = (*bridge.extra_args, *_metrics_args(port))
    with bridge:
        # Logins open pooled connections, which hold the old file open.
        for _ in range(3):
            assert _login(bridge, "alice@example.org", "alice-pw") == "OK"
        assert _login(bridge, "bob@example.org", "bob-pw") == "OK"
        new = make_sqlite(
            rundir / "new.sqlite",
            [("bob@example.org", "{PLAIN}bob-pw"), ("carol@example.org", "{PLAIN}carol-pw")],
        )
        os.replace(new, db)  # mv new.sqlite users.sqlite
        log = wait_for_text(bridge.stderr_text, "store reopened")
        assert str(db) in log
        assert _login(bridge, "alice@example.org", "alice-pw") == "FAIL"
        assert _login(bridge, "carol@example.org", "carol-pw") == "OK"
        assert _login(bridge, "bob@example.org", "bob-pw") == "OK"

        store = f"sql:sqlite:{db}"
        os.rename(db, rundir / "users.sqlite.away")
        log = wait_for_text(bridge.stderr_text, "store file unavailable")
        assert str(db) in _line(log, "store file unavailable")
        _wait_scrape(port, UNAVAILABLE, 1, store=store)


def test_a_missing_sqlite_file_stops_serve_with_one_line_and_is_not_created(
    rundir: Path,
) -> None:
    db = rundir / "nowhere" / "users.sqlite"
    config = _sqlite_config(rundir, db)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "authbridge",
            "serve",
            "--config",
            str(config),
            "--socket",
            str(rundir / "auth-client"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(config) in lines[0] and "store[0].dsn" in lines[0]
    assert str(db) in lines[0] and "does not exist" in lines[0]
    assert not db.exists() and not db.parent.exists()
    assert not (rundir / "auth-client").exists()


def test_a_replaced_sqlite_file_that_is_no_database_keeps_the_pool(tmp_path: Path) -> None:
    from authbridge.passdb.base import StoreUnavailable
    from authbridge.passdb.sql_sqlite import SqliteBackend

    db = make_sqlite(tmp_path / "u.sqlite", [("alice", "{PLAIN}a")])
    backend = SqliteBackend(str(db))
    query = "SELECT password FROM mail_users WHERE username = ?"
    assert backend.query(query, ("alice",), float("inf"))[1] == [("{PLAIN}a",)]
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not an SQLite database, not at all" * 100)
    os.replace(junk, db)
    with pytest.raises(StoreUnavailable, match="not a database"):
        backend.reopen()
    # The pooled connection still reads the old file: the last good copy.
    assert backend.query(query, ("alice",), float("inf"))[1] == [("{PLAIN}a",)]
    backend.close()


PSYCOPG_BLOCKED = (
    "import sys; sys.modules['psycopg'] = None; "
    "from authbridge.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("command", ["serve", "check"])
def test_without_psycopg_serve_and_check_name_what_to_install(rundir: Path, command: str) -> None:
    config = rundir / f"pg-{command}.toml"
    config.write_text(
        '[[store]]\ntype = "sql"\ndriver = "postgresql"\n'
        'dsn = "host=/nonexistent dbname=mail user=authbridge"\n'
        "password_query = \"SELECT password FROM mail_users WHERE username = '%u'\"\n"
    )
    extra = ["--socket", str(rundir / "auth-client")] if command == "serve" else []
    proc = subprocess.run(
        [sys.executable, "-c", PSYCOPG_BLOCKED, command, "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "ModuleNotFoundError" not in output.split(" (")[0]
    assert proc.returncode != 0
    lines = [line for line in output.splitlines() if "psycopg" in line]
    assert len(lines) == 1, output
    assert "pip install 'psycopg[binary]'" in lines[0]
    if command == "serve":
        assert proc.returncode == 2
        assert output.strip() == lines[0] and "store[0].driver" in lines[0]


def test_psycopg_is_a_default_dependency_and_sql_stays_an_alias() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.replace(" ", "").startswith("psycopg[binary]") for d in project["dependencies"])
    assert any(
        d.replace(" ", "").startswith("psycopg[binary]")
        for d in project["optional-dependencies"]["sql"]
    )


def test_sqlite_query_sees_a_write_in_place_without_reopening(tmp_path: Path) -> None:
    """Writes in place keep the inode: open connections see them (no reopen needed)."""
    from authbridge.passdb.base import file_signature
    from authbridge.passdb.sql_sqlite import SqliteBackend

    db = make_sqlite(tmp_path / "u.sqlite", [("alice", "{PLAIN}a")])
    backend = SqliteBackend(str(db))
    query = "SELECT password FROM mail_users WHERE username = ?"
    assert backend.query(query, ("alice",), float("inf"))[1] == [("{PLAIN}a",)]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE mail_users SET password = '{PLAIN}b' WHERE username = 'alice'")
    conn.close()
    signature = file_signature(db)
    assert signature is not None and backend.is_current(signature)
    assert backend.query(query, ("alice",), float("inf"))[1] == [("{PLAIN}b",)]
    backend.close()
