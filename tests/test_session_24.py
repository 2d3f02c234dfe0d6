"""The Dovecot 2.4 protocol level, negotiated by the client's VERSION minor.

Clients at minor < 3 (Exim and Postfix send 0, doveadm 2.3 sends 2) get Dovecot 2.3's
behaviour, byte for byte; clients at minor >= 3 get 2.4's additions, and at minor >= 4
a CANCEL is confirmed with CANCELLED.
"""

from __future__ import annotations

import pytest

from authbridge.core.mechanisms import resolve
from authbridge.core.session import (
    Check,
    Close,
    RequestInfo,
    RequestInfo24,
    Send,
    SendDelayed,
    Session,
    SessionSettings,
)
from authbridge.core.verdict import Outcome, Reason, Verdict

PLAIN_IR = "AHVzZXJ4AHNlY3JldA=="  # \0userx\0secret


def ready(minor: int, protocol_24: bool = True) -> Session:
    settings = SessionSettings(
        mechanisms=resolve(["plain", "login", "cram-md5"]), spid=1, protocol_24=protocol_24
    )
    session = Session(
        settings,
        cuid=1,
        cookie="0" * 32,
    )
    assert session.receive(f"VERSION\t1\t{minor}\nCPID\t42\n".encode(), 0.0) == []
    return session


def auth(session: Session, params: str) -> Check:
    actions = session.receive(f"AUTH\t1\tPLAIN\t{params}\tresp={PLAIN_IR}\n".encode(), 0)
    (check,) = actions
    assert isinstance(check, Check)
    return check


@pytest.mark.parametrize("minor", [0, 1, 2])
def test_protocol_instead_of_service_closes_below_minor_3(minor: int) -> None:
    session = ready(minor)
    (action,) = session.receive(f"AUTH\t1\tPLAIN\tprotocol=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(action, Close) and session.closed


@pytest.mark.parametrize("minor", [3, 4, 9])
def test_protocol_names_the_service_from_minor_3(minor: int) -> None:
    check = auth(ready(minor), "protocol=submission")
    assert check.info.service == "submission"
    assert isinstance(check.info, RequestInfo24)


def test_service_still_works_at_minor_3_and_protocol_wins_over_it() -> None:
    assert auth(ready(3), "service=smtp").info.service == "smtp"
    assert auth(ready(3), "service=smtp\tprotocol=imap").info.service == "imap"


def test_neither_protocol_nor_service_closes_at_minor_3() -> None:
    session = ready(3)
    (action,) = session.receive(f"AUTH\t1\tPLAIN\trip=192.0.2.1\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(action, Close)


def test_a_23_level_request_is_the_plain_record() -> None:
    info = auth(ready(0), "service=smtp\ttransport=TLS\ttls_cipher=X").info
    assert type(info) is RequestInfo
    assert not info.secured, "transport= means nothing below minor 3"


def test_24_fields_are_parsed() -> None:
    info = auth(
        ready(3),
        "protocol=imap\ttransport=TLS\ttls_cipher=TLS_AES_256_GCM_SHA384\t"
        "tls_protocol=TLSv1.3\tcert_username=alice\tlocal_name=mail.example.org\t"
        "rip=192.0.2.7",
    ).info
    assert isinstance(info, RequestInfo24)
    assert (info.transport, info.tls_cipher, info.tls_protocol) == (
        "TLS",
        "TLS_AES_256_GCM_SHA384",
        "TLSv1.3",
    )
    assert (info.cert_username, info.local_name) == ("alice", "mail.example.org")
    assert info.rip == "192.0.2.7" and info.address is not None
    assert info.secured and info.secured_tls


@pytest.mark.parametrize(
    ("params", "secured", "tls"),
    [
        ("transport=TLS", True, True),
        ("transport=tls", True, True),
        ("transport=trusted", True, False),
        ("transport=insecure", False, False),
        ("secured=tls", True, True),
        ("secured", True, False),
        ("transport=insecure\tsecured", True, False),
        ("", False, False),
    ],
)
def test_secured_and_transport_at_minor_3(params: str, secured: bool, tls: bool) -> None:
    info = auth(ready(3), "protocol=smtp" + (f"\t{params}" if params else "")).info
    assert (info.secured, info.secured_tls) == (secured, tls)


def test_cancel_is_confirmed_from_minor_4_only() -> None:
    for minor in (0, 2, 3):
        session = ready(minor)
        session.receive(b"AUTH\t5\tPLAIN\tservice=smtp\n", 0)
        assert session.receive(b"CANCEL\t5\n", 0) == []
    session = ready(4)
    session.receive(b"AUTH\t5\tPLAIN\tservice=smtp\n", 0)
    assert session.receive(b"CANCEL\t5\n", 0) == [Send(b"CANCELLED\t5\n")]
    assert session.in_flight == 0
    # Dovecot 2.4.4 confirms a CANCEL of an id it does not know too.
    assert session.receive(b"CANCEL\t77\n", 0) == [Send(b"CANCELLED\t77\n")]
    (action,) = session.receive(b"CANCEL\tx\n", 0)
    assert isinstance(action, Close)


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (Reason.AUTHZ_REFUSED, b""),
        (Reason.NOLOGIN, b"\tcode=user_disabled"),
        (Reason.PASSWORD_MISMATCH, b""),
    ],
)
@pytest.mark.parametrize("minor", [0, 2, 3, 4])
def test_fail_codes_from_minor_3(reason: Reason, code: bytes, minor: int) -> None:
    session = ready(minor)
    check = auth(session, "service=smtp")
    actions = session.complete(check.ticket, 1, Verdict(Outcome.FAIL, "userx", reason))
    assert isinstance(actions[0], SendDelayed)
    expected = code if minor >= 3 else b""
    assert actions[0].data == b"FAIL\t1\tuser=userx" + expected + b"\n"


def test_tempfail_keeps_its_code_at_minor_3() -> None:
    session = ready(3)
    check = auth(session, "protocol=smtp")
    actions = session.complete(check.ticket, 1, Verdict(Outcome.TEMPFAIL, "userx"))
    assert isinstance(actions[0], SendDelayed)
    assert actions[0].data == b"FAIL\t1\tuser=userx\tcode=temp_fail\n"


def test_handshake_is_unchanged() -> None:
    assert ready(4).handshake().startswith(b"VERSION\t1\t2\nMECH\tPLAIN")


def test_compat_settings_keep_a_minor_4_client_at_dovecot_2_3_s_level() -> None:
    """--dovecot-compat (protocol_24 off): no CANCELLED, protocol= does not name the
    service, a 2.3 request record, as a real Dovecot 2.3 answers such a client."""
    session = ready(4, protocol_24=False)
    assert session.client_minor == 4 and session.level_minor == 2
    session.receive(b"AUTH\t1\tLOGIN\tservice=smtp\n", 0)
    assert session.receive(b"CANCEL\t1\n", 0) == []
    check = auth(session, "service=smtp\ttransport=TLS")
    assert type(check.info) is RequestInfo and not check.info.secured
    session = ready(4, protocol_24=False)
    (action,) = session.receive(f"AUTH\t1\tPLAIN\tprotocol=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(action, Close)
