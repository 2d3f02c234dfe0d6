"""OAUTHBEARER and XOAUTH2: parsing the client message, and RFC 7628's error status
(CONT with the JSON, the client's dummy answer releases the FAIL) in the session."""

from __future__ import annotations

import base64

import pytest

from authbridge.core.mechanisms import resolve
from authbridge.core.mechanisms.base import Challenge, Failure, VerifyToken
from authbridge.core.mechanisms.oauth import OAuthBearer, XOAuth2
from authbridge.core.session import Check, Finished, Send, SendDelayed, Session, SessionSettings
from authbridge.core.verdict import Outcome, Reason, Verdict

TOKEN = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"


def bearer(authzid: str = "user@example.org", token: bytes = TOKEN) -> bytes:
    header = f"n,a={authzid},".encode() if authzid else b"n,,"
    return header + b"\x01host=mx.example.org\x01port=587\x01auth=Bearer " + token + b"\x01\x01"


def test_oauthbearer_gives_the_token_and_the_authzid() -> None:
    assert OAuthBearer().initial(bearer()) == VerifyToken("user@example.org", TOKEN)
    assert OAuthBearer().initial(bearer("")) == VerifyToken("", TOKEN)
    assert OAuthBearer().initial(bearer("a=3Db=2Cc")) == VerifyToken("a=b,c", TOKEN)


def test_oauthbearer_without_initial_response_asks_with_an_empty_challenge() -> None:
    mech = OAuthBearer()
    assert mech.initial(None) == Challenge(b"")
    assert mech.step(bearer()) == VerifyToken("user@example.org", TOKEN)


@pytest.mark.parametrize(
    "data",
    [
        b"n,a=u,auth=Bearer x\x01\x01",  # no ^A after the GS2 header
        b"p=tls-unique,,\x01auth=Bearer x\x01\x01",  # channel binding
        b"x,,\x01auth=Bearer x\x01\x01",  # bad GS2 flag
        b"n,b=u,\x01auth=Bearer x\x01\x01",  # not a=
        b"n,a=u=,\x01auth=Bearer x\x01\x01",  # bad saslname escape
        b"n,,\x01auth=Bearer x\x01",  # not ended by ^A^A
        b"n,,\x01auth=Basic x\x01\x01",  # not a bearer token
        b"n,,\x01auth=Bearer \x01\x01",  # empty token
        b"n,,\x01auth=Bearer a b\x01\x01",  # blank inside
        b"n,,\x01host=x\x01\x01",  # no auth
        b"n,,\x01auth=Bearer x\x01auth=Bearer y\x01\x01",  # twice
        b"n,,\x01\x00auth=Bearer x\x01\x01",  # NUL
    ],
)
def test_malformed_oauthbearer_fails_in_the_mechanism(data: bytes) -> None:
    assert isinstance(OAuthBearer().initial(data), Failure)


@pytest.mark.parametrize(
    ("mech", "data", "named"),
    [
        (OAuthBearer, b"n,a=u@example.org,\x01host=x\x01\x01", "u@example.org"),
        (OAuthBearer, b"n,,\x01host=x\x01\x01", None),
        (OAuthBearer, b"n,a=u@example.org,\x01auth=Basic x\x01\x01", None),
        (XOAuth2, b"user=u@example.org\x01\x01", "u@example.org"),
        (XOAuth2, b"user=u@example.org\x01auth=Basic x\x01\x01", None),
    ],
)
def test_a_message_without_a_token_fails_with_the_named_user(
    mech: type[OAuthBearer | XOAuth2], data: bytes, named: str | None
) -> None:
    """As Dovecot 2.3: no ``auth`` at all fails after the name is taken (FAIL with
    ``user=``); an ``auth`` that is not a bearer token fails before it."""
    step = mech().initial(data)
    assert isinstance(step, Failure) and step.username == named


def test_error_statuses_are_dovecots() -> None:
    """Byte for byte what Dovecot 2.3.19 sends (tests/interop/test_oauth_dovecot.py)."""
    assert OAuthBearer.failure_status == b'{"status":"invalid_token"}'
    assert XOAuth2.failure_status == b'{"status":"401","schemes":"bearer","scope":"mail"}'


def test_xoauth2_gives_the_token_and_the_user() -> None:
    data = b"user=user@example.org\x01auth=Bearer " + TOKEN + b"\x01\x01"
    assert XOAuth2().initial(data) == VerifyToken("user@example.org", TOKEN)
    assert isinstance(XOAuth2().initial(b"auth=Bearer x\x01\x01"), Failure)
    assert isinstance(XOAuth2().initial(b"user=u\x01auth=Bearer x\x01"), Failure)


def _session() -> Session:
    settings = SessionSettings(mechanisms=resolve(["plain", "oauthbearer", "xoauth2"]), spid=1)
    session = Session(settings, cuid=1, cookie="0" * 32)
    session.receive(b"VERSION\t1\t2\nCPID\t9\n", 0.0)
    return session


def test_handshake_lists_the_oauth_mechanisms_as_plaintext() -> None:
    head = _session().handshake()
    assert b"MECH\tOAUTHBEARER\tplaintext\n" in head
    assert b"MECH\tXOAUTH2\tplaintext\n" in head


@pytest.mark.parametrize(
    ("mech", "data", "status"),
    [
        ("OAUTHBEARER", bearer(), OAuthBearer.failure_status),
        ("XOAUTH2", b"user=u\x01auth=Bearer t\x01\x01", XOAuth2.failure_status),
    ],
)
def test_refused_token_sends_the_error_status_then_fails_on_the_dummy_answer(
    mech: str, data: bytes, status: bytes | None
) -> None:
    session = _session()
    resp = base64.b64encode(data).decode()
    (check,) = session.receive(f"AUTH\t5\t{mech}\tservice=smtp\tresp={resp}\n".encode(), 1.0)
    assert isinstance(check, Check) and isinstance(check.credential, VerifyToken)
    refused = Verdict(Outcome.FAIL, None, Reason.INVALID_TOKEN, original_user="u")
    (cont,) = session.complete(check.ticket, 5, refused, 1.0)
    assert status is not None
    assert cont == Send(b"CONT\t5\t" + base64.b64encode(status) + b"\n")
    assert b'"status"' in status
    dummy = base64.b64encode(b"\x01").decode() if mech == "OAUTHBEARER" else ""
    actions = session.receive(f"CONT\t5\t{dummy}\n".encode(), 2.0)
    fail, finished = actions
    assert isinstance(fail, SendDelayed) and fail.data.startswith(b"FAIL\t5\t")
    assert isinstance(finished, Finished) and finished.verdict is refused
    assert session.in_flight == 0


def test_accepted_token_is_ok_at_once() -> None:
    session = _session()
    resp = base64.b64encode(bearer()).decode()
    (check,) = session.receive(f"AUTH\t1\tOAUTHBEARER\tservice=smtp\tresp={resp}\n".encode(), 0)
    assert isinstance(check, Check)
    ok, _ = session.complete(check.ticket, 1, Verdict(Outcome.OK, "user@example.org"), 0)
    assert ok == Send(b"OK\t1\tuser=user@example.org\n")


def test_temporary_failure_gets_no_error_status() -> None:
    session = _session()
    resp = base64.b64encode(bearer()).decode()
    (check,) = session.receive(f"AUTH\t1\tOAUTHBEARER\tservice=smtp\tresp={resp}\n".encode(), 0)
    assert isinstance(check, Check)
    actions = session.complete(check.ticket, 1, Verdict(Outcome.TEMPFAIL, None), 0)
    assert not any(isinstance(a, Send) and a.data.startswith(b"CONT") for a in actions)
