"""The sans-I/O session: handshake, request table, resp= rules, replies, violations."""

from __future__ import annotations

import pytest

from authbridge.core.mechanisms import resolve
from authbridge.core.mechanisms.base import NeedCredentials, VerifyPlain
from authbridge.core.session import (
    Check,
    Close,
    Finished,
    Send,
    SendDelayed,
    Session,
    SessionSettings,
    flatten,
)
from authbridge.core.verdict import Outcome, Reason, Verdict

HELLO = b"VERSION\t1\t0\nCPID\t42\n"
PLAIN_IR = "AHVzZXJ4AHNlY3JldA=="  # \0userx\0secret


def make(tempfail_disconnects: bool = False) -> Session:
    return Session(
        SessionSettings(
            mechanisms=resolve(["plain", "login", "cram-md5"]),
            spid=123,
            tempfail_disconnects=tempfail_disconnects,
        ),
        cuid=7,
        cookie="0" * 32,
    )


def ready(minor: int = 0) -> Session:
    session = make()
    assert session.receive(f"VERSION\t1\t{minor}\nCPID\t42\n".encode(), 0.0) == []
    return session


def test_handshake_is_dovecot_23_order_in_one_block() -> None:
    assert make().handshake() == (
        b"VERSION\t1\t2\n"
        b"MECH\tPLAIN\tplaintext\n"
        b"MECH\tLOGIN\tplaintext\n"
        b"MECH\tCRAM-MD5\tdictionary\tactive\n"
        b"SPID\t123\nCUID\t7\nCOOKIE\t" + b"0" * 32 + b"\nDONE\n"
    )


def test_version_cpid_and_auth_may_be_pipelined_in_one_packet() -> None:
    session = make()
    actions = session.receive(
        HELLO + f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0
    )
    (check,) = actions
    assert isinstance(check, Check)
    assert check.credential == VerifyPlain("userx", "", b"secret")
    assert check.info.service == "smtp"


@pytest.mark.parametrize(
    "first",
    [
        b"VERSION\t1\n",
        b"VERSION\t1\t0\tx\n",
        b"VERSION\tx\t0\n",
        b"VERSION 1 0\n",
        b"CPID\t42\n",
        b"VERSION\t2\t0\n",
        b"\n",
    ],
)
def test_a_bad_or_missing_version_line_closes(first: bytes) -> None:
    (action,) = make().receive(first, 0)
    assert isinstance(action, Close)


@pytest.mark.parametrize("second", [b"CPID\t0\n", b"CPID\tx\n", b"AUTH\t1\tPLAIN\tservice=smtp\n"])
def test_anything_but_a_nonzero_cpid_after_version_closes(second: bytes) -> None:
    (action,) = make().receive(b"VERSION\t1\t0\n" + second, 0)
    assert isinstance(action, Close)


@pytest.mark.parametrize(
    "line",
    [
        "AUTH\t1\tXYZ\tservice=smtp",
        "AUTH\t1\tPLAIN",
        "AUTH\t1\tPLAIN\tprotocol=smtp",
        "AUTH\t0\tPLAIN\tservice=smtp",
        "AUTH\tx\tPLAIN\tservice=smtp",
        f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\tsecured",
        "CONT\t1",
        "CONT\tx\tAAAA",
        "CANCEL\tx",
        "BOGUS\t1",
        "",
        "VERSION\t1\t0",
    ],
)
def test_dovecot_disconnect_rules(line: str) -> None:
    actions = ready().receive((line + "\n").encode(), 0)
    assert isinstance(actions[-1], Close)


def test_duplicate_id_in_flight_closes() -> None:
    session = ready()
    session.receive(b"AUTH\t1\tLOGIN\tservice=smtp\n", 0)
    assert isinstance(session.receive(b"AUTH\t1\tLOGIN\tservice=smtp\n", 0)[-1], Close)


def test_mechanism_name_is_case_insensitive() -> None:
    (send,) = ready().receive(b"AUTH\t1\tlogin\tservice=smtp\n", 0)
    assert send == Send(b"CONT\t1\tVXNlcm5hbWU6\n")


