"""Issue #15 item 4, in process: names no store knows are logged as a keyed fingerprint.

The end-to-end proof (a real daemon, passwords typed as user names, every log line
searched) is in ``tests/policy/test_passwords_as_user_names.py``; here each piece is
pinned down: the fingerprint's shape, which verdicts count as a known user, the
authentication event, the fail2ban line, the debug trace and the setting.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.config import ConfigError, parse_config
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.observability import events, logs, userlog
from authbridge.passdb.base import StoreUnavailable
from tests.support import root_logging_restored

FINGERPRINT = re.compile(r"^#[0-9a-f]{8}/\d+$")
PASSWORD = "Tr0ub4dor&3-as-a-name"
INFO = RequestInfo(7, "LOGIN", "smtp", rip="192.0.2.9")

#: Verdicts after which a store had found the user (its name is a real login name).
STORE_FOUND = {
    Reason.PASSWORD_MISMATCH,
    Reason.SCHEME_NOT_AVAILABLE,
    Reason.FORCED_FAIL,
    Reason.BROKEN_HASH,
    Reason.NETWORK_DENIED,
    Reason.NOLOGIN,
}


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


# ---------------------------------------------------------------------- the fingerprint


def test_fingerprint_shape_and_stability() -> None:
    fp = userlog.fingerprint(PASSWORD)
    assert FINGERPRINT.match(fp), fp
    assert fp.endswith(f"/{len(PASSWORD)}")
    assert userlog.fingerprint(PASSWORD) == fp  # the same name, the same fingerprint
    assert userlog.fingerprint(PASSWORD + "x")[:9] != fp[:9]
    assert PASSWORD not in fp
    # Any text at all, including what no UTF-8 encoder takes as is.
    for name in ("", "\x00\x01\t\n", "\udcae\ud800", "é" * 300):
        assert FINGERPRINT.match(userlog.fingerprint(name))
    assert userlog.fingerprint("é" * 300).endswith("/300")


def test_fingerprint_key_is_per_process() -> None:
    """Another process fingerprints the same name differently: the key is never shared,
    so a fingerprint cannot be reproduced (and a short name guessed) from outside."""
    code = "from authbridge.observability import userlog; print(userlog.fingerprint('same-name'))"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    assert FINGERPRINT.match(other)
    assert other != userlog.fingerprint("same-name")


def test_setting_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="fingerprint or typed"):
        userlog.set_unknown_users("hashed")


# ---------------------------------------------------------------------- which names are known


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("outcome", list(Outcome))
def test_only_names_a_store_found_count_as_known(outcome: Outcome, reason: Reason) -> None:
    known = events.known_user(Verdict(outcome, "u", reason))
    assert known == (outcome is Outcome.OK or reason in STORE_FOUND)


# ---------------------------------------------------------------------- the events


@pytest.mark.parametrize(
    ("verdict", "fail2ban_words"),
    [
        (Verdict(Outcome.FAIL, PASSWORD, Reason.USER_UNKNOWN), "unknown user"),
        (
            Verdict(Outcome.FAIL, None, Reason.INVALID_USERNAME, original_user=PASSWORD),
            "invalid user name",
        ),
        (
            Verdict(Outcome.FAIL, PASSWORD.lower(), Reason.USER_UNKNOWN, original_user=PASSWORD),
            "unknown user",
        ),
        (Verdict(Outcome.FAIL, PASSWORD, Reason.POLICY), None),
        (Verdict(Outcome.FAIL, PASSWORD, Reason.AUTHZ_REFUSED, original_user=PASSWORD), None),
        (Verdict(Outcome.FAIL, PASSWORD, Reason.MALFORMED, original_user=PASSWORD), None),
        (Verdict(Outcome.TEMPFAIL, PASSWORD, Reason.STORE_ERROR), None),
    ],
)
def test_unknown_names_are_fingerprinted(
    json_log: io.StringIO, verdict: Verdict, fail2ban_words: str | None
) -> None:
    events.authentication_finished(3, INFO, verdict, 0.01)
    lines = _lines(json_log)
    fp = userlog.fingerprint(PASSWORD)  # the name as typed, before normalising
    assert lines[0]["event"] == "authentication" and lines[0]["user"] == fp
    if fail2ban_words:
        assert lines[1]["event"] == f"passwd-file({fp},192.0.2.9): {fail2ban_words}"
    assert len(lines) == (2 if fail2ban_words else 1)
    assert PASSWORD not in json_log.getvalue()
    assert PASSWORD.lower() not in json_log.getvalue()


@pytest.mark.parametrize(
    "verdict",
    [
        Verdict(Outcome.OK, "joe", Reason.NONE, original_user="Joe"),
        Verdict(Outcome.FAIL, "joe", Reason.PASSWORD_MISMATCH, original_user="Joe"),
        Verdict(Outcome.FAIL, "joe", Reason.FORCED_FAIL, original_user="Joe"),
        Verdict(Outcome.TEMPFAIL, "joe", Reason.BROKEN_HASH, original_user="Joe"),
    ],
)
def test_known_users_are_logged_as_typed(json_log: io.StringIO, verdict: Verdict) -> None:
    events.authentication_finished(3, INFO, verdict, 0.01)
    lines = _lines(json_log)
    assert lines[0]["user"] == "Joe"
    if verdict.reason is Reason.PASSWORD_MISMATCH:
        assert lines[1]["event"] == "passwd-file(joe,192.0.2.9): Password mismatch"


def test_typed_setting_restores_the_name(json_log: io.StringIO) -> None:
    logs.configure("json", "debug", json_log, unknown_users="typed")
    assert userlog.unknown_users() == userlog.TYPED
    verdict = Verdict(Outcome.FAIL, None, Reason.INVALID_USERNAME, original_user=PASSWORD)
    events.authentication_finished(3, INFO, verdict, 0.01)
    event, fail2ban = _lines(json_log)
    assert event["user"] == PASSWORD
    assert fail2ban["event"] == "passwd-file(Tr0ub4dor&3-as-a-name,192.0.2.9): invalid user name"
    assert events.redact_line(f"FAIL\t1\tuser={PASSWORD}") == f"FAIL\t1\tuser={PASSWORD}"
    # A later configure without the setting is back to fingerprints.
    logs.configure("json", "debug", json_log)
    assert userlog.unknown_users() == userlog.FINGERPRINT


def test_aborted_requests_carry_no_name(json_log: io.StringIO) -> None:
    events.authentication_aborted(3, INFO, "client_disconnected")
    (event,) = _lines(json_log)
    assert event["user"] is None and event["result"] == "aborted"


def test_console_lines_fingerprint_too() -> None:
    stream = io.StringIO()
    try:
        with root_logging_restored():
            logs.configure("console", "info", stream)
            verdict = Verdict(Outcome.FAIL, PASSWORD, Reason.USER_UNKNOWN)
            events.authentication_finished(3, INFO, verdict, 0.01)
    finally:
        userlog.set_unknown_users(userlog.FINGERPRINT)
    text = stream.getvalue()
    assert PASSWORD not in text
    assert f"passwd-file({userlog.fingerprint(PASSWORD)},192.0.2.9): unknown user" in text


# ---------------------------------------------------------------------- the debug trace


@pytest.mark.parametrize(
    ("line", "names"),
    [
        (f"FAIL\t1\tuser={PASSWORD}", [PASSWORD]),
        (
            f"FAIL\t1\tuser={PASSWORD.lower()}\toriginal_user={PASSWORD}",
            [PASSWORD.lower(), PASSWORD],
        ),
        (f"FAIL\t1\tuser={PASSWORD}\tcode=temp_fail", [PASSWORD]),
        ("FAIL\t1\tuser=a\x01tb", ["a\tb"]),  # fingerprint of the unescaped name
    ],
)
def test_trace_fingerprints_fail_user_fields(line: str, names: list[str]) -> None:
    redacted = events.redact_line(line)
    for name in names:
        assert f"={userlog.fingerprint(name)}" in redacted
    assert PASSWORD not in redacted and PASSWORD.lower() not in redacted


def test_trace_keeps_ok_user_fields() -> None:
    """An OK names a user a store found."""
    assert events.redact_line("OK\t1\tuser=joe\toriginal_user=Joe") == (
        "OK\t1\tuser=joe\toriginal_user=Joe"
    )


def test_tracer_fingerprints_fail_lines_cut_anywhere() -> None:
    line = f"FAIL\t4\tuser={PASSWORD}\n".encode()
    for cut in range(1, len(line)):
        tracer = events.Tracer()
        out = tracer.feed(1, "out", line[:cut]) + tracer.feed(1, "out", line[cut:])
        assert out == [f"FAIL\t4\tuser={userlog.fingerprint(PASSWORD)}"], cut
        # A connection that closes mid-line: the partial line is still fingerprinted
        # (a cut name gives another fingerprint, never the name).
        tracer.feed(2, "out", line[:cut])
        assert all(PASSWORD not in text for _, text in tracer.closed(2))


# ---------------------------------------------------------------------- configuration


def test_config_key() -> None:
    assert parse_config("").log.unknown_users == "fingerprint"
    typed = parse_config('[log]\nunknown_users = "typed"\n')
    assert typed.log.unknown_users == "typed"
    with pytest.raises(ConfigError, match="unknown_users"):
        parse_config('[log]\nunknown_users = "clear"\n')


# ---------------------------------------------------------------------- gaps in other files


class _DownStore:
    """A store whose backend is down (an SQL server gone): no name is confirmed."""

    name = "down"

    async def lookup(self, user: str, info: object = None) -> object:
        raise StoreUnavailable("down: connection refused")


async def test_store_outage_does_not_log_the_typed_name(json_log: io.StringIO) -> None:
    name = "hunter2-typed-as-the-name"
    auth = Authenticator([_DownStore()], Hasher())  # type: ignore[list-item]
    verdict = await auth.check(INFO, VerifyPlain(name, "", b"x"))
    assert isinstance(verdict, Verdict) and verdict.outcome is Outcome.TEMPFAIL
    assert "store unavailable" in json_log.getvalue()  # the line exists...
    assert name not in json_log.getvalue()  # ...without the name
