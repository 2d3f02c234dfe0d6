"""No credential reaches the log, even with the debug protocol trace on.

Real clients (doveadm, Exim driven by swaks and by a raw SMTP dialogue) authenticate
through a daemon at ``--log-level debug`` with known passwords, right and wrong; then
the whole log is searched for each password in clear and in every base64 form it can
take on the wire: inside a PLAIN blob, alone (LOGIN), at any alignment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.smtp_dialogue import SmtpDialogue
from tests.observability.conftest import Observed
from tests.observability.helpers import (
    DOVEADM_AUTH_FAILED,
    RIP,
    USERS,
    RawAuthClient,
    b64,
    base64_forms,
    json_events,
)
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.dovecot import doveadm_auth
from tests.support.exim import EximDaemon, write_exim_config
from tests.support.swaks import run_swaks
from tests.support.tls import make_self_signed

pytestmark = pytest.mark.interop

WRONG = "Wr0ng-Guess-Passw0rd!"


@pytest.fixture(scope="module")
def exim(compat: Observed, obs_dir: Path) -> Iterator[EximDaemon]:
    require_binary("exim")
    require_binary("swaks")
    require_binary("openssl")
    base = runtime_dir(obs_dir, "exim-redaction")
    tls = make_self_signed(base / "tls")
    config = write_exim_config(base, auth_socket=compat.socket_path, port=free_tcp_port(), tls=tls)
    with EximDaemon(config) as daemon:
        yield daemon


def _forms(user: str, password: str) -> set[str]:
    forms = {password, *base64_forms(password), b64(password)}
    forms |= {b64(f"\0{user}\0{password}"), b64(f"{user}\0{user}\0{password}")}
    return forms


def test_debug_trace_never_shows_a_credential(compat: Observed, exim: EximDaemon) -> None:
    used: list[tuple[str, str]] = []
    cursor = compat.cursor()

    for user, password, status in [
        ("alice", USERS["alice"].password, 0),
        ("bob", USERS["bob"].password, 0),
        ("alice", WRONG, DOVEADM_AUTH_FAILED),
    ]:
        proc = doveadm_auth(compat.socket_path, user, password, f"rip={RIP}")
        assert proc.returncode == status, proc.stdout + proc.stderr
        used.append((user, password))

    for mech, user, password, code in [
        ("PLAIN", "bob", USERS["bob"].password, 235),
        ("LOGIN", "alice", USERS["alice"].password, 235),
        ("LOGIN", "bob", WRONG, 535),
        ("CRAM-MD5", "carol", USERS["carol"].password, 235),
    ]:
        result = run_swaks(server=exim.server, auth=mech, user=user, password=password)
        assert result.auth_code == code, result.transcript
        used.append((user, password))

    # PLAIN without initial response: the credentials travel in a CONT line.
    with SmtpDialogue("127.0.0.1", exim.config.port) as smtp:
        smtp.command("EHLO client.test")
        assert smtp.command("AUTH PLAIN").code == 334, smtp.dump()
        blob = b64(f"\0alice\0{USERS['alice'].password}")
        assert smtp.command(blob, shown="<credentials>").code == 235, smtp.dump()
    # LOGIN with the user name as initial response, password in the CONT.
    with SmtpDialogue("127.0.0.1", exim.config.port) as smtp:
        smtp.command("EHLO client.test")
        assert smtp.command(f"AUTH LOGIN {b64('carol')}").code == 334, smtp.dump()
        assert smtp.command(b64(USERS["carol"].password), shown="<pw>").code == 235, smtp.dump()
    used += [("alice", USERS["alice"].password), ("carol", USERS["carol"].password)]

    cursor.events_once("authentication", 9)  # written a moment after the replies
    log = cursor.text()
    events = json_events(log)
    trace = [e for e in events if e["event"] == "protocol"]
    # The trace really was on and saw the exchanges (else this test proves nothing).
    assert any("resp=<redacted>" in e["line"] for e in trace if e["direction"] == "in")
    assert any(e["line"].startswith("CONT\t") for e in trace if e["direction"] == "in")
    assert any(e["line"].startswith("CONT\t") for e in trace if e["direction"] == "out")
    assert sum(1 for e in events if e["event"] == "authentication") == 9

    for user, password in used:
        for form in _forms(user, password):
            assert form not in log, f"a form of {user}'s password is in the log"


def test_malformed_lines_with_credentials_stay_out_of_the_log(compat: Observed) -> None:
    """A client that breaks the framing (spaces for tabs) is quoted in the violation
    warning; the credential inside must not be, at any log level."""
    password = USERS["alice"].password
    cursor = compat.cursor()
    bad_lines = [
        f"AUTH 1 PLAIN service=smtp resp={b64(chr(0) + 'alice' + chr(0) + password)}",
        f"CONT 1 {b64(password)}",
        f"AUTH\t1\tPLAIN\tservice=smtp\tresp={b64(chr(0) + 'alice' + chr(0) + password)}\tx=1",
    ]
    for line in bad_lines:
        client = RawAuthClient(compat.socket_path)
        try:
            client.send(line)
            assert client.reply() is None  # a protocol violation: disconnected
        finally:
            client.close()
    cursor.events_once("protocol violation, closing", len(bad_lines))
    log = cursor.text()
    warnings = [e for e in json_events(log) if e["event"] == "protocol violation, closing"]
    assert len(warnings) == len(bad_lines)
    for form in _forms("alice", password):
        assert form not in log
