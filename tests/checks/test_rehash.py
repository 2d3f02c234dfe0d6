"""Rehash on login: the policy (weak list, cheaper parameters, the mechanism guard) and the
queue, driven through the real check pipeline and a real passwd-file on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.checks.pipeline import CheckPipeline, Pending
from authbridge.checks.rehash import RESULTS, Rehasher
from authbridge.checks.rehash_policy import KEEP_FOR_MECHANISM, REHASH, RehashPolicy, cost
from authbridge.config import RehashSettings
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Verdict
from authbridge.observability.metrics import REHASH_RESULTS, Metrics
from authbridge.passdb.passwd_file import PasswdFileStore
from authbridge.schemes import generate, parse_stored, verify_password
from tests.passdb.test_rewrite import read_only_directory


def policy(mechanisms: tuple[str, ...] = ("plain", "login"), **settings: object) -> RehashPolicy:
    return RehashPolicy(RehashSettings(enabled=True, **settings), mechanisms)  # type: ignore[arg-type]


def stored(scheme: str, rounds: int | None = None) -> object:
    return parse_stored(generate(scheme, b"pw", "u", rounds))


# ---------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    "scheme", ["PLAIN-MD5", "MD5-CRYPT", "SHA", "SSHA", "SMD5", "CRYPT", "LDAP-MD5", "SHA1"]
)
def test_default_weak_schemes_are_rehashed(scheme: str) -> None:
    assert policy().decide(stored(scheme)) == REHASH  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["ARGON2ID", "SHA512-CRYPT", "BLF-CRYPT", "SSHA512", "PBKDF2"])
def test_strong_schemes_are_left_alone(scheme: str) -> None:
    assert policy().decide(stored(scheme)) is None  # type: ignore[arg-type]


def test_the_weak_list_is_configurable() -> None:
    only_sha = policy(weak=("SHA",))
    assert only_sha.decide(stored("SHA")) == REHASH  # type: ignore[arg-type]
    assert only_sha.decide(stored("PLAIN-MD5")) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scheme", "target_rounds", "cheaper", "same"),
    [
        ("BLF-CRYPT", 8, 5, 8),
        ("ARGON2ID", 3, 2, 3),  # t (passes); m is the same
        ("ARGON2I", 4, 3, 4),
        ("SHA512-CRYPT", 10000, 5000, 10000),
        ("SHA256-CRYPT", 6000, 5001, 6000),
        ("PBKDF2", 6000, 5000, 6000),
    ],
)
def test_the_target_scheme_with_a_lower_cost_is_weak(
    scheme: str, target_rounds: int, cheaper: int, same: int
) -> None:
    rules = policy(scheme=scheme, rounds=target_rounds)
    assert rules.decide(stored(scheme, cheaper)) == REHASH  # type: ignore[arg-type]
    assert rules.decide(stored(scheme, same)) is None  # type: ignore[arg-type]
    assert rules.decide(stored(scheme, same + 1)) is None  # type: ignore[arg-type]


def test_argon2_memory_counts_as_cost() -> None:
    small = parse_stored("{ARGON2ID}$argon2id$v=19$m=1024,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
    assert cost(small) == (1024, 3)  # type: ignore[arg-type]
    assert policy().decide(small) == REHASH  # type: ignore[arg-type]


def test_sha_crypt_without_rounds_is_5000() -> None:
    assert cost(stored("SHA512-CRYPT")) == (5000,)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mechanisms", "scheme", "decision"),
    [
        (("plain", "login", "cram-md5"), "PLAIN", KEEP_FOR_MECHANISM),  # CRAM-MD5 needs it
        (("plain", "login", "cram-md5"), "CRAM-MD5", KEEP_FOR_MECHANISM),
        (("plain", "login", "cram-md5"), "PLAIN-MD5", REHASH),  # never served CRAM-MD5
        (("plain", "login"), "PLAIN", REHASH),  # CRAM-MD5 not enabled: nothing lost
        (("plain", "scram-sha-256"), "PLAIN", KEEP_FOR_MECHANISM),
        (("plain", "scram-sha-1"), "CRAM-MD5", REHASH),  # CRAM-MD5 data serves no SCRAM
    ],
)
def test_a_mechanism_that_needs_the_stored_value_keeps_it(
    mechanisms: tuple[str, ...], scheme: str, decision: str
) -> None:
    assert policy(mechanisms).decide(stored(scheme)) == decision  # type: ignore[arg-type]


def test_a_scram_user_is_kept_while_scram_is_enabled() -> None:
    rules = policy(("plain", "scram-sha-256"), weak=("SCRAM-SHA-256",))
    assert rules.decide(stored("SCRAM-SHA-256")) == KEEP_FOR_MECHANISM  # type: ignore[arg-type]
    assert rules.needed_by(stored("SCRAM-SHA-256")) == {"SCRAM-SHA-256"}  # type: ignore[arg-type]


def test_the_metric_results_are_the_rehashers() -> None:
    assert RESULTS == REHASH_RESULTS


# ---------------------------------------------------------------------- the queue


class Counted:
    def __init__(self) -> None:
        self.results: list[str] = []

    def __call__(self, result: str) -> None:
        self.results.append(result)


def _users_file(path: Path, *users: str) -> PasswdFileStore:
    path.write_text("".join(f"{u}:{generate('PLAIN-MD5', b'password', u)}\n" for u in users))
    store = PasswdFileStore(path)
    store.load()
    return store


def _pipeline(store: PasswdFileStore, rehasher: Rehasher | None) -> CheckPipeline:
    checks = CheckPipeline(Authenticator([store], Hasher()), clock=lambda: 0.0)
    checks.rehash = rehasher
    return checks


def _login(checks: CheckPipeline, user: str, password: bytes = b"password") -> Verdict:
    info = RequestInfo(id=1, mechanism="PLAIN", service="smtp", rip="192.0.2.7", secured=True)
    result = checks.run(info, VerifyPlain(user, "", password), 0.0)
    if isinstance(result, Pending):  # ARGON2ID is hashed in a thread (PLAIN-MD5 inline)
        result = trio.run(result.wait)
    assert isinstance(result, Verdict)
    return result


async def _until(predicate: object, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.01)


def test_a_login_rehashes_after_its_verdict(tmp_path: Path) -> None:
    path = tmp_path / "users"
    store = _users_file(path, "alice", "bob")
    counted = Counted()
    rehasher = Rehasher(policy(), 10, counted)
    checks = _pipeline(store, rehasher)

    async def main() -> None:
        assert _login(checks, "alice").outcome is Outcome.OK
        assert _login(checks, "alice").outcome is Outcome.OK  # again, while queued
        assert _login(checks, "bob", b"wrong").outcome is Outcome.FAIL  # never queued
        assert "{ARGON2ID}" not in path.read_text()  # the verdict did not wait for it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rehasher.run)
            await _until(lambda: counted.results)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert counted.results == ["written"]  # one job for two logins
    alice = store.get("alice")
    assert alice is not None and alice.password is not None
    assert alice.password.scheme == "ARGON2ID"
    assert verify_password(alice.password, b"password", "alice")
    assert _login(checks, "alice").outcome is Outcome.OK  # the new hash serves
    bob = store.get("bob")
    assert bob is not None and bob.password is not None and bob.password.scheme == "PLAIN-MD5"


def test_off_means_nothing_is_queued(tmp_path: Path) -> None:
    store = _users_file(tmp_path / "users", "alice")
    checks = _pipeline(store, None)
    assert _login(checks, "alice").outcome is Outcome.OK
    assert "PLAIN-MD5" in (tmp_path / "users").read_text()


def test_a_full_queue_drops_the_job_and_counts_it(tmp_path: Path) -> None:
    store = _users_file(tmp_path / "users", "a", "b", "c")
    counted = Counted()
    rehasher = Rehasher(policy(), 1, counted)
    checks = _pipeline(store, rehasher)

    async def main() -> None:
        for user in ("a", "b", "c"):  # no task serves the queue: it stays full
            assert _login(checks, user).outcome is Outcome.OK

    trio.run(main)
    assert counted.results == ["dropped", "dropped"]
    assert rehasher.queued() == 1


def test_a_user_kept_for_a_mechanism_is_counted_and_warned_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users"
    path.write_text("carl:{PLAIN}Sekr1t-carl\n")
    store = PasswdFileStore(path)
    store.load()
    counted = Counted()
    rehasher = Rehasher(policy(("plain", "login", "cram-md5")), 10, counted)
    checks = _pipeline(store, rehasher)
    warnings: list[dict[str, object]] = []
    from authbridge.checks import rehash as module

    saved = module.log
    module.log = type(  # type: ignore[assignment]
        "L", (), {"warning": lambda self, event, **kw: warnings.append({"event": event, **kw})}
    )()
    try:

        async def main() -> None:
            for _ in range(3):
                assert _login(checks, "carl", b"Sekr1t-carl").outcome is Outcome.OK

        trio.run(main)
    finally:
        module.log = saved
    assert counted.results == ["skipped_mechanism"] * 3
    assert len(warnings) == 1
    assert warnings[0]["user"] == "carl" and warnings[0]["needed_by"] == "CRAM-MD5"
    assert "Sekr1t" not in str(warnings[0].values())
    assert path.read_text() == "carl:{PLAIN}Sekr1t-carl\n"


def test_a_failing_write_never_fails_the_login_and_is_counted(tmp_path: Path) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    store = _users_file(directory / "users", "alice")
    before = (directory / "users").read_bytes()
    metrics = Metrics()
    rehasher = Rehasher(policy(), 10, metrics.rehashed)
    checks = _pipeline(store, rehasher)

    async def main() -> None:
        with read_only_directory(directory):
            assert _login(checks, "alice").outcome is Outcome.OK
            async with trio.open_nursery() as nursery:
                nursery.start_soon(rehasher.run)
                await _until(lambda: _count(metrics, "failed") == 1)
                nursery.cancel_scope.cancel()
            assert _login(checks, "alice").outcome is Outcome.OK  # still served

    trio.run(main)
    assert (directory / "users").read_bytes() == before
    assert _count(metrics, "written") == 0


def _count(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("authbridge_rehashes_total", {"result": result})
    return 0.0 if value is None else value
