"""Reply lines, built in one place (issue #16 item 6): exact bytes on the wire."""

from __future__ import annotations

from authbridge.core import replies
from authbridge.core.verdict import Outcome, Reason, Verdict


def test_handshake() -> None:
    got = replies.handshake_lines(1, 2, [("PLAIN", ("plaintext",)), ("X", ())], 7, 9, "ab")
    assert got == (
        b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tX\nSPID\t7\nCUID\t9\nCOOKIE\tab\nDONE\n"
    )


def test_ok_with_fields_and_original_user() -> None:
    verdict = Verdict(
        Outcome.OK,
        "joe",
        Reason.NONE,
        fields=(("quota", "1\tG"), ("nodelay", None)),
        had_store_fields=True,
        original_user="Joe",
    )
    assert (
        replies.ok_line(3, verdict)
        == b"OK\t3\tuser=joe\tquota=1\x01tG\tnodelay\toriginal_user=Joe\n"
    )


def test_fail_lines() -> None:
    plain = Verdict(Outcome.FAIL, "joe", Reason.PASSWORD_MISMATCH)
    assert replies.fail_line(4, plain) == b"FAIL\t4\tuser=joe\n"
    temp = Verdict(Outcome.TEMPFAIL, None, Reason.STORE_ERROR, original_user="x", nodelay=True)
    assert replies.fail_line(5, temp) == (
        b"FAIL\t5\tuser=x\tnodelay\tcode=temp_fail\toriginal_user=x\n"
    )
    hidden = Verdict(Outcome.FAIL, "joe", Reason.PASSWORD_MISMATCH, had_store_fields=True)
    assert replies.fail_line(6, hidden) == b"FAIL\t6\tuser=joe\t\n"


def test_immediate_fails_and_cont() -> None:
    assert replies.fail_reason_line(1, replies.TIMED_OUT) == (
        b"FAIL\t1\treason=Authentication request timed out\n"
    )
    assert replies.fail_reason_line(2, "bad", replies.INVALID_BASE64) == (
        b"FAIL\t2\tcode=invalid_base64\treason=bad\n"
    )
    assert replies.cont_line(3, b"\x00a") == b"CONT\t3\tAGE=\n"
    assert replies.TEMP_FAIL in replies.FAIL_CODES and replies.AUTHZ_FAIL in replies.FAIL_CODES
