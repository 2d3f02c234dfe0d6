"""Property tests of :class:`Session` with mostly-valid, often-broken client streams.

Invariants, whatever the client sends and however it is chunked:

* no exception escapes ``receive`` or ``complete``;
* every emitted write is whole lines, each a well-formed server line;
* every request the session accepted ends in an answer (CONT/OK/FAIL for its id), or
  the client cancelled it, or the connection is closed — none is silently dropped;
* nothing is emitted after a Close.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from authbridge.core.mechanisms import resolve
from authbridge.core.session import (
    Check,
    Close,
    Finished,
    Send,
    SendDelayed,
    Session,
    SessionSettings,
)
from authbridge.core.verdict import Outcome, Reason, Verdict
from tests.fuzz.settings import FUZZ

IDS = st.integers(0, 6).map(str) | st.sampled_from(["", "x", "-1", "4294967296", "01"])
PARAMS = st.sampled_from(
    ["service=smtp", "service=imap", "secured", "secured=tls", "rip=192.0.2.1", "rip=junk",
     "lip=::1", "rport=25", "rport=99999", "no-penalty", "session=a\x01tb", "nologin",
     "valid-client-cert", "service"]
)  # fmt: skip
PAYLOAD = st.binary(max_size=60)
RESP = st.one_of(
    st.none(),
    st.just("resp="),
    st.just("resp=="),
    PAYLOAD.map(lambda b: "resp=" + base64.b64encode(b).decode()),
    st.builds(
        lambda u, p: "resp=" + base64.b64encode(b"\0" + u + b"\0" + p).decode(), PAYLOAD, PAYLOAD
    ),
    st.just("resp=!!notbase64"),
    # OAUTHBEARER / XOAUTH2 shapes, with a mutated token part.
    PAYLOAD.map(
        lambda b: "resp=" + base64.b64encode(b"n,a=u,\x01auth=Bearer " + b + b"\x01\x01").decode()
    ),
    PAYLOAD.map(
        lambda b: "resp=" + base64.b64encode(b"user=u\x01auth=Bearer " + b + b"\x01\x01").decode()
    ),
)
MECHS = st.sampled_from(
    ["PLAIN", "LOGIN", "CRAM-MD5", "plain", "cram-md5", "XOAUTH2", "OAUTHBEARER", "XOAUTH1", ""]
)

AUTH = st.builds(
    lambda i, m, p, r: "\t".join(["AUTH", i, m, *p, *([r] if r else [])]),
    IDS,
    MECHS,
    st.lists(PARAMS, max_size=4),
    RESP,
)
CONT = st.builds(
    lambda i, d: f"CONT\t{i}\t{d}",
    IDS,
    PAYLOAD.map(lambda b: base64.b64encode(b).decode()) | st.sampled_from(["", "!!", "a b"]),
)
CANCEL = IDS.map(lambda i: f"CANCEL\t{i}")
NOISE = st.text(max_size=40).map(lambda t: t.replace("\n", ""))
LINE = st.one_of(AUTH, AUTH, AUTH, CONT, CONT, CANCEL, NOISE)


@st.composite
def polite_lines(draw: st.DrawFn) -> list[str]:
    """A client that mostly follows the rules: distinct ids, known mechanisms, service=."""
    lines: list[str] = []
    for request_id in range(1, draw(st.integers(1, 12)) + 1):
        mech = draw(st.sampled_from(["PLAIN", "LOGIN", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2"]))
        params = ["service=smtp", *draw(st.lists(PARAMS, max_size=3))]
        resp = draw(RESP)
        lines.append("\t".join(["AUTH", str(request_id), mech, *params, *([resp] if resp else [])]))
        for _ in range(draw(st.integers(0, 2))):
            payload = base64.b64encode(draw(PAYLOAD)).decode()
            lines.append(f"CONT\t{request_id}\t{payload}")
        if draw(st.integers(0, 9)) == 0:
            lines.append(f"CANCEL\t{request_id}")
    return draw(st.permutations(lines))


HANDSHAKE = st.sampled_from(
    ["VERSION\t1\t2\nCPID\t42\n", "VERSION\t1\t1\nCPID\t7\n", "VERSION\t1\t2\nCPID\t0\n",
     "VERSION\t2\t0\n", "VERSION\t1\n", ""]
)  # fmt: skip

SERVER_LINE = re.compile(r"^(OK|FAIL|CONT)\t(\d+)(\t[^\t\n]*)*$")
VERDICTS = st.sampled_from(
    [
        Verdict(Outcome.OK, "user"),
        Verdict(Outcome.OK, "user", fields=(("x", "a\tb"),), had_store_fields=True),
        Verdict(Outcome.FAIL, "user", Reason.PASSWORD_MISMATCH),
        Verdict(Outcome.FAIL, None, Reason.USER_UNKNOWN, original_user="Wh\no"),
        Verdict(Outcome.FAIL, "user", Reason.POLICY, nodelay=True),
        Verdict(Outcome.FAIL, None, Reason.INVALID_TOKEN, original_user="u"),
        Verdict(Outcome.TEMPFAIL, "user", Reason.STORE_ERROR),
    ]
)


@dataclass
class Transcript:
    writes: list[bytes] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    closed: bool = False
    after_close: list[object] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def take(self, actions: Sequence[object]) -> None:
        for action in actions:
            if self.closed and not isinstance(action, Finished):
                self.after_close.append(action)
            if isinstance(action, Send | SendDelayed):
                self.writes.append(action.data)
                for line in action.data.decode("utf-8", "surrogateescape").splitlines():
                    self.answered.add(line.split("\t")[1] if "\t" in line else "")
            elif isinstance(action, Check):
                self.checks.append(action)
            elif isinstance(action, Close):
                self.closed = True


def _session(tempfail_disconnects: bool) -> Session:
    settings = SessionSettings(
        mechanisms=resolve(["plain", "login", "cram-md5", "oauthbearer", "xoauth2"]),
        spid=123,
        tempfail_disconnects=tempfail_disconnects,
    )
    return Session(settings, cuid=1, cookie="0" * 32)


@FUZZ
@given(
    handshake=HANDSHAKE,
    lines=st.lists(LINE, max_size=25) | polite_lines(),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    disconnect=st.booleans(),
    data=st.data(),
)
def test_session_invariants(
    handshake: str,
    lines: list[str],
    cuts: list[int],
    disconnect: bool,
    data: st.DataObject,
) -> None:
    session = _session(disconnect)
    hello = session.handshake()
    assert hello.endswith(b"DONE\n")
    stream = (handshake + "".join(line + "\n" for line in lines)).encode("utf-8", "surrogateescape")
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    out = Transcript()
    now = 0.0
    for chunk in chunks:
        now += 1.0
        out.take(session.receive(chunk, now))
        # Complete a random part of the checks now, in a random order.
        pending = list(out.checks)
        out.checks.clear()
        for check in data.draw(st.permutations(pending)):
            if data.draw(st.booleans()):
                out.take(session.complete(check.ticket, check.info.id, data.draw(VERDICTS)))
            else:
                out.checks.append(check)
    for check in out.checks:
        out.take(session.complete(check.ticket, check.info.id, data.draw(VERDICTS)))
    # A stale ticket is ignored.
    assert session.complete(10**9, 1, Verdict(Outcome.OK, "x")) == []

    for write in out.writes:
        assert write.endswith(b"\n")
        for raw in write[:-1].split(b"\n"):
            text = raw.decode("utf-8", "surrogateescape")
            assert SERVER_LINE.match(text), text
            assert "\r" not in text and "\x00" not in text
    assert not out.after_close, out.after_close
    if not out.closed:
        # Ids are numbers: "01" is request 1, and the reply says 1 (as Dovecot does).
        cancelled = {_id(line.split("\t")[1]) for line in lines if line.startswith("CANCEL\t")}
        answered = {_id(request_id) for request_id in out.answered}
        for line in lines:
            if line.startswith("AUTH\t"):
                request_id = _id(line.split("\t")[1])
                assert request_id in answered or request_id in cancelled, (line, out.answered)


def _id(text: str) -> str:
    return str(int(text)) if text.isascii() and text.isdigit() else text


@FUZZ
@given(noise=st.binary(max_size=500), cuts=st.lists(st.integers(0, 500), max_size=8))
def test_arbitrary_bytes_never_raise(noise: bytes, cuts: list[int]) -> None:
    session = _session(True)
    points = sorted({min(c, len(noise)) for c in cuts})
    actions: list[object] = []
    for a, b in zip([0, *points], [*points, len(noise)], strict=True):
        actions += session.receive(noise[a:b], 0.0)
    closes = [a for a in actions if isinstance(a, Close)]
    assert len(closes) <= 1
    if closes:
        assert actions.index(closes[0]) == len(actions) - 1
