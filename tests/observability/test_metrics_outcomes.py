"""Every value of the closed ``result`` set, and the other counters, against the real daemon.

The daemon runs with authbridge's own policy (secured-only plaintext, per-address
penalty, internal failures close the connection) and the auth cache. doveadm produces
the policy refusals, penalties and cache traffic; a bare socket client provokes what
no well-behaved client does on purpose (vanishing mid-exchange, malformed input).
"""

from __future__ import annotations

import time

import pytest

from tests.observability.conftest import Observed
from tests.observability.helpers import (
    BROKEN_USER,
    DOVEADM_AUTH_FAILED,
    RESULTS_SET,
    USERS,
    RawAuthClient,
    b64,
    by_mech_result,
    deltas,
    settled,
    wait_for,
)
from tests.support.dovecot import doveadm_auth

pytestmark = pytest.mark.interop

AUTHS = "authbridge_authentications_total"


def test_result_label_set_is_closed(strict: Observed) -> None:
    results = {dict(labels)["result"] for labels in strict.scrape().series(AUTHS)}
    assert results == RESULTS_SET
    mechanisms = {dict(labels)["mechanism"] for labels in strict.scrape().series(AUTHS)}
    assert mechanisms == {"PLAIN", "LOGIN", "CRAM-MD5"}


def test_policy_refusal_is_rejected_policy(strict: Observed) -> None:
    before = strict.scrape()
    # Plaintext outside a secured (TLS) session: refused by policy, not a wrong password.
    proc = doveadm_auth(strict.socket_path, "alice", USERS["alice"].password, "rip=192.0.2.10")
    assert proc.returncode == DOVEADM_AUTH_FAILED, proc.stdout + proc.stderr
    after = settled(strict.scrape, before, AUTHS, 1)
    assert by_mech_result(deltas(before, after, AUTHS)) == {("PLAIN", "rejected_policy"): 1}
    assert deltas(before, after, "authbridge_penalties_total") == {}


def test_internal_failure_is_tempfail(strict: Observed) -> None:
    before = strict.scrape()
    client = RawAuthClient(strict.socket_path)
    try:
        blob = b64("\0" + BROKEN_USER + "\0x")
        client.send(f"AUTH\t1\tPLAIN\tservice=smtp\tsecured\tresp={blob}")
        # authbridge closes the connection on an internal failure, so the MTA defers.
        assert client.reply() is None
    finally:
        client.close()
    after = settled(strict.scrape, before, AUTHS, 1)
    assert by_mech_result(deltas(before, after, AUTHS)) == {("PLAIN", "tempfail"): 1}


def test_client_gone_mid_exchange_is_aborted(strict: Observed) -> None:
    before = strict.scrape()
    client = RawAuthClient(strict.socket_path)
    client.send("AUTH\t7\tLOGIN\tservice=smtp\tsecured")
    assert client.reply() == f"CONT\t7\t{b64('Username:')}"
    client.close()
    after = settled(strict.scrape, before, AUTHS, 1)
    assert by_mech_result(deltas(before, after, AUTHS)) == {("LOGIN", "aborted"): 1}


def test_malformed_response_is_protocol_error(strict: Observed) -> None:
    before = strict.scrape()
    client = RawAuthClient(strict.socket_path)
    try:
        client.send("AUTH\t3\tPLAIN\tservice=smtp\tsecured\tresp=!!not-base64!!")
        reply = client.reply()
        assert reply is not None and reply.startswith("FAIL\t3\t"), reply
    finally:
        client.close()
    # The FAIL went out before the request was counted: wait for the scrape to show it.
    after = settled(strict.scrape, before, AUTHS, 1)
    assert by_mech_result(deltas(before, after, AUTHS)) == {("PLAIN", "protocol_error"): 1}
    # The request failed; the connection itself broke no rule.
    assert deltas(before, after, "authbridge_protocol_errors_total") == {}


def test_protocol_violation_counts_once(strict: Observed) -> None:
    before = strict.scrape()
    client = RawAuthClient(strict.socket_path)
    try:
        client.send("NOT-A-COMMAND\tat all")
        assert client.reply() is None  # Dovecot's rule: disconnect
    finally:
        client.close()
    after = settled(strict.scrape, before, "authbridge_protocol_errors_total", 1)
    assert deltas(before, after, "authbridge_protocol_errors_total") == {(): 1}
    assert deltas(before, after, AUTHS) == {}


def test_penalty_counted_and_in_the_duration_histogram(strict: Observed) -> None:
    """Second failure from one address waits the 1 s penalty step; the histogram sees it."""
    rip = "203.0.113.77"
    before = strict.scrape()
    started = time.monotonic()
    for password in ("first-wrong", "second-wrong"):
        proc = doveadm_auth(strict.socket_path, "alice", password, "secured", f"rip={rip}")
        assert proc.returncode == DOVEADM_AUTH_FAILED, proc.stdout + proc.stderr
    assert time.monotonic() - started >= 1.0
    after = settled(strict.scrape, before, AUTHS, 2)
    assert deltas(before, after, "authbridge_penalties_total") == {(): 1}
    assert by_mech_result(deltas(before, after, AUTHS)) == {("PLAIN", "fail"): 2}
    buckets = {
        dict(k)["le"]: v
        for k, v in deltas(
            before, after, "authbridge_authentication_duration_seconds_bucket"
        ).items()
    }
    # One fast failure, one held for the 1 s step: split exactly at the 1 s bucket.
    assert buckets["0.5"] == 1 and buckets["1.0"] == 1
    assert buckets["5.0"] == 2 and buckets["+Inf"] == 2


def test_cache_hits_misses_and_entries(strict: Observed) -> None:
    before = strict.scrape()
    for _ in range(3):
        proc = doveadm_auth(strict.socket_path, "bob", USERS["bob"].password, "secured")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    after = settled(strict.scrape, before, AUTHS, 3)
    assert deltas(before, after, "authbridge_cache_misses_total") == {(): 1}
    assert deltas(before, after, "authbridge_cache_hits_total") == {(): 2}
    assert after.value("authbridge_cache_entries") >= 1


def test_store_reload_success_and_failure(strict: Observed) -> None:
    """The daemon re-reads a changed passwd-file; a broken one is refused and counted."""
    reloads = "authbridge_store_reloads_total"
    stamp = "authbridge_store_last_reload_success_timestamp_seconds"
    good = strict.users_file.read_text()
    before = strict.scrape()
    try:
        strict.users_file.write_text(good + "binary\0junk:{PLAIN}x\n")
        assert wait_for(
            lambda: (
                strict.scrape().value(reloads, result="failure")
                == (before.value(reloads, result="failure") + 1)
            )
        )
        assert strict.scrape().value(stamp) == before.value(stamp)
    finally:
        strict.users_file.write_text(good + f"dave:{{PLAIN}}dave-pass-{time.time()}::::::\n")
    assert wait_for(
        lambda: (
            strict.scrape().value(reloads, result="success")
            == before.value(reloads, result="success") + 1
        )
    )
    after = strict.scrape()
    assert deltas(before, after, reloads) == {
        (("result", "failure"),): 1,
        (("result", "success"),): 1,
    }
    assert after.value(stamp) > before.value(stamp)
    strict.users_file.write_text(good)
