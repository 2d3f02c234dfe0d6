"""Counters around real Exim 4 (``driver = dovecot``) logins made with swaks.

The daemon runs in Dovecot-compatible mode so PLAIN and LOGIN work without TLS; each
test counts what swaks did per mechanism and compares with the scrape deltas.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.smtp_dialogue import SmtpDialogue
from tests.observability.conftest import Observed
from tests.observability.helpers import USERS, by_mech_result, deltas, settled, wait_for
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.exim import EximDaemon, write_exim_config
from tests.support.swaks import run_swaks
from tests.support.tls import make_self_signed

pytestmark = pytest.mark.interop

AUTHS = "authbridge_authentications_total"


@pytest.fixture(scope="module")
def exim(compat: Observed, obs_dir: Path) -> Iterator[EximDaemon]:
    require_binary("exim")
    require_binary("swaks")
    require_binary("openssl")
    base = runtime_dir(obs_dir, "exim")
    tls = make_self_signed(base / "tls")
    config = write_exim_config(base, auth_socket=compat.socket_path, port=free_tcp_port(), tls=tls)
    with EximDaemon(config) as daemon:
        yield daemon


# (mechanism, user, password, expected SMTP code)
LOGINS = [
    ("PLAIN", "alice", USERS["alice"].password, 235),
    ("PLAIN", "bob", "not-bobs-password", 535),
    ("LOGIN", "bob", USERS["bob"].password, 235),
    ("LOGIN", "alice", USERS["alice"].password, 235),
    ("LOGIN", "alice", "wrong", 535),
    ("LOGIN", "nosuchuser", "whatever", 535),
    ("CRAM-MD5", "carol", USERS["carol"].password, 235),
    ("CRAM-MD5", "alice", USERS["alice"].password, 235),
    ("CRAM-MD5", "carol", "wrong", 535),
]


def test_counters_match_exim_logins(compat: Observed, exim: EximDaemon) -> None:
    before = compat.scrape()
    expected: Counter[tuple[str, str]] = Counter()
    for mech, user, password, code in LOGINS:
        result = run_swaks(server=exim.server, auth=mech, user=user, password=password)
        assert result.auth_code == code, result.transcript
        expected[(mech, "ok" if code == 235 else "fail")] += 1
    after = settled(compat.scrape, before, AUTHS, len(LOGINS))
    assert by_mech_result(deltas(before, after, AUTHS)) == dict(expected)
    counts = {
        dict(k)["mechanism"]: v
        for k, v in deltas(
            before, after, "authbridge_authentication_duration_seconds_count"
        ).items()
    }
    assert counts == {"PLAIN": 2, "LOGIN": 4, "CRAM-MD5": 3}
    # Exim opens one auth connection per SMTP AUTH and closes it afterwards.
    assert deltas(before, after, "authbridge_connections_total") == {(): len(LOGINS)}
    assert wait_for(lambda: compat.scrape().value("authbridge_connections_active") == 0)


def test_exim_client_ip_reaches_the_log_not_the_metrics(compat: Observed, exim: EximDaemon) -> None:
    cursor = compat.cursor()
    result = run_swaks(server=exim.server, auth="LOGIN", user="alice", password="bad-guess")
    assert result.auth_code == 535, result.transcript
    logged = cursor.events_once("authentication", 1)
    events = [e for e in logged if e["event"] == "authentication"]
    assert [(e["mechanism"], e["result"], e["rip"], e["user"]) for e in events] == [
        ("LOGIN", "fail", "127.0.0.1", "alice")
    ]
    assert events[0]["service"] == "smtp"
    fail2ban = [e for e in logged if str(e["event"]).startswith("passwd-file(")]
    assert [e["event"] for e in fail2ban] == ["passwd-file(alice,127.0.0.1): Password mismatch"]


def _cancel_mid_login(exim: EximDaemon) -> None:
    with SmtpDialogue("127.0.0.1", exim.config.port) as smtp:
        assert smtp.command("EHLO client.test").code == 250, smtp.dump()
        assert smtp.command("AUTH LOGIN").code == 334, smtp.dump()
        assert smtp.command("*").code == 501, smtp.dump()


def test_exim_client_cancelling_mid_login_is_aborted(compat: Observed, exim: EximDaemon) -> None:
    """``*`` in answer to a LOGIN prompt (RFC 4954): Exim hangs up on the auth server."""
    before = compat.scrape()
    _cancel_mid_login(exim)
    assert wait_for(lambda: compat.scrape().value("authbridge_connections_active") == 0)
    after = settled(compat.scrape, before, AUTHS, 1)
    assert by_mech_result(deltas(before, after, AUTHS)) == {("LOGIN", "aborted"): 1}
    assert deltas(before, after, "authbridge_authentication_duration_seconds_count") == {}


def test_aborted_request_has_its_event(compat: Observed, exim: EximDaemon) -> None:
    cursor = compat.cursor()
    _cancel_mid_login(exim)
    assert wait_for(lambda: compat.scrape().value("authbridge_connections_active") == 0)
    logged = cursor.events_once("authentication", 1)
    events = [e for e in logged if e["event"] == "authentication"]
    assert [(e["mechanism"], e["result"]) for e in events] == [("LOGIN", "aborted")]
