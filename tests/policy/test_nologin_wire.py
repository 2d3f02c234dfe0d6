"""``nologin`` on the wire of a real ``authbridge serve``, every mechanism, both modes.

Default mode: the right password of a ``nologin`` user is answered
``FAIL <id> user=<name> reason=<text>`` after the failure delay; the wrong one gets
Dovecot's plain FAIL. ``--dovecot-compat``: Dovecot's OK with ``nologin`` and ``reason=``
(the conformance transcript extra-fields-nologin pins that against real Dovecot).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scramp import ScramClient

from tests.policy.authclient import AuthClient
from tests.policy.daemon import metrics_args, scrape, wait_for_metrics
from tests.support import runtime_dir, wait_for_text
from tests.support.authbridge_proc import AuthbridgeServer

USERS = """\
alice:{PLAIN}alice-pw::::::
moved:{PLAIN}moved-pw::::::nologin reason=Mailbox_moved
quick:{PLAIN}quick-pw::::::nologin nodelay reason=Gone
logged:{PLAIN}logged-pw::::::nologin
marker:{PLAIN}marker-pw::::::
"""
MECHANISMS = ("plain", "login", "cram-md5", "scram-sha-256")
FAILURE_DELAY = 0.3
MODES = ("default", "compat")


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(line: str) -> bytes:
    assert line.startswith("CONT\t"), line
    return base64.b64decode(line.split("\t")[2])


def authenticate(client: AuthClient, request_id: int, mech: str, user: str, pw: str) -> str:
    """One whole exchange as an MTA runs it; returns the last line (OK or FAIL)."""
    start = f"AUTH\t{request_id}\t{mech}\tservice=smtp\tsecured"
    if mech == "PLAIN":
        return client.plain(request_id, user, pw, "secured")
    if mech == "LOGIN":
        client.send(start + "\n")
        assert unb64(client.reply(request_id)) == b"Username:"
        client.send(f"CONT\t{request_id}\t{b64(user)}\n")
        assert unb64(client.reply(request_id)) == b"Password:"
        client.send(f"CONT\t{request_id}\t{b64(pw)}\n")
        return client.reply(request_id)
    if mech == "CRAM-MD5":
        client.send(start + "\n")
        challenge = unb64(client.reply(request_id))
        digest = hmac.new(pw.encode(), challenge, hashlib.md5).hexdigest()
        client.send(f"CONT\t{request_id}\t{b64(f'{user} {digest}')}\n")
        return client.reply(request_id)
    scram = ScramClient([mech], user, pw)
    client.send(f"{start}\tresp={b64(scram.get_client_first())}\n")
    scram.set_server_first(unb64(client.reply(request_id)).decode())
    client.send(f"CONT\t{request_id}\t{b64(scram.get_client_final())}\n")
    reply = client.reply(request_id)
    if reply.startswith("FAIL"):
        return reply  # a wrong proof ends here
    scram.set_server_final(unb64(reply).decode())  # the server proves it knows the key
    client.send(f"CONT\t{request_id}\t\n")
    return client.reply(request_id)


def start(base: Path, name: str, *args: str) -> AuthbridgeServer:
    run = runtime_dir(base, name)
    users = run / "users"
    users.write_text(USERS)
    return AuthbridgeServer(
        users, run / "auth-client", mechanisms=MECHANISMS, extra_args=args
    ).start()


@pytest.fixture(scope="module")
def wire_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "nologin-wire")


@pytest.fixture(scope="module")
def bridges(wire_dir: Path) -> Iterator[dict[str, AuthbridgeServer]]:
    """Default mode (no rip in these requests, hence no penalty) and compat mode."""
    servers = {
        "default": start(wire_dir, "default", "--failure-delay", str(FAILURE_DELAY)),
        "compat": start(wire_dir, "compat", "--dovecot-compat", "--failure-delay", "0"),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.mark.parametrize("mech", [m.upper() for m in MECHANISMS])
@pytest.mark.parametrize("mode", MODES)
def test_nologin_user_with_the_right_password(
    bridges: dict[str, AuthbridgeServer], mode: str, mech: str
) -> None:
    with AuthClient(bridges[mode].socket_path) as client:
        started = time.monotonic()
        line = authenticate(client, 7, mech, "moved", "moved-pw")
        elapsed = time.monotonic() - started
    if mode == "compat":
        assert line == "OK\t7\tuser=moved\tnologin\treason=Mailbox_moved"
    else:
        assert line == "FAIL\t7\tuser=moved\treason=Mailbox_moved"
        assert elapsed >= FAILURE_DELAY  # a decided FAIL: held like any other


@pytest.mark.parametrize("mech", [m.upper() for m in MECHANISMS])
@pytest.mark.parametrize("mode", MODES)
def test_nologin_user_with_a_wrong_password_is_an_ordinary_fail(
    bridges: dict[str, AuthbridgeServer], mode: str, mech: str
) -> None:
    """A guess learns nothing of the account in the default mode. In compat mode it is
    Dovecot's FAIL: for CRAM-MD5 and SCRAM, whose digest or proof is checked after the
    lookup, that FAIL carries the entry's fields but nologin, reason= too (the
    differential fuzzer and the conformance transcripts pin that); SPEC §12."""
    after_lookup = mech.startswith(("SCRAM-", "CRAM-"))
    leaked = "\treason=Mailbox_moved" if after_lookup and mode == "compat" else ""
    with AuthClient(bridges[mode].socket_path) as client:
        assert authenticate(client, 3, mech, "moved", "guess") == f"FAIL\t3\tuser=moved{leaked}"
        assert authenticate(client, 4, mech, "alice", "guess") == "FAIL\t4\tuser=alice"


@pytest.mark.parametrize("mech", [m.upper() for m in MECHANISMS])
@pytest.mark.parametrize("mode", MODES)
def test_other_users_log_in(bridges: dict[str, AuthbridgeServer], mode: str, mech: str) -> None:
    with AuthClient(bridges[mode].socket_path) as client:
        assert authenticate(client, 1, mech, "alice", "alice-pw") == "OK\t1\tuser=alice"


def test_typed_name_and_nodelay(bridges: dict[str, AuthbridgeServer]) -> None:
    with AuthClient(bridges["default"].socket_path) as client:
        upper = client.plain(1, "MOVED", "moved-pw", "secured")
        assert upper == "FAIL\t1\tuser=moved\treason=Mailbox_moved\toriginal_user=MOVED"
        # The entry's nodelay applies to its refusal as Dovecot applies it to a FAIL.
        assert client.plain(2, "quick", "quick-pw", "secured") == (
            "FAIL\t2\tuser=quick\tnodelay\treason=Gone"
        )


def _refusal_event(server: AuthbridgeServer, user: str) -> tuple[str, str]:
    """The authentication event of ``user``'s refusal, and the whole log up to then."""
    with AuthClient(server.socket_path) as client:
        assert client.plain(1, user, f"{user}-pw", "secured") == f"FAIL\t1\tuser={user}"
        # A later guess's fail2ban line proves the daemon's log has caught up with us.
        client.plain(2, "marker", "wrong", "secured")
    text = wait_for_text(server.stderr_text, "passwd-file(marker): Password mismatch")
    events = [line for line in text.splitlines() if '"reason": "nologin"' in line]
    assert len(events) == 1, events
    return events[0], text


