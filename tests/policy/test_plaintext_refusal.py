"""A plaintext login refused on an unsecured session says why, on the wire and in the log.

Before: doveadm printed a bare ``auth failed`` and the ``authentication`` event said only
``policy``. Default mode now answers with Dovecot's own wording for the refusal (the one
its login processes give) and logs ``reason=plaintext_insecure``; ``--dovecot-compat``
does not refuse at all, as Dovecot's auth service on this socket does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.checks.policy import PLAINTEXT_DISALLOWED, PLAINTEXT_INSECURE, PolicyGate
from authbridge.config import PolicyConfig, parse_config
from authbridge.core import replies
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.observability.metrics import result_label
from tests.support import runtime_dir, wait_for_text
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import doveadm_auth

DOVEADM_AUTH_FAILED = 77
UNSECURED = RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.1")


def test_the_gate_names_the_plaintext_refusal() -> None:
    refusal = PolicyGate(PolicyConfig()).refusal(UNSECURED, True)
    assert refusal is PLAINTEXT_INSECURE
    assert refusal.reason is Reason.PLAINTEXT_INSECURE
    assert refusal.fields == (("reason", PLAINTEXT_DISALLOWED),)
    assert result_label(Verdict(Outcome.FAIL, "u", refusal.reason)) == "rejected_policy"


def test_the_fail_line_carries_the_reason() -> None:
    verdict = Verdict(
        Outcome.FAIL,
        "demo",
        PLAINTEXT_INSECURE.reason,
        fields=PLAINTEXT_INSECURE.fields,
        had_store_fields=True,
    )
    assert replies.fail_line(1, verdict) == (
        b"FAIL\t1\tuser=demo\treason="
        b"Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\n"
    )


def test_compat_mode_never_refuses_plaintext() -> None:
    config = parse_config('[[store]]\npath = "u"\n').dovecot_compatible()
    assert PolicyGate(config.policy).refusal(UNSECURED, True) is None


def test_network_refusals_send_no_reason() -> None:
    gate = PolicyGate(PolicyConfig(allowed_networks=("198.51.100.0/24",)))
    refusal = gate.refusal(UNSECURED, False)
    assert refusal is not None and refusal.reason is Reason.POLICY and refusal.fields == ()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthbridgeServer]:
    base: Path = runtime_dir(tmp_path_factory, "plainref")
    users = base / "users.passwd"
    users.write_text("demo:{PLAIN}demopass::::::\n")
    users.chmod(0o644)
    args = ("--failure-delay", "0", "--log-format", "json")
    with AuthbridgeServer(users, base / "ab.sock", extra_args=args) as running:
        yield running


def test_doveadm_shows_the_reason(server: AuthbridgeServer) -> None:
    refused = doveadm_auth(server.socket_path, "demo", "demopass")
    assert refused.returncode == DOVEADM_AUTH_FAILED, refused.stdout + refused.stderr
    assert f"  reason={PLAINTEXT_DISALLOWED}\n" in refused.stdout, refused.stdout
    accepted = doveadm_auth(server.socket_path, "demo", "demopass", "secured")
    assert accepted.returncode == 0 and "reason=" not in accepted.stdout


def test_the_authentication_event_says_plaintext_insecure(server: AuthbridgeServer) -> None:
    doveadm_auth(server.socket_path, "demo", "demopass", "rip=203.0.113.77")
    text = wait_for_text(server.stderr_text, "203.0.113.77")
    events = [json.loads(line) for line in text.splitlines() if "203.0.113.77" in line]
    finished = [e for e in events if e.get("event") == "authentication"]
    assert finished and finished[-1]["reason"] == "plaintext_insecure", events
    assert finished[-1]["result"] == "rejected_policy"
