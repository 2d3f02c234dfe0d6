"""Dovecot's passdb chain (``--dovecot-config``): the rules alone, then through the
pipeline with stores that know, do not know, or cannot answer."""

from __future__ import annotations

from typing import Any

import pytest

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.chain import ChainRun, Result
from authbridge.checks.hashing import Hasher
from authbridge.config import PassdbRules
from authbridge.core.mechanisms.base import NeedCredentials, VerifyPlain
from authbridge.core.session import CredentialsFound, RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.passdb.base import StoreUnavailable
from tests.support.memory_store import MemoryStore

OK, MISMATCH, UNKNOWN, INTERNAL = Result.OK, Result.MISMATCH, Result.UNKNOWN, Result.INTERNAL


def run(*rules: PassdbRules, mechanism: str = "PLAIN", user: str = "ann") -> ChainRun:
    return ChainRun([(object(), r) for r in rules], mechanism, user)  # type: ignore[misc]


def walk(chain: ChainRun, results: list[Result]) -> tuple[list[int], Result]:
    """The passdbs asked, feeding ``results`` in turn, and the chain's answer."""
    asked = []
    index = chain.first()
    result = Result.UNKNOWN
    answers = iter(results)
    while index is not None:
        asked.append(index)
        index, result = chain.after(index, next(answers))
    return asked, result


D = PassdbRules()


@pytest.mark.parametrize(
    ("rules", "results", "asked", "answer"),
    [
        ((D, D), [MISMATCH, OK], [0, 1], OK),  # a failure continues by default
        ((D, D), [OK], [0], OK),  # a success returns
        ((D, D), [MISMATCH, UNKNOWN], [0, 1], UNKNOWN),  # the last one's result
        ((D, D), [INTERNAL, OK], [0, 1], OK),
        ((D, D), [INTERNAL, MISMATCH], [0, 1], INTERNAL),  # it may have had the password
        ((PassdbRules(result_failure="return-fail"), D), [MISMATCH], [0], MISMATCH),
        ((PassdbRules(result_internalfail="return"), D), [INTERNAL], [0], INTERNAL),
        ((PassdbRules(result_failure="continue-ok"), D), [MISMATCH, UNKNOWN], [0, 1], OK),
        ((PassdbRules(result_success="continue-fail"), D), [OK, OK], [0, 1], OK),
        ((PassdbRules(result_success="continue"), D), [OK, UNKNOWN], [0, 1], UNKNOWN),
        ((PassdbRules(result_success="return"),), [OK], [0], Result.REFUSED),
        ((D, PassdbRules(skip="authenticated")), [MISMATCH, OK], [0, 1], OK),
        (
            (PassdbRules(result_success="continue"), PassdbRules(skip="authenticated")),
            [OK],
            [0],
            Result.REFUSED,
        ),
        ((D, PassdbRules(skip="unauthenticated")), [MISMATCH], [0], MISMATCH),
        ((D, D), [Result.DISABLED], [0], Result.DISABLED),  # a deny passdb ends it
    ],
)
def test_the_rules(
    rules: tuple[PassdbRules, ...], results: list[Result], asked: list[int], answer: Result
) -> None:
    assert walk(run(*rules), results) == (asked, answer)


def test_mechanisms_and_username_filter_pass_a_passdb_by() -> None:
    plain_only = PassdbRules(mechanisms=("PLAIN",))
    assert walk(run(plain_only, D, mechanism="CRAM-MD5"), [OK]) == ([1], OK)
    assert walk(run(plain_only, D, mechanism="PLAIN"), [OK]) == ([0], OK)
    filtered = PassdbRules(username_filter=("*@example.org",))
    assert walk(run(filtered, D, user="ann@example.org"), [OK]) == ([0], OK)
    assert walk(run(filtered, D, user="ann@other.org"), [OK]) == ([1], OK)
    assert run(filtered, user="ann").first() is None


# ---------------------------------------------------------------------- the pipeline


class Down:
    name = "down"

    async def lookup(self, user: str, info: object = None) -> Any:
        raise StoreUnavailable("database down")


class Recording(MemoryStore):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.asked: list[str] = []

    async def lookup(self, user: str, info: object = None) -> Any:
        self.asked.append(user)
        return await super().lookup(user, info)


def authenticator(*links: tuple[Any, PassdbRules]) -> Authenticator:
    auth = Authenticator([store for store, _ in links], Hasher())
    auth.chain = list(links)
    return auth


def request(mech: str = "PLAIN") -> RequestInfo:
    return RequestInfo(id=1, mechanism=mech, service="smtp", rip="192.0.2.7", secured=True)


async def plain(auth: Authenticator, user: str, password: bytes) -> Verdict:
    verdict = await auth.check(request(), VerifyPlain(user, "", password))
    assert isinstance(verdict, Verdict)
    return verdict