def test_empty_resp_from_minor_0_client_means_absent() -> None:
    (send,) = ready(minor=0).receive(b"AUTH\t1\tPLAIN\tservice=smtp\tresp=\n", 0)
    assert send == Send(b"CONT\t1\t\n")


def test_empty_resp_from_minor_2_client_is_an_empty_response_and_fails() -> None:
    actions = ready(minor=2).receive(b"AUTH\t1\tPLAIN\tservice=smtp\tresp=\n", 0)
    assert isinstance(actions[0], SendDelayed)
    assert actions[0].data == b"FAIL\t1\n"


def test_resp_equals_sign_is_an_empty_response_for_any_client() -> None:
    actions = ready(minor=0).receive(b"AUTH\t1\tPLAIN\tservice=smtp\tresp==\n", 0)
    assert isinstance(actions[0], SendDelayed)


def test_invalid_base64_fails_at_once_and_keeps_the_connection() -> None:
    session = ready()
    actions = session.receive(b"AUTH\t6\tPLAIN\tservice=smtp\tresp=%%%\n", 0)
    assert flatten(actions) == (
        b"FAIL\t6\tcode=invalid_base64\treason=Invalid base64 data in initial response\n"
    )
    assert not session.closed and session.in_flight == 0


def test_cont_for_unknown_id_says_timed_out() -> None:
    assert flatten(ready().receive(b"CONT\t99\tAAAA\n", 0)) == (
        b"FAIL\t99\treason=Authentication request timed out\n"
    )


def test_continuation_during_a_check_waits_for_the_check() -> None:
    # Dovecot checks before it reads the next line: the CONT finds the request finished.
    session = ready()
    (check,) = session.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert session.receive(b"CONT\t1\tAAAA\n", 0) == []
    actions = session.complete(check.ticket, 1, Verdict(Outcome.OK, "userx"))
    assert flatten(actions) == (
        b"OK\t1\tuser=userx\nFAIL\t1\treason=Authentication request timed out\n"
    )
    assert session.in_flight == 0


def test_login_exchange_and_invalid_base64_in_cont() -> None:
    session = ready()
    assert (
        flatten(session.receive(b"AUTH\t3\tLOGIN\tservice=smtp\n", 0)) == b"CONT\t3\tVXNlcm5hbWU6\n"
    )
    assert flatten(session.receive(b"CONT\t3\tdXNlcng=\n", 0)) == b"CONT\t3\tUGFzc3dvcmQ6\n"
    (check,) = session.receive(b"CONT\t3\tc2VjcmV0\n", 0)
    assert isinstance(check, Check) and check.credential == VerifyPlain("userx", "", b"secret")
    session.receive(b"AUTH\t4\tLOGIN\tservice=smtp\n", 0)
    assert flatten(session.receive(b"CONT\t4\t!!!\n", 0)) == (
        b"FAIL\t4\tcode=invalid_base64\treason=Invalid base64 data in continued response\n"
    )


def test_cram_md5_ignores_initial_response_and_splits_at_the_last_space() -> None:
    session = ready()
    (send,) = session.receive(b"AUTH\t1\tCRAM-MD5\tservice=smtp\tresp=eHh4\n", 0)
    assert isinstance(send, Send) and send.data.startswith(b"CONT\t1\t")
    response = b"user name 0123456789abcdef0123456789abcdef"
    import base64

    (check,) = session.receive(b"CONT\t1\t" + base64.b64encode(response) + b"\n", 0)
    assert isinstance(check, Check) and isinstance(check.credential, NeedCredentials)
    assert check.credential.username == "user name"


def test_ok_reply_carries_user_first_and_original_user_when_it_differs() -> None:
    session = ready()
    (check,) = session.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(check, Check)
    verdict = Verdict(
        Outcome.OK,
        "userx",
        original_user="UserX",
        fields=(("nologin", None),),
        had_store_fields=True,
    )
    actions = session.complete(check.ticket, 1, verdict)
    assert flatten(actions) == b"OK\t1\tuser=userx\tnologin\toriginal_user=UserX\n"
    assert isinstance(actions[-1], Finished)
    assert session.in_flight == 0


