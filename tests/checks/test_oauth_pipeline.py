"""Bearer tokens in the check pipeline: the policy gates and the penalty apply as for a
password, the validator's answer becomes the verdict (sync when no I/O is needed), and
the authzid must be the token's user."""

from __future__ import annotations

from typing import Any

import pytest

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.checks.oauth_result import OK, TokenResult, invalid, unavailable
from authbridge.checks.penalty import PenaltySettings, PenaltyTracker
from authbridge.checks.pipeline import CheckPipeline, Pending
from authbridge.checks.policy import PolicyGate
from authbridge.config import OAuthSettings, PolicyConfig
from authbridge.core.mechanisms.base import VerifyToken
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict


class FakeValidator:
    """Answers from a table; tokens in ``slow`` need the async path."""

    def __init__(self, answers: dict[bytes, TokenResult], slow: frozenset[bytes] = frozenset()):
        self.settings = OAuthSettings(jwks_url="http://x/")
        self.answers, self.slow = answers, slow
        self.async_calls = 0

    def validate_now(self, token: bytes) -> TokenResult | None:
        return None if token in self.slow else self.answers[token]

    async def validate(self, token: bytes) -> TokenResult:
        self.async_calls += 1
        return self.answers[token]


ANSWERS = {
    b"good": TokenResult(OK, user="Alice@Example.org"),
    b"expired": invalid("token expired"),
    b"down": unavailable("JWKS unavailable"),
}


def pipeline(validator: Any, **kwargs: Any) -> CheckPipeline:
    checks = CheckPipeline(Authenticator([], Hasher()), clock=lambda: 0.0, **kwargs)
    checks.oauth = validator
    return checks


def info(secured: bool = True) -> RequestInfo:
    return RequestInfo(id=1, mechanism="OAUTHBEARER", service="smtp", rip="192.0.2.7",
                       secured=secured)  # fmt: skip


def test_a_good_token_is_ok_at_once_with_the_tokens_user() -> None:
    result = pipeline(FakeValidator(ANSWERS)).run(info(), VerifyToken("", b"good"), 0.0)
    assert isinstance(result, Verdict) and result.ok
    assert result.user == "alice@example.org"  # normalised like any login name


@pytest.mark.parametrize(
    ("token", "authzid", "outcome", "reason"),
    [
        (b"expired", "", Outcome.FAIL, Reason.INVALID_TOKEN),
        (b"down", "", Outcome.TEMPFAIL, Reason.STORE_ERROR),
        (b"good", "bob@example.org", Outcome.FAIL, Reason.AUTHZ_REFUSED),
        (b"good", "Alice@Example.org", Outcome.OK, Reason.NONE),
    ],
)
def test_verdicts(token: bytes, authzid: str, outcome: Outcome, reason: Reason) -> None:
    result = pipeline(FakeValidator(ANSWERS)).run(info(), VerifyToken(authzid, token), 0.0)
    assert isinstance(result, Verdict)
    assert (result.outcome, result.reason) == (outcome, reason)


@pytest.mark.parametrize(
    ("token", "authzid", "user"),
    [
        (b"expired", "Bob@Example.org", "bob@example.org"),
        (b"expired", "", None),
        (b"good", "Bob@Example.org", "bob@example.org"),
    ],
)
def test_a_failure_names_the_user_the_client_named(
    token: bytes, authzid: str, user: str | None
) -> None:
    """As Dovecot's oauth2 passdb: ``FAIL user=<the name given>``, never the token's user."""
    result = pipeline(FakeValidator(ANSWERS)).run(info(), VerifyToken(authzid, token), 0.0)
    assert isinstance(result, Verdict) and result.outcome is Outcome.FAIL
    assert result.user == user
    assert result.original_user == (authzid or None)


def test_authzid_check_can_be_turned_off() -> None:
    validator = FakeValidator(ANSWERS)
    validator.settings = OAuthSettings(jwks_url="http://x/", check_authzid=False)
    result = pipeline(validator).run(info(), VerifyToken("bob@example.org", b"good"), 0.0)
    assert isinstance(result, Verdict) and result.ok


async def test_io_goes_through_pending() -> None:
    validator = FakeValidator(ANSWERS, slow=frozenset({b"good"}))
    result = pipeline(validator).run(info(), VerifyToken("", b"good"), 0.0)
    assert isinstance(result, Pending)
    verdict = await result.wait()
    assert isinstance(verdict, Verdict) and verdict.ok and validator.async_calls == 1


def test_tokens_need_a_secured_session_like_passwords() -> None:
    checks = pipeline(FakeValidator(ANSWERS), policy=PolicyGate(PolicyConfig()))
    result = checks.run(info(secured=False), VerifyToken("", b"good"), 0.0)
    assert isinstance(result, Verdict) and result.reason is Reason.PLAINTEXT_INSECURE


def test_oauth_removed_by_a_reload_is_a_temporary_failure() -> None:
    result = pipeline(None).run(info(), VerifyToken("", b"good"), 0.0)
    assert isinstance(result, Verdict) and result.outcome is Outcome.TEMPFAIL


def test_bad_tokens_raise_the_penalty_and_a_replayed_one_counts_once() -> None:
    penalty = PenaltyTracker(PenaltySettings(steps=(1.0, 2.0), spraying=False))
    checks = pipeline(FakeValidator(ANSWERS | {b"other": invalid("bad signature")}),
                      penalty=penalty)  # fmt: skip
    for _ in range(3):
        checks.run(info(), VerifyToken("", b"expired"), 0.0)
    assert penalty.delay_of(penalty.key("192.0.2.7", info().address), 0.0) == 1.0
    result = checks.run(info(), VerifyToken("", b"other"), 0.0)
    assert isinstance(result, Pending)  # a new wrong token: the address now waits
    result.close()
