"""The direct JSON paths of the per-request events write what structlog's chain writes.

``logs.request_event`` and the fixed-schema renderer of the ``authentication`` event
(``logs.authentication_event``) skip the processor chain for speed; an operator's log
shipper, fail2ban and the tests elsewhere read one line shape, so the paths are run on
the same events and compared key for key, value for value, in order.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.observability import events, logs, userlog
from tests.support import root_logging_restored

#: isoformat() leaves the fraction out when it is exactly zero, on both paths.
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")

values = st.one_of(
    st.none(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["resp=aHVudGVyMg==", "CONT\t7\tc2VjcmV0", "pässwörd€", "a\tb\nc"]),
)
field_names = st.sampled_from(
    ["cuid", "request", "user", "rip", "service", "password", "resp", "note", "secret"]
)


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    try:
        with root_logging_restored():
            logs.configure("json", "info", stream)
            yield stream
    finally:
        structlog.contextvars.clear_contextvars()


def _both(stream: io.StringIO, fields: dict[str, Any], level: str = "info") -> tuple[str, str]:
    """The line of the processor chain and the line of the direct path, in that order."""
    stream.seek(0)
    stream.truncate()
    getattr(logs.get_logger("authbridge.parity"), level)("authentication", **fields)
    logs.request_event(None, "authbridge.parity", level, "authentication", **dict(fields))
    chain, direct = stream.getvalue().splitlines()
    return chain, direct


def _same_but_time(chain: str, direct: str) -> None:
    chain_items = list(json.loads(chain).items())
    direct_items = list(json.loads(direct).items())
    assert [k for k, _ in chain_items] == [k for k, _ in direct_items]
    for (key, a), (_, b) in zip(chain_items, direct_items, strict=True):
        if key == "timestamp":
            assert TIMESTAMP.match(a) and TIMESTAMP.match(b)
        else:
            assert a == b, key
    # Byte for byte too, once the two clocks are made equal.
    stamp = json.loads(chain)["timestamp"]
    assert direct.replace(json.loads(direct)["timestamp"], stamp) == chain


@settings(deadline=None)  # a loaded shared machine is not a failure
@given(st.dictionaries(field_names, values, max_size=6))
def test_direct_json_matches_the_chain(fields: dict[str, Any]) -> None:
    stream = io.StringIO()
    with root_logging_restored():
        logs.configure("json", "info", stream)
        _same_but_time(*_both(stream, fields))


def test_warning_lines_match_too(json_stream: io.StringIO) -> None:
    chain, direct = _both(json_stream, {"cuid": 1, "request": 2}, "warning")
    _same_but_time(chain, direct)
    assert json.loads(direct)["level"] == "warning"


def test_context_variables_land_where_the_chain_puts_them(json_stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(worker=3, user="from-context")
    chain, direct = _both(json_stream, {"cuid": 1, "user": "joe"})
    _same_but_time(chain, direct)
    assert json.loads(direct)["worker"] == 3 and json.loads(direct)["user"] == "joe"


def test_secrets_are_redacted_on_the_direct_path(json_stream: io.StringIO) -> None:
    chain, direct = _both(json_stream, {"password": "hunter2", "user": "resp=aHVudGVyMg=="})
    _same_but_time(chain, direct)
    assert "hunter2" not in direct and "aHVudGVyMg" not in direct


def test_authentication_event_takes_the_direct_path_for_json(json_stream: io.StringIO) -> None:
    """The server's event really goes through the direct path (and still reads right)."""
    calls: list[str] = []
    direct = logs._direct
    assert direct is not None
    real = direct

    class Spy:
        def emit(self, name: str, level: str, event: str, fields: dict[str, Any]) -> None:
            calls.append(event)
            real.emit(name, level, event, fields)

        def authentication(self, name: str, values: tuple[Any, ...]) -> bool:
            calls.append("authentication")
            return real.authentication(name, values)

    logs._direct = Spy()  # type: ignore[assignment]
    try:
        info = RequestInfo(4, "PLAIN", "smtp", rip="192.0.2.9")
        events.authentication_finished(2, info, Verdict(Outcome.OK, "joe", Reason.NONE), 0.5)
        events.authentication_finished(
            3, info, Verdict(Outcome.FAIL, "joe", Reason.PASSWORD_MISMATCH), 0.5
        )
    finally:
        logs._direct = direct
    assert calls == [
        "authentication",
        "authentication",
        "passwd-file(joe,192.0.2.9): Password mismatch",
    ]
    ok, fail, fail2ban = (json.loads(line) for line in json_stream.getvalue().splitlines())
    assert ok["user"] == "joe" and ok["result"] == "ok" and fail["result"] == "fail"
    assert fail2ban["level"] == "warning" and fail2ban["logger"] == "authbridge.auth"


def test_console_format_keeps_the_chain() -> None:
    stream = io.StringIO()
    with root_logging_restored():
        logs.configure("console", "info", stream)
        assert logs._direct is None
        info = RequestInfo(4, "PLAIN", "smtp", rip="192.0.2.9")
        events.authentication_finished(2, info, Verdict(Outcome.OK, "joe", Reason.NONE), 0.5)
        text = stream.getvalue()
        assert "authentication" in text and not text.lstrip().startswith("{")


