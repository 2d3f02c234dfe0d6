"""The counters move by exactly the authentications the real ``doveadm auth test`` made.

Each test scrapes ``/metrics`` of a running ``authbridge serve``, authenticates with
Dovecot's own client, scrapes again and compares every series of the family: the ones
that should move by exactly so much, and all the others by nothing.
"""

from __future__ import annotations

import re

import pytest

from tests.observability.conftest import Observed
from tests.observability.helpers import (
    DOVEADM_AUTH_FAILED,
    RIP,
    USERS,
    by_mech_result,
    deltas,
    settled,
    wait_for,
)
from tests.support.dovecot import doveadm_auth

pytestmark = pytest.mark.interop

GOOD = [("alice", USERS["alice"].password), ("bob", USERS["bob"].password)] * 2  # N = 4
BAD = [("alice", "wrong-1"), ("bob", "wrong-2"), ("carol", "wrong-3")]  # M = 3
UNKNOWN = [("nobody", "x"), ("ghost@example.org", "y")]  # K = 2
TOTAL = len(GOOD) + len(BAD) + len(UNKNOWN)
AUTHS = "authbridge_authentications_total"


def _run_all(observed: Observed) -> None:
    for user, password in GOOD:
        proc = doveadm_auth(observed.socket_path, user, password, f"rip={RIP}", "service=smtp")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for user, password in BAD + UNKNOWN:
        proc = doveadm_auth(observed.socket_path, user, password, f"rip={RIP}", "service=smtp")
        assert proc.returncode == DOVEADM_AUTH_FAILED, proc.stdout + proc.stderr


def test_authentication_counters_move_exactly(compat: Observed) -> None:
    before = compat.scrape()
    _run_all(compat)
    after = settled(compat.scrape, before, AUTHS, TOTAL)
    n, failed = len(GOOD), len(BAD) + len(UNKNOWN)

    moved = by_mech_result(deltas(before, after, AUTHS))
    assert moved == {("PLAIN", "ok"): n, ("PLAIN", "fail"): failed}

    count = deltas(before, after, "authbridge_authentication_duration_seconds_count")
    assert count == {(("mechanism", "PLAIN"),): n + failed}
    # Every request is observed once, in a bucket that covers it (no failure delay here).
    inf = deltas(before, after, "authbridge_authentication_duration_seconds_bucket")
    assert inf[(("le", "+Inf"), ("mechanism", "PLAIN"))] == n + failed
    assert inf[(("le", "1.0"), ("mechanism", "PLAIN"))] == n + failed


def test_connection_counters(compat: Observed) -> None:
    before = compat.scrape()
    _run_all(compat)
    # doveadm opens one connection per run and closes it; the gauge returns to 0.
    assert wait_for(lambda: compat.scrape().value("authbridge_connections_active") == 0)
    after = settled(compat.scrape, before, AUTHS, TOTAL)
    assert deltas(before, after, "authbridge_connections_total") == {(): TOTAL}
    assert deltas(before, after, "authbridge_protocol_errors_total") == {}
    assert deltas(before, after, "authbridge_penalties_total") == {}  # compat: no penalty
    assert deltas(before, after, "authbridge_store_reloads_total") == {}


def test_no_user_or_address_in_metrics(compat: Observed) -> None:
    before = compat.scrape()
    _run_all(compat)
    text = settled(compat.scrape, before, AUTHS, TOTAL).text
    for secret in [RIP, *(u for u, _ in GOOD + BAD + UNKNOWN), *(p for _, p in GOOD + BAD)]:
        assert secret not in text
    # Label names whose values come from closed sets in the code, never from a request.
    allowed = {"mechanism", "result", "store", "le", "version", "python", "state", "where"}
    allowed |= {"kind", "when", "verdict", "command"}  # shared state, spraying, policy
    for _name, labels in compat.scrape().samples:
        assert {key for key, _ in labels} <= allowed, labels


def test_one_authentication_event_each(compat: Observed) -> None:
    cursor = compat.cursor()
    _run_all(compat)
    events = cursor.events_once("authentication", TOTAL)
    auth_events = [e for e in events if e["event"] == "authentication"]
    assert len(auth_events) == TOTAL
    for event in auth_events:
        assert {
            "cuid",
            "request",
            "mechanism",
            "service",
            "rip",
            "lip",
            "user",
            "result",
            "reason",
            "duration",
            "timestamp",
            "level",
        } <= set(event)
        assert event["rip"] == RIP and event["service"] == "smtp"
        assert event["mechanism"] == "PLAIN" and event["request"] == 1
    # Unknown names may be passwords: logged as a fingerprint, "#<8 hex>/<length>".
    typed = [
        (re.sub(r"^#[0-9a-f]{8}/(?=\d+$)", "#/", str(e["user"])), e["result"], e["reason"])
        for e in auth_events
    ]
    assert typed == [
        *[(u, "ok", "none") for u, _ in GOOD],
        *[(u, "fail", "password_mismatch") for u, _ in BAD],
        *[(f"#/{len(u)}", "fail", "user_unknown") for u, _ in UNKNOWN],
    ]
    # Connection ids count per serving process, as Dovecot's CUID does per auth process.
    assert len({(e.get("worker"), e["cuid"]) for e in auth_events}) == len(auth_events)


def test_store_lookups_are_timed(compat: Observed) -> None:
    before = compat.scrape()
    _run_all(compat)
    after = settled(compat.scrape, before, AUTHS, TOTAL)
    counts = deltas(before, after, "authbridge_store_lookup_duration_seconds_count")
    by_result: dict[str, float] = {}
    for labels, value in counts.items():
        assert dict(labels)["store"].startswith("passwd-file:")
        by_result[dict(labels)["result"]] = by_result.get(dict(labels)["result"], 0) + value
    assert by_result == {"found": len(GOOD) + len(BAD), "not_found": len(UNKNOWN)}
