"""``authbridge serve`` with ``[auth_policy]`` against a real HTTP policy server.

The server (tests/support/policy_server.py) implements what Dovecot documents for
``auth_policy_server_url`` and records each request; every test drives what it answers
and checks both the reply on the auth-client socket and what the server received.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_tcp_port, runtime_dir, wait_for_text, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.policy_server import ALLOW, Answer, PolicyServer, delay, reject
from tests.support.raw_auth import Reply, login

NONCE = "test-nonce-Vq3"
USERS = "alice:{PLAIN}secret\ncram@example.org:{PLAIN}crampass\n"
_SESSIONS = itertools.count(1)


def _pwhash(user: str, password: str | None, bits: int = 12) -> str:
    """Independent of authbridge: sha256(nonce || user || NUL || password), top bits."""
    raw = hashlib.sha256(NONCE.encode() + user.encode() + b"\0" + (password or "").encode())
    value = int.from_bytes(raw.digest(), "big") >> (256 - bits)
    return value.to_bytes((bits + 7) // 8, "big").hex()


class Daemon:
    def __init__(self, server: AuthbridgeServer, socket_path: Path, metrics_port: int) -> None:
        self.server, self.socket_path, self.metrics_port = server, socket_path, metrics_port
        #: The session id of the last login (reports are told apart by it).
        self.session = ""

    def login(
        self,
        user: str = "alice",
        password: str = "secret",
        mech: str = "PLAIN",
        params: tuple[str, ...] = ("service=smtp", "rip=192.0.2.7"),
    ) -> Reply:
        """One login with a session id of its own (unless ``params`` has one)."""
        if not any(p.startswith("session=") for p in params):
            params = (*params, f"session=t{next(_SESSIONS)}")
        self.session = next(p for p in params if p.startswith("session="))[8:]
        return login(self.socket_path, user, password, mech=mech, params=params)

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0


def _start(base: Path, url: str, extra: str = "", head: str = "") -> Daemon:
    users = base / "users"
    users.write_text(USERS)
    metrics_port = free_tcp_port()
    config = base / "authbridge.toml"
    config.write_text(
        f"{head}[policy]\nrequire_secured = false\nfailure_delay = 0.0\n"
        "[penalty]\nenabled = false\n"
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        f'[auth_policy]\nserver_url = "{url}"\nhash_nonce = "{NONCE}"\n{extra}'
    )
    socket_path = base / "auth-client"
    server = AuthbridgeServer(users, socket_path, extra_args=["--config", str(config)])
    server.start()
    if "workers" in head:
        wait_for_text(server.stderr_text, "all workers serving")
    return Daemon(server, socket_path, metrics_port)


@pytest.fixture(scope="module")
def policy() -> Iterator[PolicyServer]:
    with PolicyServer() as server:
        yield server


@pytest.fixture(scope="module")
def daemon(policy: PolicyServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = _start(runtime_dir(tmp_path_factory, "authpolicy"), policy.url)
    yield d
    d.server.stop()


@pytest.fixture(autouse=True)
def _fresh(policy: PolicyServer) -> None:
    policy.clear()
    policy.answer(default=ALLOW)


def _reports(policy: PolicyServer, session: str) -> list[dict[str, object]]:
    """The report of the login with ``session`` (reports are sent after the reply)."""

    def mine() -> list[dict[str, object]]:
        return [r.body for r in policy.of("report") if r.body.get("session_id") == session]

    return wait_for_value(mine, bool, what=f"the report of session {session}")


def test_allow_sends_dovecots_fields_then_ok_then_a_report(
    daemon: Daemon, policy: PolicyServer
) -> None:
    reply = daemon.login("alice", "secret", params=("service=smtp", "rip=192.0.2.7", "session=s1"))
    assert reply.line == "OK\t1\tuser=alice"
    checks = policy.of("allow")
    assert len(checks) == 2  # before and after authentication, as Dovecot does
    first = checks[0]
    assert first.path == "/?command=allow"
    assert first.headers["Content-Type"] == "application/json"
    assert first.keys == [
        "device_id", "login", "protocol", "pwhash", "remote", "session_id", "tls",
    ]  # fmt: skip
    assert first.body == {
        "device_id": "",
        "login": "alice",
        "protocol": "smtp",
        "pwhash": _pwhash("alice", "secret"),
        "remote": "192.0.2.7",
        "session_id": "s1",
        "tls": False,
    }
    (report,) = _reports(policy, daemon.session)
    assert list(report)[-3:] == ["success", "policy_reject", "tls"]
    assert report["success"] is True and report["policy_reject"] is False
    assert report["pwhash"] == first.body["pwhash"]


def test_login_is_the_normalised_name_and_tls_follows_secured_tls(
    daemon: Daemon, policy: PolicyServer
) -> None:
    reply = daemon.login("ALICE", "secret", params=("service=smtp", "rip=::1", "secured=tls"))
    assert reply.ok, reply.line
    body = policy.of("allow")[0].body
    assert (body["login"], body["remote"], body["tls"]) == ("alice", "::1", True)
    assert body["pwhash"] == _pwhash("alice", "secret")


def test_reject_answers_fail_with_the_servers_message(daemon: Daemon, policy: PolicyServer) -> None:
    policy.answer(reject("Too many failed logins"))
    reply = daemon.login()
    assert reply.line == "FAIL\t1\tuser=alice\treason=Too many failed logins"
    assert len(policy.of("allow")) == 1
    (report,) = _reports(policy, daemon.session)
    assert (report["success"], report["policy_reject"]) == (False, True)


def test_reject_without_message_is_a_bare_fail(daemon: Daemon, policy: PolicyServer) -> None:
    policy.answer(reject(""))
    assert daemon.login().line == "FAIL\t1\tuser=alice"


def test_wrong_password_is_reported_as_a_failure(daemon: Daemon, policy: PolicyServer) -> None:
    reply = daemon.login("alice", "wrong")
    assert not reply.ok
    assert len(policy.of("allow")) == 1  # no check after a failed authentication
    (report,) = _reports(policy, daemon.session)
    assert report["pwhash"] == _pwhash("alice", "wrong") != _pwhash("alice", "secret")
    assert (report["success"], report["policy_reject"]) == (False, False)


def test_refusal_after_authentication(daemon: Daemon, policy: PolicyServer) -> None:
    policy.answer(ALLOW, reject("after"))
    assert daemon.login().line == "FAIL\t1\tuser=alice\treason=after"
    (report,) = _reports(policy, daemon.session)
    assert (report["success"], report["policy_reject"]) == (False, True)


def test_delay_holds_that_request_only(daemon: Daemon, policy: PolicyServer) -> None:
    policy.answer(delay(2))
    held: list[Reply] = []
    thread = threading.Thread(target=lambda: held.append(daemon.login()))
    thread.start()
    try:
        wait_for_value(lambda: policy.of("allow"), bool, what="the held request's check")
        other = daemon.login("cram@example.org", "crampass")
        assert other.ok and other.seconds < 1.5, other
    finally:
        thread.join(15)
    assert held and held[0].ok and held[0].seconds >= 2.0, held


def test_cram_md5_hashes_no_password(daemon: Daemon, policy: PolicyServer) -> None:
    reply = daemon.login("cram@example.org", "crampass", mech="CRAM-MD5")
    assert reply.ok, reply.line
    checks = policy.of("allow")
    assert len(checks) == 1  # CRAM-MD5 decides after the pipeline: the check before only
    assert checks[0].body["pwhash"] == _pwhash("cram@example.org", None)
    assert _reports(policy, daemon.session)[0]["success"] is True


@pytest.mark.parametrize(
    "answer", [Answer(http=500), Answer(raw=b"garbage"), Answer(raw=b'{"status":"x"}')]
)
def test_unusable_answers_fail_open(daemon: Daemon, policy: PolicyServer, answer: Answer) -> None:
    policy.answer(answer, answer)
    assert daemon.login().ok


def test_secrets_never_in_the_log(daemon: Daemon, policy: PolicyServer) -> None:
    policy.answer(reject("nope"))
    daemon.login("alice", "S3cr3t-Unique-pw")
    daemon.login("alice", "secret")
    text = wait_for_text(daemon.server.stderr_text, "login refused by the policy server")
    assert "S3cr3t-Unique-pw" not in text and "secret" not in text
    assert "pwhash" not in text and NONCE not in text


def test_verdicts_are_counted(daemon: Daemon, policy: PolicyServer) -> None:
    name = "authbridge_policy_server_verdicts_total"
    before = daemon.metric(name + '{verdict="reject"}')
    policy.answer(reject())
    daemon.login()
    wait_for_value(
        lambda: daemon.metric(name + '{verdict="reject"}'), lambda v: v == before + 1, what=name
    )
    assert daemon.metric('authbridge_policy_server_request_duration_seconds_count{command="allow"}')


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_server_down_fails_open_by_default(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = _start(runtime_dir(tmp_path_factory, "authpolicy-down"), _closed_port_url())
    try:
        assert d.login().line == "OK\t1\tuser=alice"
        wait_for_value(
            lambda: d.metric(
                'authbridge_policy_server_errors_total{command="allow",kind="connect"}'
            ),
            lambda v: v >= 1,
            what="the connect error",
        )
        assert d.server.stderr_text().count("policy server failing") == 1
        assert d.login().ok
        assert d.server.stderr_text().count("policy server failing") == 1  # once per outage
    finally:
        d.server.stop()


def test_server_down_fails_closed_when_asked(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``reject_on_fail``: Dovecot 2.3 answers a plain FAIL (535), not a temporary one."""
    d = _start(
        runtime_dir(tmp_path_factory, "authpolicy-closed"),
        _closed_port_url(),
        "reject_on_fail = true\n",
    )
    try:
        assert d.login().line == "FAIL\t1\tuser=alice"
    finally:
        d.server.stop()