async def test_a_mismatch_goes_on_to_the_next_passdb() -> None:
    first, second = Recording("bob:{PLAIN}old\n"), Recording("bob:{PLAIN}new::::::quota=1G\n")
    auth = authenticator((first, D), (second, D))
    verdict = await plain(auth, "bob", b"new")
    assert verdict.ok and verdict.user == "bob" and verdict.fields == (("quota", "1G"),)
    assert (await plain(auth, "bob", b"old")).ok
    wrong = await plain(auth, "bob", b"neither")
    assert wrong.outcome is Outcome.FAIL and wrong.reason is Reason.PASSWORD_MISMATCH
    assert wrong.fields == ()  # a failed lookup's fields are rolled back


async def test_an_outage_is_an_internal_failure_unless_a_later_passdb_says_ok() -> None:
    auth = authenticator((Down(), D), (MemoryStore("ann:{PLAIN}pw\n"), D))
    assert (await plain(auth, "ann", b"pw")).ok
    failed = await plain(auth, "ann", b"wrong")
    assert failed.outcome is Outcome.TEMPFAIL and failed.reason is Reason.STORE_ERROR
    stop = authenticator(
        (Down(), PassdbRules(result_internalfail="return-fail")),
        (MemoryStore("ann:{PLAIN}pw\n"), D),
    )
    assert (await plain(stop, "ann", b"pw")).outcome is Outcome.TEMPFAIL


async def test_a_deny_passdb_refuses_the_right_password() -> None:
    auth = authenticator(
        (MemoryStore("carol\n"), PassdbRules(deny=True)),
        (MemoryStore("carol:{PLAIN}pw\nann:{PLAIN}pw\n"), D),
    )
    refused = await plain(auth, "carol", b"pw")
    assert refused.outcome is Outcome.FAIL
    assert (await plain(auth, "ann", b"pw")).ok


async def test_username_format_is_the_name_looked_up() -> None:
    store = Recording("erin:{PLAIN}pw\n")
    auth = authenticator((store, PassdbRules(username_format="%n")))
    verdict = await plain(auth, "Erin@Example.org", b"pw")
    assert verdict.ok and verdict.user == "erin@example.org"
    assert store.asked == ["erin"]


async def test_after_a_continue_the_next_passdb_does_not_check_the_password() -> None:
    checked = Recording("ann:{PLAIN}pw\n")
    fields = Recording("ann:{PLAIN}something-else::::::quota=2G\n")
    rules = PassdbRules(result_success="continue-ok", result_failure="return-fail")
    auth = authenticator((checked, rules), (fields, D))
    verdict = await plain(auth, "ann", b"pw")
    assert verdict.ok and verdict.fields == (("quota", "2G"),)
    assert (await plain(auth, "ann", b"something-else")).outcome is Outcome.FAIL


async def test_cram_md5_takes_the_first_passdb_with_usable_credentials() -> None:
    hashed = MemoryStore("ann:{SHA512-CRYPT}$6$salt$" + "x" * 86 + "\n")
    plaintext = MemoryStore("ann:{PLAIN}pw\n")
    auth = authenticator((hashed, D), (plaintext, D))
    found = await auth.check(request("CRAM-MD5"), NeedCredentials("ann", "CRAM-MD5"))
    assert isinstance(found, CredentialsFound) and found.verdict.ok
    missing = await auth.check(request("CRAM-MD5"), NeedCredentials("nobody", "CRAM-MD5"))
    assert isinstance(missing, Verdict) and missing.reason is Reason.USER_UNKNOWN
    only_hashed = authenticator((hashed, D))
    none = await only_hashed.check(request("CRAM-MD5"), NeedCredentials("ann", "CRAM-MD5"))
    assert isinstance(none, Verdict) and none.reason is Reason.SCHEME_NOT_AVAILABLE


async def test_every_passdb_skipped_is_an_internal_failure() -> None:
    auth = authenticator((MemoryStore("ann:{PLAIN}pw\n"), PassdbRules(mechanisms=("LOGIN",))))
    verdict = await plain(auth, "ann", b"pw")
    assert verdict.outcome is Outcome.TEMPFAIL


async def test_a_user_field_renames_the_user_for_the_next_passdbs() -> None:
    """Dovecot looks the next passdbs up by the name a found entry's ``user`` field set,
    even when its password did not match (as dovecot-ldap's ``uid=user`` does)."""
    hashed = "{SHA512-CRYPT}$6$salt$" + "x" * 86
    first = Recording(f"ann@example.org:{hashed}::::::user=ann\n")
    second = Recording("ann:{PLAIN}pw\n")
    auth = authenticator((first, D), (second, D))
    verdict = await plain(auth, "ann@example.org", b"pw")
    assert verdict.ok and verdict.user == "ann" and verdict.original_user == "ann@example.org"
    assert second.asked == ["ann"]
    found = await auth.check(request("CRAM-MD5"), NeedCredentials("ann@example.org", "CRAM-MD5"))
    assert isinstance(found, CredentialsFound) and found.verdict.user == "ann"
    assert second.asked == ["ann", "ann"]
    # username_filter sees the new name too
    filtered = Recording("ann:{PLAIN}pw\n")
    auth = authenticator((first, D), (filtered, PassdbRules(username_filter=("!*@*", "*"))))
    assert (await plain(auth, "ann@example.org", b"pw")).ok
