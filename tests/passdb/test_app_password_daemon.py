"""App passwords in a real ``authbridge serve``, changed by the real ``authbridge
app-password`` command while it runs: the right one logs in (its label in the event,
never the password), a revoked one fails once the watcher has reloaded the file (no
restart, no sleep: the test waits for the reload's log line), an expired one and one
for another service fail like a wrong password."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from authbridge.passdb import app_passwords as ap
from authbridge.schemes import generate, parse_stored
from tests.observability.helpers import Scrape, scrape
from tests.policy.authclient import AuthClient, plain_resp
from tests.support import free_tcp_port, runtime_dir, wait_for_text, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer

LOGINS = "authbridge_app_password_logins_total"


@pytest.fixture
def rundir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "apppw")


def app_password(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``authbridge app-password ARGS --config CONFIG``, as an admin runs it."""
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "app-password", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


def plain(client: AuthClient, request: int, user: str, password: str, service: str) -> str:
    fields = ["AUTH", str(request), "PLAIN", f"service={service}", "secured"]
    client.send("\t".join([*fields, "resp=" + plain_resp(user, password)]) + "\n")
    return client.reply(request)


def _scrape_or_none(port: int) -> Scrape | None:
    try:
        return scrape(port)
    except OSError:
        return None


def test_app_passwords_in_the_daemon(rundir: Path) -> None:
    users = rundir / "users"
    users.write_text("alice:{PLAIN}main-pass::::::\n")
    apps = rundir / "users.app"
    config = rundir / "authbridge.toml"
    config.write_text(
        f'[[store]]\npath = "{users}"\napp_passwords = "{apps}"\n'
        '[app_passwords]\nscheme = "SSHA512"\n'
    )
    added = app_password(config, "add", "alice", "--label", "phone", "--service", "smtp")
    assert added.returncode == 0, added.stderr
    phone = added.stdout.strip()
    tablet = app_password(config, "add", "alice", "--label", "tablet", "--service", "imap")
    assert tablet.returncode == 0, tablet.stderr
    expired = ap.AppPassword(
        "alice", "old", parse_stored(generate("SSHA512", b"old-pass", "alice")), (), time.time() - 5
    )
    ap.add(apps, expired, generate("SSHA512", b"old-pass", "alice"))
    port = free_tcp_port()
    args = [
        "--config",
        str(config),
        "--failure-delay",
        "0",
        "--metrics-listen",
        f"127.0.0.1:{port}",
    ]
    with AuthbridgeServer(users, rundir / "auth-client", extra_args=args) as server:
        wait_for_value(lambda: _scrape_or_none(port), bool, what="/metrics answering")
        with AuthClient(server.socket_path) as client:
            assert plain(client, 1, "alice", phone, "smtp").startswith("OK\t1\t")
            assert plain(client, 2, "alice", phone, "imap").startswith("FAIL\t2\t")
            assert plain(client, 3, "alice", tablet.stdout.strip(), "smtp").startswith("FAIL\t3")
            assert plain(client, 4, "alice", tablet.stdout.strip(), "imap").startswith("OK\t4")
            old = plain(client, 5, "alice", "old-pass", "smtp")
            assert plain(client, 6, "alice", "main-pass", "smtp").startswith("OK\t6\t")
            wrong = plain(client, 7, "alice", "wrong", "smtp")
        # An expired one gets the very FAIL a wrong password gets.
        assert old.startswith("FAIL\t5\t")
        assert old.split("\t")[2:] == wrong.split("\t")[2:]
        log = wait_for_text(server.stderr_text, "app_password")
        revoked = app_password(config, "revoke", "alice", "phone")
        assert revoked.returncode == 0, revoked.stderr
        # The watcher's reload of the companion file, then the revoked one fails.
        wait_for_text(server.stderr_text, "store reloaded", count=log.count("store reloaded") + 1)
        with AuthClient(server.socket_path) as client:
            assert plain(client, 8, "alice", phone, "smtp").startswith("FAIL\t8\t")
            assert plain(client, 9, "alice", "main-pass", "smtp").startswith("OK\t9\t")
        after = wait_for_value(
            lambda: scrape(port),
            lambda s: s.value(LOGINS, result="ok") == 2,
            what="two app password logins counted",
        )
        log = server.stderr_text()
    assert after.value(LOGINS, result="failed") >= 3
    lines = [line for line in log.splitlines() if "app_password" in line]
    assert any("phone" in line for line in lines) and any("tablet" in line for line in lines)
    assert phone not in log and tablet.stdout.strip() not in log and "old-pass" not in log
    listed = app_password(config, "list", "alice")
    assert listed.returncode == 0 and "phone" not in listed.stdout and "tablet" in listed.stdout
    assert "{SSHA512}" not in listed.stdout


def test_last_used_times_noted_before_a_stop_are_written_at_the_stop(rundir: Path) -> None:
    """The daemon writes last-used times every 30 s; one stopped sooner still writes
    the times of the logins it served (before: they were lost)."""
    users = rundir / "users"
    users.write_text("bob:{PLAIN}main-pass::::::\n")
    apps = rundir / "users.app"
    config = rundir / "authbridge.toml"
    config.write_text(
        f'[[store]]\npath = "{users}"\napp_passwords = "{apps}"\n'
        '[app_passwords]\nscheme = "SSHA512"\n'
    )
    added = app_password(config, "add", "bob", "--label", "laptop", "--service", "smtp")
    assert added.returncode == 0, added.stderr
    args = ["--config", str(config), "--failure-delay", "0"]
    with AuthbridgeServer(users, rundir / "auth-client", extra_args=args) as server:
        with AuthClient(server.socket_path) as client:
            assert plain(client, 1, "bob", added.stdout.strip(), "smtp").startswith("OK\t1\t")
        assert not ap.used_path(apps).exists()  # the first round is 30 s away
    assert ("bob", "laptop") in ap.read_used(apps)
