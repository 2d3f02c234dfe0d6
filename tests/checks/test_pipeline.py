"""The check pipeline driven directly: the sync path most logins take, and the
continuation for what must wait (expensive hash, async store, penalty), which never
redoes the first half."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.checks.penalty import PenaltySettings, PenaltyTracker
from authbridge.checks.pipeline import CheckPipeline, Pending
from authbridge.checks.policy import PolicyGate
from authbridge.config import PolicyConfig
from authbridge.core.mechanisms.base import NeedCredentials, ScramKeys, VerifyPlain
from authbridge.core.session import CredentialsFound, RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.passdb.passwd_file import PasswdFileStore
from authbridge.schemes import generate
from tests.support.memory_store import MemoryStore


def users() -> str:
    return (
        f"plain:{{PLAIN}}pw\n"
        f"salted:{generate('SSHA512', b'pw', 'salted')}\n"
        f"slow:{generate('SHA512-CRYPT', b'pw', 'slow', rounds=1000)}\n"
        "fields:{PLAIN}pw::::::quota=1G nodelay\n"
    )


class Counting:
    """A store wrapper that counts lookups, in memory (``get``) or not."""

    def __init__(self, inner: Any, inline: bool = True) -> None:
        self.inner, self.name, self.gets, self.lookups = inner, "counting", 0, 0
        if inline:
            self.get = self._get

    def _get(self, user: str) -> Any:
        self.gets += 1
        return self.inner.get(user)

    async def lookup(self, user: str, info: object = None) -> Any:
        self.lookups += 1
        return await self.inner.lookup(user, info)


@pytest.fixture
def store(tmp_path: Path) -> Counting:
    path = tmp_path / "users"
    path.write_text(users())
    passwd = PasswdFileStore(path)
    passwd.load()
    return Counting(passwd)


def info(rip: str | None = "192.0.2.7", secured: bool = True, mech: str = "PLAIN") -> RequestInfo:
    return RequestInfo(id=1, mechanism=mech, service="smtp", rip=rip, secured=secured)


def pipeline(store: Any, **kwargs: Any) -> CheckPipeline:
    auth = Authenticator([store], Hasher())
    return CheckPipeline(auth, clock=lambda: 0.0, **kwargs)


@pytest.mark.parametrize("user", ["plain", "salted"])
def test_most_logins_get_their_verdict_at_once_without_trio(store: Counting, user: str) -> None:
    checks = pipeline(store, policy=PolicyGate(PolicyConfig()), penalty=PenaltyTracker())
    ok = checks.run(info(), VerifyPlain(user, "", b"pw"), 0.0)
    assert isinstance(ok, Verdict) and ok.ok and ok.user == user
    wrong = checks.run(info("192.0.2.8"), VerifyPlain(user, "", b"no"), 0.0)
    assert isinstance(wrong, Verdict) and wrong.reason is Reason.PASSWORD_MISMATCH
    unknown = checks.run(info("192.0.2.9"), VerifyPlain("nobody", "", b"pw"), 0.0)
    assert isinstance(unknown, Verdict) and unknown.reason is Reason.USER_UNKNOWN
    assert store.gets == 3 and store.lookups == 0


def test_fields_and_normalisation_on_the_sync_path(store: Counting) -> None:
    verdict = pipeline(store).run(info(), VerifyPlain("Fields", "", b"pw"), 0.0)
    assert isinstance(verdict, Verdict) and verdict.ok
    assert verdict.user == "fields" and verdict.original_user == "Fields"
    assert verdict.fields == (("quota", "1G"), ("nodelay", None))


async def test_an_expensive_hash_waits_and_the_lookup_is_not_redone(store: Counting) -> None:
    checks = pipeline(store)
    pending = checks.run(info(), VerifyPlain("slow", "", b"pw"), 0.0)
    assert isinstance(pending, Pending)
    assert store.gets == 1
    verdict = await pending.wait()
    assert isinstance(verdict, Verdict) and verdict.ok and verdict.user == "slow"
    assert store.gets == 1 and store.lookups == 0
    wrong = checks.run(info(), VerifyPlain("slow", "", b"no"), 0.0)
    assert isinstance(wrong, Pending)
    assert (await wrong.wait()).reason is Reason.PASSWORD_MISMATCH  # type: ignore[union-attr]


async def test_a_store_without_get_continues_asynchronously() -> None:
    store = Counting(MemoryStore(users()), inline=False)
    pending = pipeline(store).run(info(), VerifyPlain("plain", "", b"pw"), 0.0)
    assert isinstance(pending, Pending) and store.lookups == 0
    verdict = await pending.wait()
    assert isinstance(verdict, Verdict) and verdict.ok and store.lookups == 1


def test_policy_gates_come_before_any_lookup(store: Counting) -> None:
    gate = PolicyGate(PolicyConfig(require_secured=True))
    verdict = pipeline(store, policy=gate).run(
        info(secured=False), VerifyPlain("plain", "", b"pw"), 0.0
    )
    assert isinstance(verdict, Verdict) and verdict.reason is Reason.PLAINTEXT_INSECURE
    assert verdict.user == "plain" and store.gets == 0


async def test_a_penalised_address_waits_then_is_checked_once(
    store: Counting, autojump_clock: trio.testing.MockClock
) -> None:
    penalty = PenaltyTracker(PenaltySettings(steps=(1.0,)))
    waited: list[int] = []
    checks = pipeline(store, penalty=penalty, on_penalty=lambda: waited.append(1))
    miss = checks.run(info(), VerifyPlain("plain", "", b"guess"), 0.0)
    assert isinstance(miss, Verdict) and not miss.ok
    assert penalty.delay("192.0.2.7", 0.0) == 1.0
    pending = checks.run(info(), VerifyPlain("plain", "", b"pw"), 0.0)
    assert isinstance(pending, Pending) and store.gets == 1  # no lookup before the wait
    started = trio.current_time()
    verdict = await pending.wait()
    assert trio.current_time() - started >= 1.0 and waited == [1]
    assert isinstance(verdict, Verdict) and verdict.ok and store.gets == 2
    assert penalty.delay("192.0.2.7", 0.0) == 0.0  # a success clears the record


def test_cram_md5_and_scram_get_credentials(store: Counting) -> None:
    checks = pipeline(store)
    cram = checks.run(info(mech="CRAM-MD5"), NeedCredentials("plain", "CRAM-MD5"), 0.0)
    assert isinstance(cram, CredentialsFound) and cram.credentials.plaintext == b"pw"
    assert cram.verdict.ok and cram.verdict.user == "plain"
    scram = checks.run(
        info(mech="SCRAM-SHA-256"), NeedCredentials("plain", "SCRAM-SHA-256", True), 0.0
    )
    assert isinstance(scram, CredentialsFound)
    assert isinstance(scram.credentials.data, ScramKeys)
    salted = checks.run(info(mech="CRAM-MD5"), NeedCredentials("salted", "CRAM-MD5"), 0.0)
    assert isinstance(salted, Verdict) and salted.reason is Reason.SCHEME_NOT_AVAILABLE


def test_cram_md5_penalty_is_recorded_when_the_mechanism_compared(store: Counting) -> None:
    penalty = PenaltyTracker(PenaltySettings(steps=(1.0, 2.0, 4.0)))
    checks = pipeline(store, penalty=penalty)
    miss = Verdict(Outcome.FAIL, "plain", Reason.PASSWORD_MISMATCH)
    checks.finished(info(mech="CRAM-MD5"), miss)
    checks.finished(info(mech="CRAM-MD5"), miss)  # a new challenge: a new guess
    assert penalty.delay("192.0.2.7", 0.0) == 2.0
    checks.finished(info(mech="PLAIN"), miss)  # recorded with the verdict, not here
    assert penalty.delay("192.0.2.7", 0.0) == 2.0
    checks.finished(info(mech="CRAM-MD5"), Verdict(Outcome.OK, "plain"))
    assert penalty.delay("192.0.2.7", 0.0) == 0.0


async def test_a_check_that_outlives_the_timeout_is_an_internal_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Hanging:
        name = "hanging"

        async def lookup(self, user: str, info: object = None) -> Any:
            await trio.sleep_forever()

    pending = pipeline(Hanging(), timeout=8.0).run(info(), VerifyPlain("x", "", b"pw"), 0.0)
    assert isinstance(pending, Pending)
    verdict = await pending.wait()
    assert isinstance(verdict, Verdict) and verdict.outcome is Outcome.TEMPFAIL
    assert verdict.user == "x"