def test_nothing_is_written_below_the_level(json_stream: io.StringIO) -> None:
    logs.configure("json", "warning", json_stream)
    info = RequestInfo(4, "PLAIN", "smtp", rip="192.0.2.9")
    events.authentication_finished(2, info, Verdict(Outcome.OK, "joe", Reason.NONE), 0.5)
    events.authentication_aborted(2, info, "client_disconnected")
    assert json_stream.getvalue() == ""


def test_fingerprinted_names_are_the_same_on_both_paths(json_stream: io.StringIO) -> None:
    """An unknown name (maybe a password) becomes one fingerprint, whichever path writes it."""
    info = RequestInfo(4, "LOGIN", "smtp", rip="192.0.2.9")
    verdict = Verdict(Outcome.FAIL, None, Reason.INVALID_USERNAME, original_user="hunter2 pw")
    events.authentication_finished(3, info, verdict, 0.5)
    direct = logs._direct
    logs._direct = None  # the processor chain, as for the console format
    try:
        events.authentication_finished(3, info, verdict, 0.5)
    finally:
        logs._direct = direct
    lines = json_stream.getvalue().splitlines()
    assert len(lines) == 4
    for fast, chain in zip(lines[:2], lines[2:], strict=True):
        _same_but_time(chain, fast)
    assert "hunter2" not in json_stream.getvalue()
    fingerprint = userlog.fingerprint("hunter2 pw")
    assert json.loads(lines[0])["user"] == fingerprint
    assert (
        json.loads(lines[1])["event"] == f"passwd-file({fingerprint},192.0.2.9): invalid user name"
    )


# ---------------------------------------------------------------------- fixed renderer

auth_texts = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["PLAIN", "contact@example.org", "resp=aHVudGVyMg==", "CONT\t7\tc2Vj"]),
)
auth_values = st.tuples(
    st.integers(0, 2**40),
    st.integers(0, 2**32),
    auth_texts,
    auth_texts,
    auth_texts,
    auth_texts,
    auth_texts,
    st.sampled_from(["ok", "fail", "aborted"]),
    st.sampled_from(["none", "password_mismatch", "client_disconnected"]),
    st.one_of(st.none(), st.floats(0, 20), st.integers(0, 10)),
)


def _chain_and_fixed(stream: io.StringIO, values: tuple[Any, ...]) -> tuple[str, str]:
    stream.seek(0)
    stream.truncate()
    fields = dict(zip(logs.AUTH_FIELDS, values, strict=True))
    logs.get_logger("authbridge.auth").info("authentication", **fields)
    logs.authentication_event(None, "authbridge.auth", *values)
    chain, fixed = stream.getvalue().splitlines()
    return chain, fixed


@settings(deadline=None)
@given(auth_values)
def test_fixed_renderer_matches_the_chain(values: tuple[Any, ...]) -> None:
    stream = io.StringIO()
    with root_logging_restored():
        logs.configure("json", "info", stream)
        _same_but_time(*_chain_and_fixed(stream, values))


def test_fixed_renderer_writes_the_usual_event_itself(json_stream: io.StringIO) -> None:
    """The common event takes the fixed path (not a fallback), and reads the same."""
    assert logs._direct is not None
    values = (3, 9, "PLAIN", "smtp", "192.0.2.9", None, "joe", "ok", "none", 0.000123)
    assert logs._direct.authentication("authbridge.auth", values)
    json_stream.seek(0)
    json_stream.truncate()
    _same_but_time(*_chain_and_fixed(json_stream, values))


@pytest.mark.parametrize(
    "context",
    [{"worker": 3}, {"worker": 3, "slot": "b"}, {"user": "ctx"}, {"level": "x"}, {"pass": "s"}],
)
def test_fixed_renderer_and_context_variables(
    json_stream: io.StringIO, context: dict[str, Any]
) -> None:
    structlog.contextvars.bind_contextvars(**context)
    values = (3, 9, "PLAIN", "smtp", "192.0.2.9", "192.0.2.1", "joe", "ok", "none", 0.5)
    _same_but_time(*_chain_and_fixed(json_stream, values))


def test_fixed_renderer_redacts_like_the_chain(json_stream: io.StringIO) -> None:
    values = (3, 9, "PLAIN", "smtp", None, None, "resp=aHVudGVyMg==", "fail", "none", 0.5)
    chain, fixed = _chain_and_fixed(json_stream, values)
    _same_but_time(chain, fixed)
    assert "aHVudGVyMg" not in fixed


def test_console_format_renders_the_event_as_the_chain_does() -> None:
    """Console lines of the authentication event are the chain's, field for field."""
    stream = io.StringIO()
    with root_logging_restored():
        logs.configure("console", "info", stream)
        values = (3, 9, "PLAIN", "smtp", "192.0.2.9", None, "joe", "ok", "none", 0.5)
        fields = dict(zip(logs.AUTH_FIELDS, values, strict=True))
        logs.get_logger("authbridge.auth").info("authentication", **fields)
        logs.authentication_event(logs.get_logger("authbridge.auth"), "authbridge.auth", *values)
        chain, event = stream.getvalue().splitlines()
    stamp = re.compile(r"^\S+ ")
    assert stamp.sub("", chain) == stamp.sub("", event)
    assert "user=joe" in event and "authentication" in event
