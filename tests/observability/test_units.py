"""Unit tests of the observability modules: labels, redaction, log set-up, the HTTP side."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.observability import events, logs, userlog
from authbridge.observability.metrics import (
    LOOKUP_RESULTS,
    RESULTS,
    Metrics,
    MetricsHTTP,
    MetricsListenError,
    parse_listen,
    result_label,
)
from tests.observability.helpers import RESULTS_SET, http_get, parse_exposition
from tests.support import root_logging_restored

# ---------------------------------------------------------------------- metrics


def test_result_set_is_the_issues_closed_set() -> None:
    assert set(RESULTS) == RESULTS_SET


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_verdict_maps_into_the_closed_set(outcome: Outcome, reason: Reason) -> None:
    label = result_label(Verdict(outcome, "u", reason))
    assert label in RESULTS
    assert label != "aborted"  # only a request without a verdict is aborted


def test_result_mapping() -> None:
    assert result_label(Verdict(Outcome.OK, "u")) == "ok"
    assert result_label(Verdict(Outcome.TEMPFAIL, "u", Reason.STORE_ERROR)) == "tempfail"
    assert result_label(Verdict(Outcome.FAIL, "u", Reason.PASSWORD_MISMATCH)) == "fail"
    assert result_label(Verdict(Outcome.FAIL, "u", Reason.USER_UNKNOWN)) == "fail"
    assert result_label(Verdict(Outcome.FAIL, "u", Reason.POLICY)) == "rejected_policy"
    assert result_label(Verdict(Outcome.FAIL, "u", Reason.NETWORK_DENIED)) == "rejected_policy"
    assert result_label(Verdict(Outcome.FAIL, None, Reason.MALFORMED)) == "protocol_error"


def _exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_names_follow_prometheus_conventions() -> None:
    metrics = Metrics()
    metrics.prime(["PLAIN"])
    metrics.prime_stores(["passwd-file:/etc/authbridge/users"])
    scrape = parse_exposition(_exposition(metrics))
    for name, kind in scrape.families.items():
        assert name.startswith("authbridge_"), name
        if kind == "counter":
            assert not name.endswith("_total")  # the family; samples carry _total
    sample_names = {name for name, _ in scrape.samples}
    counters = [n for n, k in scrape.families.items() if k == "counter"]
    assert counters
    for name in counters:
        assert f"{name}_total" in sample_names
    assert not any(n.endswith("_created") for n in sample_names)
    assert "authbridge_build_info" in sample_names
    assert scrape.families["authbridge_authentication_duration_seconds"] == "histogram"
    assert scrape.families["authbridge_store_lookup_duration_seconds"] == "histogram"


def test_duration_buckets_cover_failure_delay_and_penalty() -> None:
    from authbridge.checks.penalty import PenaltySettings
    from authbridge.config import PolicyConfig
    from authbridge.observability.metrics import DURATION_BUCKETS

    worst = PolicyConfig().failure_delay + max(PenaltySettings().steps)
    assert any(b >= worst for b in DURATION_BUCKETS)
    assert max(DURATION_BUCKETS) >= 10.0  # the config caps delay + penalty below 10 s


def test_lookup_hook_feeds_the_histogram() -> None:
    metrics = Metrics()
    metrics.observe_lookup("passwd-file:/u", "found", 0.0002)
    metrics.observe_lookup("passwd-file:/u", "not_found", 0.0001)
    metrics.observe_lookup("passwd-file:/u", "error", 0.5)
    scrape = parse_exposition(_exposition(metrics))
    counts = scrape.series("authbridge_store_lookup_duration_seconds_count")
    assert {dict(k)["result"]: v for k, v in counts.items()} == {
        "found": 1,
        "not_found": 1,
        "error": 1,
    }
    with pytest.raises(ValueError, match="not one of"):
        metrics.observe_lookup("passwd-file:/u", "alice", 0.1)
    assert set(LOOKUP_RESULTS) == {"found", "not_found", "error"}


def test_cache_metrics_read_at_scrape_time() -> None:
    metrics = Metrics()
    state = [1, 2, 3]
    metrics.watch_cache(lambda: (state[0], state[1], state[2]))
    first = parse_exposition(_exposition(metrics))
    state[:] = [10, 20, 30]
    second = parse_exposition(_exposition(metrics))
    assert first.value("authbridge_cache_hits_total") == 1
    assert second.value("authbridge_cache_hits_total") == 10
    assert second.value("authbridge_cache_misses_total") == 20
    assert second.value("authbridge_cache_entries") == 30


def test_finished_and_aborted_count_per_mechanism() -> None:
    metrics = Metrics()
    metrics.prime(["PLAIN", "LOGIN"])
    info = RequestInfo(1, "LOGIN", "smtp", rip="192.0.2.1")
    metrics.finished(info, Verdict(Outcome.FAIL, "u", Reason.PASSWORD_MISMATCH), 0.3)
    metrics.aborted(info)
    scrape = parse_exposition(_exposition(metrics))
    total = "authbridge_authentications_total"
    assert scrape.value(total, mechanism="LOGIN", result="fail") == 1
    assert scrape.value(total, mechanism="LOGIN", result="aborted") == 1
    assert sum(scrape.series(total).values()) == 2
    assert "192.0.2.1" not in scrape.text


# ---------------------------------------------------------------------- HTTP


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9723", ("127.0.0.1", 9723)),
        ("9723", ("127.0.0.1", 9723)),
        (":9723", ("127.0.0.1", 9723)),
        ("[::1]:9723", ("::1", 9723)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["", "localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(MetricsListenError, match="expected HOST:PORT"):
        parse_listen(listen)


@pytest.fixture
def http_ready() -> Iterator[tuple[MetricsHTTP, list[bool]]]:
    ready = [False]
    http = MetricsHTTP(Metrics(), "127.0.0.1:0", lambda: ready[0])
    http.start()
    try:
        yield http, ready
    finally:
        http.stop()


def test_healthz_follows_readiness(http_ready: tuple[MetricsHTTP, list[bool]]) -> None:
    http, ready = http_ready
    port = http.address[1]
    assert http_get(port, "/healthz") == (503, "not ready\n")
    scrape = parse_exposition(http_get(port, "/metrics")[1])
    assert scrape.value("authbridge_ready") == 0
    ready[0] = True
    assert http_get(port, "/healthz") == (200, "ready\n")
    assert parse_exposition(http_get(port, "/metrics")[1]).value("authbridge_ready") == 1
    assert http_get(port, "/nope")[0] == 404


def test_bind_failure_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsListenError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            MetricsHTTP(Metrics(), f"127.0.0.1:{port}", lambda: True)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        http = MetricsHTTP(Metrics(), "[::1]:0", lambda: True)
    except MetricsListenError as exc:
        pytest.skip(f"::1 not usable here: {exc}")
    http.start()
    try:
        with socket.create_connection(("::1", http.address[1]), timeout=5) as conn:
            conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        http.stop()


# ---------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "AUTH\t1\tPLAIN\tservice=smtp\tsecured\trip=192.0.2.1\tresp=AGFsaWNlAHNlY3JldA==",
            "AUTH\t1\tPLAIN\tservice=smtp\tsecured\trip=192.0.2.1\tresp=<redacted>",
        ),
        (
            "AUTH\t1\tPLAIN\tservice=smtp\tRESP=AGFs",
            "AUTH\t1\tPLAIN\tservice=smtp\tRESP=<redacted>",
        ),
        ("AUTH\t2\tLOGIN\tservice=smtp\tresp", "AUTH\t2\tLOGIN\tservice=smtp\tresp"),
        ("CONT\t2\tc2VjcmV0", "CONT\t2\t<redacted>"),
        ("CONT\t2\t", "CONT\t2\t"),
        ("CONT\t2\ta\tb", "CONT\t2\t<redacted>"),
        ("OK\t1\tuser=alice\tpass=secret", "OK\t1\tuser=alice\tpass=<redacted>"),
        (
            # A FAIL's user may be a password typed as the name: fingerprinted.
            "FAIL\t1\tuser=alice\tcode=temp_fail",
            f"FAIL\t1\tuser={userlog.fingerprint('alice')}\tcode=temp_fail",
        ),
        ("COOKIE\t0123456789abcdef", "COOKIE\t<redacted>"),
        ("VERSION\t1\t2", "VERSION\t1\t2"),
        ("CPID\t42", "CPID\t42"),
        ("MECH\tPLAIN\tplaintext", "MECH\tPLAIN\tplaintext"),
        ("CONT 2 c2VjcmV0", "<unrecognised line, 15 characters redacted>"),
        ("c2VjcmV0cGFzc3dvcmQ=", "<unrecognised line, 20 characters redacted>"),
        ("AUTH\t1\tPLAIN\tforward_password=x", "AUTH\t1\tPLAIN\tforward_password=<redacted>"),
    ],
)
def test_redact_line(line: str, expected: str) -> None:
    assert events.redact_line(line) == expected


def test_tracer_never_lets_half_a_credential_through() -> None:
    """A read that ends inside ``resp=`` must not make the rest look like a line."""
    tracer = events.Tracer()
    line = b"AUTH\t1\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHNlY3JldC1wYXNzd29yZA==\n"
    for cut in range(1, len(line)):
        out = tracer.feed(5, "in", line[:cut]) + tracer.feed(5, "in", line[cut:])
        assert out == ["AUTH\t1\tPLAIN\tservice=smtp\tresp=<redacted>"], cut
    assert tracer.closed(5) == []


def test_tracer_flushes_partial_lines_redacted_on_close() -> None:
    tracer = events.Tracer()
    assert tracer.feed(9, "in", b"VERSION\t1\t2\nCONT\t1\tc2VjcmV0") == ["VERSION\t1\t2"]
    assert tracer.closed(9) == [("in", "CONT\t1\t<redacted>")]
    assert tracer.closed(9) == []


def test_tracer_drops_overlong_tails() -> None:
    tracer = events.Tracer()
    out = tracer.feed(3, "in", b"x" * (events.Tracer.MAX_LINE + 1))
    assert out == [f"<{events.Tracer.MAX_LINE + 1} bytes without a newline redacted>"]


# ---------------------------------------------------------------------- log events


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    try:
        with root_logging_restored():
            logs.configure("json", "debug", stream)
            yield stream
    finally:
        userlog.set_unknown_users(userlog.FINGERPRINT)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_authentication_event_fields(json_log: io.StringIO) -> None:
    info = RequestInfo(4, "LOGIN", "smtp", rip="192.0.2.9", lip="192.0.2.1")
    verdict = Verdict(Outcome.FAIL, "joe", Reason.PASSWORD_MISMATCH, original_user="Joe\x1b[31m")
    events.authentication_finished(17, info, verdict, 0.0123456789)
    first, fail2ban = _lines(json_log)
    assert first == {
        "cuid": 17,
        "request": 4,
        "mechanism": "LOGIN",
        "service": "smtp",
        "rip": "192.0.2.9",
        "lip": "192.0.2.1",
        "user": "Joe?[31m",
        "result": "fail",
        "reason": "password_mismatch",
        "duration": 0.012346,
        "event": "authentication",
        "level": "info",
        "logger": "authbridge.auth",
        "timestamp": first["timestamp"],
    }
    assert fail2ban["event"] == "passwd-file(joe,192.0.2.9): Password mismatch"
    assert fail2ban["level"] == "warning"


@pytest.mark.parametrize(
    ("reason", "line"),
    [
        (Reason.PASSWORD_MISMATCH, "passwd-file(u,192.0.2.9): Password mismatch"),
        # Names no store knows are logged as their fingerprint (they may be passwords).
        (Reason.USER_UNKNOWN, f"passwd-file({userlog.fingerprint('u')},192.0.2.9): unknown user"),
        (
            Reason.INVALID_USERNAME,
            f"passwd-file({userlog.fingerprint('u')},192.0.2.9): invalid user name",
        ),
        (Reason.POLICY, None),
        (Reason.NETWORK_DENIED, None),
        (Reason.MALFORMED, None),
        (Reason.SCHEME_NOT_AVAILABLE, None),
    ],
)
def test_fail2ban_line_only_for_guesses(
    json_log: io.StringIO, reason: Reason, line: str | None
) -> None:
    info = RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.9")
    events.authentication_finished(1, info, Verdict(Outcome.FAIL, "u", reason), 0.0)
    found = [e["event"] for e in _lines(json_log) if str(e["event"]).startswith("passwd-file(")]
    assert found == ([line] if line else [])


def test_fail2ban_user_cannot_forge_the_address(json_log: io.StringIO) -> None:
    """With unknown names logged as typed (the setting), the name is sanitised."""
    logs.configure("json", "debug", json_log, unknown_users="typed")
    info = RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.9")
    forged = 'x,203.0.113.1): Password mismatch" "a\\b c'
    verdict = Verdict(Outcome.FAIL, None, Reason.USER_UNKNOWN, original_user=forged)
    events.authentication_finished(1, info, verdict, 0.0)
    lines = [e["event"] for e in _lines(json_log) if str(e["event"]).startswith("passwd-file(")]
    assert lines == [
        "passwd-file(x?203.0.113.1???Password?mismatch???a?b?c,192.0.2.9): unknown user"
    ]


def test_no_rip_means_no_address_in_the_fail2ban_line(json_log: io.StringIO) -> None:
    info = RequestInfo(1, "PLAIN", "smtp")
    events.authentication_finished(1, info, Verdict(Outcome.FAIL, "u", Reason.USER_UNKNOWN), 0)
    line = f"passwd-file({userlog.fingerprint('u')}): unknown user"
    assert line in [e["event"] for e in _lines(json_log)]


def test_secret_keys_never_logged(json_log: io.StringIO) -> None:
    logs.get_logger("t").info("oops", password="hunter2", resp="aHVudGVyMg==", user="u")
    (event,) = _lines(json_log)
    assert event["password"] == "<redacted>" and event["resp"] == "<redacted>"
    assert event["user"] == "u"


def test_stdlib_logging_goes_through_the_same_renderer(json_log: io.StringIO) -> None:
    logging.getLogger("authbridge.x").warning("store %s: %d lines", "s", 3)
    (event,) = _lines(json_log)
    assert event["event"] == "store s: 3 lines" and event["level"] == "warning"


def test_debug_off_hides_the_trace(json_log: io.StringIO) -> None:
    logs.configure("json", "info", json_log)
    events.trace(1, "out", b"VERSION\t1\t2\n")
    assert json_log.getvalue() == ""
    logs.configure("json", "debug", json_log)
    events.trace(1, "out", b"VERSION\t1\t2\n")
    assert _lines(json_log)[0]["line"] == "VERSION\t1\t2"


def test_auto_format_is_console_on_a_tty_and_json_otherwise() -> None:
    master, slave = os.openpty()
    try:
        with root_logging_restored():
            with open(slave, "w", closefd=True) as tty:
                logs.configure("auto", "info", tty)
                logs.get_logger("t").info("hello", n=1)
                tty.flush()
                text = os.read(master, 4096).decode()
            assert "hello" in text and not text.lstrip().startswith("{")
            pipe = io.StringIO()
            logs.configure("auto", "info", pipe)
            logs.get_logger("t").info("hello", n=1)
            assert json.loads(pipe.getvalue())["n"] == 1
    finally:
        os.close(master)


def test_console_traceback_shows_no_locals() -> None:
    stream = io.StringIO()
    with root_logging_restored():
        logs.configure("console", "info", stream)
        secret_local = "hunter2-local"  # noqa: F841 - must not appear in the output
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logs.get_logger("t").exception("failed")
        text = stream.getvalue()
        assert "RuntimeError: boom" in text and "hunter2-local" not in text


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "unknown command: AUTH 1 PLAIN resp=AGFsaWNl",
            "unknown command: AUTH 1 PLAIN resp=<redacted>",
        ),
        ("unknown command: CONT 1 c2VjcmV0", "unknown command: CONT 1 <redacted>"),
        ("unknown command: CONT?1?c2VjcmV0", "unknown command: CONT?1?<redacted>"),
        ("bad line AUTH?1?PLAIN?RESP=AGFs?x=1", "bad line AUTH?1?PLAIN?RESP=<redacted>?x=1"),
        ("store loaded", "store loaded"),
    ],
)
def test_credential_shaped_text_is_scrubbed(
    json_log: io.StringIO, message: str, expected: str
) -> None:
    logs.get_logger("t").warning("protocol violation", reason=message)
    logs.get_logger("t").warning(message)
    first, second = _lines(json_log)
    assert first["reason"] == expected and second["event"] == expected
