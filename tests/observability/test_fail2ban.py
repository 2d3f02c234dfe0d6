"""deploy/fail2ban/ against log output the real daemon wrote, checked by the real fail2ban.

doveadm authenticates with ``rip`` set, as an MTA would; ``fail2ban-regex`` with the
shipped filter must find exactly the failed guesses, each with its client address, and
never an address a user name tried to smuggle in. Names no store knows (maybe passwords)
are fingerprinted (``#<8 hex>/<length>``) and the filter still matches them; with
``--log-unknown-users typed`` they are typed again, sanitised.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.conftest import Observed, _start
from tests.observability.helpers import (
    DOVEADM_AUTH_FAILED,
    RIP,
    USERS,
    json_events,
)
from tests.support import require_binary, runtime_dir, wait_for_value
from tests.support.dovecot import doveadm_auth

pytestmark = pytest.mark.interop

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "fail2ban"
FILTER = DEPLOY / "filter.d" / "authbridge.conf"
JAIL = DEPLOY / "jail.d" / "authbridge.conf"
OTHER_RIP = "192.0.2.44"
FORGED_RIP = "203.0.113.9"

# (user, password, rip or None, failed?)
ATTEMPTS = [
    ("alice", USERS["alice"].password, RIP, False),
    ("alice", "guess-1", RIP, True),
    ("bob", "guess-2", RIP, True),
    ("carol", "guess-3", RIP, True),
    ("root", "guess-4", RIP, True),  # unknown user
    ("admin@example.org", "guess-5", RIP, True),  # unknown user
    (f"evil,{FORGED_RIP}): Password mismatch", "x", RIP, True),  # forged address
    ("bob", USERS["bob"].password, RIP, False),
    ("alice", "guess-6", OTHER_RIP, True),
    ("alice", "guess-7", None, True),  # no rip: nothing to ban
]


def _make_log(observed: Observed, dest: Path) -> Path:
    cursor = observed.cursor()
    for user, password, rip, failed in ATTEMPTS:
        info = [f"rip={rip}"] if rip else []
        proc = doveadm_auth(observed.socket_path, user, password, "service=smtp", *info)
        assert proc.returncode == (DOVEADM_AUTH_FAILED if failed else 0), proc.stdout
    # The events are written at the end of the batch that sent the replies, by the log
    # writer thread: a client can have its reply a moment before the line is written.
    wait_for_value(
        lambda: cursor.text().count("authentication"),
        lambda seen: seen >= len(ATTEMPTS),
        10,
        "an authentication event per attempt",
    )
    dest.write_text(cursor.text())
    return dest


def _expected_hosts() -> Counter[str]:
    return Counter(rip for _, _, rip, failed in ATTEMPTS if failed and rip)


def _expected_users() -> Counter[str]:
    """Known users by name; unknown ones by the shape of their fingerprint (the key is the
    daemon's own, so the digits cannot be known here)."""
    return Counter(
        user if user in USERS else f"#/{len(user)}"
        for user, _, rip, failed in ATTEMPTS
        if failed and rip
    )


def _user_shapes(users: list[str]) -> Counter[str]:
    return Counter(re.sub(r"^#[0-9a-f]{8}/(?=\d+$)", "#/", user) for user in users)


@pytest.fixture(scope="module")
def console(obs_dir: Path, users_text: str) -> Iterator[Observed]:
    base = runtime_dir(obs_dir, "console")
    args = ["--dovecot-compat", "--failure-delay", "0", "--log-format", "console"]
    observed = _start(base, users_text, args)
    try:
        yield observed
    finally:
        observed.server.stop()


@pytest.fixture(scope="module")
def typed(obs_dir: Path, users_text: str) -> Iterator[Observed]:
    """Unknown user names logged as typed (the operator's opt-in), debug trace on."""
    base = runtime_dir(obs_dir, "typed-names")
    args = ["--dovecot-compat", "--failure-delay", "0", "--log-format", "json"]
    observed = _start(
        base, users_text, [*args, "--log-level", "debug", "--log-unknown-users", "typed"]
    )
    try:
        yield observed
    finally:
        observed.server.stop()


def fail2ban_regex(log: Path, out: str = "ip") -> list[str]:
    """The address (or ``out``: another tag) of every line the shipped filter matches."""
    proc = subprocess.run(
        [require_binary("fail2ban-regex"), "--out", out, str(log), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split()


def test_json_log_matches_each_failure_with_its_rip(compat: Observed, tmp_path: Path) -> None:
    log = _make_log(compat, tmp_path / "authbridge.json.log")
    # The daemon really wrote JSON, with one authentication event per attempt.
    auths = [e for e in json_events(log.read_text()) if e["event"] == "authentication"]
    assert len(auths) == len(ATTEMPTS)
    assert Counter(fail2ban_regex(log)) == _expected_hosts()
    # Unknown names (root, admin@..., the forgery) are matched as their fingerprints.
    assert _user_shapes(fail2ban_regex(log, "user")) == _expected_users()


def test_console_log_matches_each_failure_with_its_rip(console: Observed, tmp_path: Path) -> None:
    log = _make_log(console, tmp_path / "authbridge.console.log")
    assert not log.read_text().startswith("{")
    assert Counter(fail2ban_regex(log)) == _expected_hosts()
    assert _user_shapes(fail2ban_regex(log, "user")) == _expected_users()


def test_unknown_names_never_reach_the_log(compat: Observed, tmp_path: Path) -> None:
    """Fingerprinted, an unknown name (the forgery included) is not in the log at all,
    not even in the debug trace; the same name gives the same fingerprint each time."""
    log = _make_log(compat, tmp_path / "fingerprinted.log")
    text = log.read_text()
    for user, _, _, _ in ATTEMPTS:
        if user not in USERS:
            assert user not in text
    assert FORGED_RIP not in text and FORGED_RIP not in fail2ban_regex(log)
    # Each unknown name is matched once per attempt, each attempt with one fingerprint.
    users = [u for u in fail2ban_regex(log, "user") if u.startswith("#")]
    assert len(users) == len(set(users)) == 3
    again = _make_log(compat, tmp_path / "again.log")
    if compat.workers == 1:  # each worker has its own key
        assert sorted(u for u in fail2ban_regex(again, "user") if u.startswith("#")) == sorted(
            users
        )


def test_forged_address_in_user_name_is_never_matched(typed: Observed, tmp_path: Path) -> None:
    log = _make_log(typed, tmp_path / "forged.log")
    assert FORGED_RIP in log.read_text()  # it is in the log, as part of a user name...
    assert FORGED_RIP not in fail2ban_regex(log)  # ...and fail2ban never takes it
    assert Counter(fail2ban_regex(log)) == _expected_hosts()
    users = fail2ban_regex(log, "user")
    assert "root" in users and "admin@example.org" in users  # typed, as asked
    assert not any(u.startswith("#") for u in users)


def test_jail_example_passes_fail2ban_config_test(tmp_path: Path) -> None:
    """The shipped filter and jail, installed into a copy of /etc/fail2ban, load."""
    client = require_binary("fail2ban-client")
    if not Path("/etc/fail2ban/fail2ban.conf").is_file():
        pytest.fail("fail2ban is installed without /etc/fail2ban")
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for jail in (conf / "jail.d").iterdir():
        jail.unlink()  # distribution jails (sshd) need logs this machine may not have
    shutil.copy(FILTER, conf / "filter.d" / FILTER.name)
    shutil.copy(JAIL, conf / "jail.d" / JAIL.name)
    log = tmp_path / "authbridge.log"
    log.write_text("")
    # No journald here: point the jail at a file, as the example explains.
    (conf / "jail.d" / "zz-test.local").write_text(
        f"[authbridge]\nbackend = auto\nlogpath = {log}\n"
    )
    proc = subprocess.run(
        [client, "-c", str(conf), "-t"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dump = subprocess.run(
        [client, "-c", str(conf), "-d"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    assert "['add', 'authbridge', 'auto']" in dump
    assert "['set', 'authbridge', 'maxretry', 5]" in dump