def test_a_hanging_server_costs_the_timeout_then_fails_open(
    tmp_path_factory: pytest.TempPathFactory, policy: PolicyServer
) -> None:
    d = _start(
        runtime_dir(tmp_path_factory, "authpolicy-hang"), policy.url, "timeout_msecs = 300\n"
    )
    policy.answer(default=Answer(hang=True))
    try:
        started = time.monotonic()
        reply = d.login()
        assert reply.ok, reply.line
        assert 0.5 <= time.monotonic() - started < 5  # two checks, 0.3 s each
    finally:
        policy.release()
        d.server.stop()


def test_log_only_never_refuses(
    tmp_path_factory: pytest.TempPathFactory, policy: PolicyServer
) -> None:
    d = _start(runtime_dir(tmp_path_factory, "authpolicy-logonly"), policy.url, "log_only = true\n")
    policy.answer(default=reject("would refuse"))
    try:
        assert d.login().ok
        assert _reports(policy, d.session)[0]["policy_reject"] is True  # as Dovecot reports it
    finally:
        d.server.stop()


def test_api_header_and_url_credentials(
    tmp_path_factory: pytest.TempPathFactory, policy: PolicyServer
) -> None:
    url = policy.url.replace("http://", "http://wf:p%40ss@")
    d = _start(
        runtime_dir(tmp_path_factory, "authpolicy-auth"),
        url,
        'api_header = "X-Policy-Token: t0k3n"\ncheck_after_auth = false\n'
        "report_after_auth = false\n",
    )
    try:
        assert d.login().ok
        (check,) = policy.of("allow")
        assert check.headers["X-Policy-Token"] == "t0k3n"
        assert check.headers["Authorization"] == "Basic d2Y6cEBzcw=="  # wf:p@ss
        assert not policy.of("report")
    finally:
        d.server.stop()