def test_refusal_is_logged_as_nologin_and_never_for_fail2ban(wire_dir: Path) -> None:
    server = start(wire_dir, "log", "--failure-delay", "0")
    try:
        event, text = _refusal_event(server, "logged")
    finally:
        server.stop()
    assert '"result": "fail"' in event and '"event": "authentication"' in event
    assert "passwd-file(" not in text.replace("passwd-file(marker)", "")
    assert "logged-pw" not in text


def test_refused_user_is_logged_by_name(wire_dir: Path) -> None:
    server = start(wire_dir, "log-name", "--failure-delay", "0")
    try:
        event, _ = _refusal_event(server, "logged")
    finally:
        server.stop()
    assert '"user": "logged"' in event, event


# ---------------------------------------------------------------------- penalty


@pytest.fixture(scope="module")
def penalised(wire_dir: Path) -> Iterator[tuple[AuthbridgeServer, str]]:
    """Default mode with the per-address penalty on and /metrics to read it."""
    args, url = metrics_args()
    server = start(wire_dir, "penalty", "--failure-delay", "0", *args)
    wait_for_metrics(url)
    yield server, url
    server.stop()


def _penalties(url: str) -> float:
    return scrape(url)["authbridge_penalties_total"]


def test_scram_refusal_is_no_penalty(penalised: tuple[AuthbridgeServer, str]) -> None:
    server, url = penalised
    rip = "rip=192.0.2.31"
    with AuthClient(server.socket_path) as client:
        scram = ScramClient(["SCRAM-SHA-256"], "moved", "moved-pw")
        first = b64(scram.get_client_first())
        client.send(f"AUTH\t1\tSCRAM-SHA-256\tservice=smtp\t{rip}\tresp={first}\n")
        scram.set_server_first(unb64(client.reply(1)).decode())
        client.send(f"CONT\t1\t{b64(scram.get_client_final())}\n")
        scram.set_server_final(unb64(client.reply(1)).decode())
        client.send("CONT\t1\t\n")
        assert client.reply(1) == "FAIL\t1\tuser=moved\treason=Mailbox_moved"
        before = _penalties(url)
        assert client.plain(2, "alice", "alice-pw", "secured", rip) == "OK\t2\tuser=alice"
    assert _penalties(url) == before  # the next request from that address was not held


def test_plain_refusal_is_no_penalty(penalised: tuple[AuthbridgeServer, str]) -> None:
    server, url = penalised
    rip = "rip=192.0.2.32"
    with AuthClient(server.socket_path) as client:
        refused = client.plain(1, "moved", "moved-pw", "secured", rip)
        assert refused == "FAIL\t1\tuser=moved\treason=Mailbox_moved"
        before = _penalties(url)
        assert client.plain(2, "alice", "alice-pw", "secured", rip) == "OK\t2\tuser=alice"
    assert _penalties(url) == before


def test_a_24_level_client_gets_user_disabled(bridges: dict[str, AuthbridgeServer]) -> None:
    """Dovecot 2.4's code for a disabled account, to a client that declares minor 3 or
    more (Exim and Postfix, at 0, get the FAIL above without it)."""
    with AuthClient(bridges["default"].socket_path, handshake=False) as client:
        while client.read_line() != "DONE":
            pass
        client.send("VERSION\t1\t4\nCPID\t42\n")
        resp = b64("\0moved\0moved-pw")
        client.send(f"AUTH\t1\tPLAIN\tprotocol=smtp\tsecured=tls\tresp={resp}\n")
        assert client.reply(1) == "FAIL\t1\tuser=moved\tcode=user_disabled\treason=Mailbox_moved"
        client.send("AUTH\t2\tPLAIN\tprotocol=smtp\tsecured=tls\n")
        assert client.reply(2) == "CONT\t2\t"
        client.send("CANCEL\t2\n")
        assert client.reply(2) == "CANCELLED\t2"