def test_hidden_only_store_fields_leave_an_empty_field_like_dovecot_23() -> None:
    session = ready()
    (check,) = session.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(check, Check)
    verdict = Verdict(Outcome.OK, "userx", had_store_fields=True, original_user="userx")
    assert flatten(session.complete(check.ticket, 1, verdict)) == b"OK\t1\tuser=userx\t\n"


def test_failures_are_delayed_and_free_the_id_at_once() -> None:
    session = ready()
    (check,) = session.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(check, Check)
    actions = session.complete(
        check.ticket, 1, Verdict(Outcome.FAIL, "userx", Reason.PASSWORD_MISMATCH)
    )
    assert isinstance(actions[0], SendDelayed) and actions[0].data == b"FAIL\t1\tuser=userx\n"
    assert session.in_flight == 0
    assert isinstance(
        session.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)[0], Check
    )


def test_nodelay_failure_is_sent_at_once_with_the_flag() -> None:
    session = ready()
    (check,) = session.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(check, Check)
    actions = session.complete(check.ticket, 1, Verdict(Outcome.FAIL, "userx", nodelay=True))
    assert actions[0] == Send(b"FAIL\t1\tuser=userx\tnodelay\n")


def test_tempfail_is_dovecot_fail_code_or_a_disconnect_by_setting() -> None:
    compat = ready()
    (check,) = compat.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(check, Check)
    actions = compat.complete(check.ticket, 1, Verdict(Outcome.TEMPFAIL, "userx"))
    assert isinstance(actions[0], SendDelayed)
    assert actions[0].data == b"FAIL\t1\tuser=userx\tcode=temp_fail\n"

    strict = make(tempfail_disconnects=True)
    strict.receive(HELLO, 0)
    (check,) = strict.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(check, Check)
    actions = strict.complete(check.ticket, 1, Verdict(Outcome.TEMPFAIL, "userx"))
    assert isinstance(actions[-1], Close) and strict.closed


def test_cancel_during_a_check_comes_too_late_and_a_stale_verdict_is_dropped() -> None:
    session = ready()
    (check,) = session.receive(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0)
    assert isinstance(check, Check)
    assert session.receive(b"CANCEL\t1\n", 0) == []
    ok = session.complete(check.ticket, 1, Verdict(Outcome.OK, "userx"))
    assert flatten(ok) == b"OK\t1\tuser=userx\n"
    assert session.complete(check.ticket, 1, Verdict(Outcome.OK, "userx")) == []


def test_many_requests_in_flight_are_answered_by_id_in_any_order() -> None:
    session = ready()
    checks = []
    for request_id in (5, 3, 9):
        (check,) = session.receive(
            f"AUTH\t{request_id}\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n".encode(), 0
        )
        checks.append(check)
    assert session.in_flight == 3
    for check in reversed(checks):
        assert isinstance(check, Check)
        out = flatten(session.complete(check.ticket, check.info.id, Verdict(Outcome.OK, "userx")))
        assert out == f"OK\t{check.info.id}\tuser=userx\n".encode()


def test_abandoned_requests_expire_silently() -> None:
    session = ready()
    session.receive(b"AUTH\t1\tLOGIN\tservice=smtp\n", 0)
    assert session.expire(100.0) == []
    (expired,) = session.expire(151.0)
    assert expired.id == 1 and session.in_flight == 0
    assert flatten(session.receive(b"CONT\t1\tdXNlcng=\n", 152.0)) == (
        b"FAIL\t1\treason=Authentication request timed out\n"
    )


def test_tab_escaped_parameters_are_unescaped() -> None:
    (check,) = ready().receive(
        f"AUTH\t1\tPLAIN\tservice=sm\x01ttp\trip=192.0.2.1\tsecured\tresp={PLAIN_IR}\n".encode(), 0
    )
    assert isinstance(check, Check)
    assert check.info.service == "sm\ttp" and check.info.rip == "192.0.2.1" and check.info.secured


def test_exim_rip_null_is_ignored() -> None:
    (check,) = ready().receive(
        f"AUTH\t1\tPLAIN\tservice=smtp\trip=NULL\tlip=NULL\tnologin\tresp={PLAIN_IR}\n".encode(), 0
    )
    assert isinstance(check, Check) and check.info.rip is None