def test_sighup_applies_a_new_nonce(
    tmp_path_factory: pytest.TempPathFactory, policy: PolicyServer
) -> None:
    base = runtime_dir(tmp_path_factory, "authpolicy-reload")
    d = _start(base, policy.url)
    try:
        assert d.login().ok
        assert policy.of("allow")[0].body["pwhash"] == _pwhash("alice", "secret")
        config = base / "authbridge.toml"
        config.write_text(config.read_text().replace(NONCE, "another-nonce"))
        assert d.server.proc is not None
        os.kill(d.server.proc.pid, signal.SIGHUP)
        wait_for_text(d.server.stderr_text, '"reloaded"')
        policy.clear()
        assert d.login().ok
        raw = hashlib.sha256(b"another-nonce" + b"alice\0secret").digest()
        assert policy.of("allow")[0].body["pwhash"] == f"{raw[0] << 4 | raw[1] >> 4:04x}"
        _reports(policy, d.session)
    finally:
        d.server.stop()


def test_works_under_a_supervisor_with_workers(
    tmp_path_factory: pytest.TempPathFactory, policy: PolicyServer
) -> None:
    d = _start(
        runtime_dir(tmp_path_factory, "authpolicy-workers"),
        policy.url,
        head="[server]\nworkers = 2\n",
    )
    try:
        policy.answer(reject("refused"))
        assert d.login().line == "FAIL\t1\tuser=alice\treason=refused"
        refused = d.session
        for _ in range(4):
            assert d.login().ok
        assert _reports(policy, refused)[0]["policy_reject"] is True
        _reports(policy, d.session)
        assert len(policy.of("allow")) == 1 + 4 * 2
    finally:
        d.server.stop()


def test_reports_still_queued_at_shutdown_are_sent_before_the_exit(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Eight logins, four report senders stuck on a slow policy server: the other
    reports are still queued when SIGTERM comes, and reach the server before the exit."""
    with PolicyServer() as slow:
        d = _start(runtime_dir(tmp_path_factory, "authpolicy-drain"), slow.url)
        slow.hang_reports = True
        try:
            sessions = []
            for _ in range(8):
                assert d.login().ok
                sessions.append(d.session)
            wait_for_value(lambda: len(slow.of("report")), lambda n: n >= 4, what="4 senders")
            assert len(slow.of("report")) < 8  # the rest wait in the queue
            proc = d.server.proc
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
            slow.hang_reports = False
            slow.release()
            assert proc.wait(15) == 0
        finally:
            slow.release()
            if d.server.proc is not None and d.server.proc.poll() is None:
                d.server.stop()
        reported = {r.body.get("session_id") for r in slow.of("report")}
        assert reported >= set(sessions)
