"""App passwords in the real check pipeline: a passwd-file and its companion file on disk,
real hashes (ARGON2ID verified by the Hasher off the event loop), the real cache and
penalty tracker."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from authbridge.checks.app_passwords import RESULTS, AppPasswordCheck, flush_once
from authbridge.checks.authenticator import Authenticator
from authbridge.checks.cache import AuthCache
from authbridge.checks.hashing import Hasher
from authbridge.checks.penalty import PenaltyTracker
from authbridge.checks.pipeline import CheckPipeline, Pending
from authbridge.config import AppPasswordSettings, CacheSettings, PenaltySettings, StoreConfig
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.observability.metrics import APP_PASSWORD_RESULTS
from authbridge.passdb import app_passwords as ap
from authbridge.passdb import attach_app_passwords
from authbridge.passdb.passwd_file import PasswdFileStore
from authbridge.schemes import generate, parse_stored

NOW = 2_000_000_000.0
SLOW = generate("ARGON2ID", b"slow-pass", "alice")  # once: 64 MiB of memory per hash


def _line(label: str, password: bytes, services: str = "", expires: float | None = None) -> str:
    until = "" if expires is None else ap.format_time(expires)
    return f"alice:{label}:{generate('SSHA512', password, 'alice')}:{services}:{until}\n"


@pytest.fixture
def store(tmp_path: Path) -> PasswdFileStore:
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}main-pass::::::\nbob:{PLAIN}bob-pass::::::\n")
    apps = tmp_path / "users.app"
    apps.write_text(
        _line("phone", b"phone-pass", "smtp")
        + _line("tablet", b"tablet-pass", "imap")
        + _line("old", b"old-pass", "", NOW - 60)
        + _line("any", b"any-pass")
        + f"alice:slow:{SLOW}:smtp:\n"
    )
    s = PasswdFileStore(users)
    s.load()
    attach_app_passwords(s, StoreConfig("passwd-file", app_password_file=str(apps)), SETTINGS)
    return s


SETTINGS = AppPasswordSettings()
counted: list[str] = []


def pipeline(
    store: PasswdFileStore, require: tuple[str, ...] = (), cache: bool = False, **kwargs: object
) -> CheckPipeline:
    auth = Authenticator(
        [store], Hasher(), cache=AuthCache(CacheSettings(enabled=cache)), clock=lambda: 0.0
    )
    checks = CheckPipeline(auth, clock=lambda: 0.0, **kwargs)  # type: ignore[arg-type]
    settings = AppPasswordSettings(require_app_password_for=require)
    checks.app_passwords = AppPasswordCheck(settings, counted.append, clock=lambda: NOW)
    return checks


def info(service: str = "smtp", rip: str = "192.0.2.7") -> RequestInfo:
    return RequestInfo(id=1, mechanism="PLAIN", service=service, rip=rip, secured=True)


async def check(checks: CheckPipeline, password: bytes, service: str = "smtp") -> Verdict:
    result = checks.run(info(service), VerifyPlain("alice", "", password), 0.0)
    if isinstance(result, Pending):
        result = await result.wait()
    assert isinstance(result, Verdict)
    return result


async def test_the_right_app_password_logs_in_and_names_its_label(store: PasswdFileStore) -> None:
    counted.clear()
    verdict = await check(pipeline(store), b"phone-pass")
    assert verdict.outcome is Outcome.OK and verdict.app_password == "phone"
    assert verdict.user == "alice"
    assert counted == ["ok"]
    assert store.app_passwords is not None and store.app_passwords.has_pending()


async def test_the_main_password_still_works_without_a_label(store: PasswdFileStore) -> None:
    verdict = await check(pipeline(store), b"main-pass")
    assert verdict.ok and verdict.app_password is None


async def test_a_slow_scheme_is_verified_off_the_loop(store: PasswdFileStore) -> None:
    result = pipeline(store).run(info(), VerifyPlain("alice", "", b"slow-pass"), 0.0)
    assert isinstance(result, Pending)  # ARGON2ID: the Hasher's thread, not inline
    verdict = await result.wait()
    assert isinstance(verdict, Verdict) and verdict.app_password == "slow"


@pytest.mark.parametrize(
    ("password", "service"),
    [
        (b"tablet-pass", "smtp"),  # scoped to imap
        (b"old-pass", "smtp"),  # expired
        (b"wrong", "smtp"),
        (b"phone-pass", "imap"),  # scoped to smtp
    ],
)
async def test_wrong_service_expired_or_wrong_fails_like_a_wrong_password(
    store: PasswdFileStore, password: bytes, service: str
) -> None:
    verdict = await check(pipeline(store), password, service)
    wrong = await check(pipeline(store), b"not-the-password", service)
    assert verdict.outcome is Outcome.FAIL and verdict.reason is Reason.PASSWORD_MISMATCH
    assert (verdict.outcome, verdict.reason, verdict.fields) == (
        wrong.outcome,
        wrong.reason,
        wrong.fields,
    )
    assert verdict.app_password is None


async def test_a_scoped_one_works_for_its_own_service(store: PasswdFileStore) -> None:
    assert (await check(pipeline(store), b"tablet-pass", "IMAP")).app_password == "tablet"


async def test_require_app_password_for_refuses_the_main_password_there_only(
    store: PasswdFileStore,
) -> None:
    counted.clear()
    checks = pipeline(store, require=("smtp",))
    refused = await check(checks, b"main-pass", "smtp")
    assert refused.outcome is Outcome.FAIL and refused.reason is Reason.PASSWORD_MISMATCH
    assert (await check(checks, b"main-pass", "imap")).ok
    assert (await check(checks, b"phone-pass", "smtp")).app_password == "phone"
    # refused, then none of the app passwords matched the main password; then one did
    assert counted == ["main_password_refused", "failed", "ok"]


async def test_a_revoked_one_fails_after_the_reload(store: PasswdFileStore, tmp_path: Path) -> None:
    checks = pipeline(store)
    assert (await check(checks, b"any-pass")).ok
    assert ap.revoke(tmp_path / "users.app", "alice", "any")
    source = store.app_passwords
    assert isinstance(source, ap.AppPasswordFile)
    source.load()  # what the daemon's watcher does on the change
    assert (await check(checks, b"any-pass")).reason is Reason.PASSWORD_MISMATCH


async def test_app_password_verdicts_are_never_cached(store: PasswdFileStore) -> None:
    """The cache is keyed by user and password, not service: an app password's verdict
    (scoped, revocable) never goes in, so a revoke is not hidden by it either."""
    checks = pipeline(store, require=("smtp",), cache=True)
    assert (await check(checks, b"main-pass", "imap")).ok
    assert (await check(checks, b"main-pass", "smtp")).outcome is Outcome.FAIL
    assert (await check(checks, b"phone-pass", "imap")).outcome is Outcome.FAIL
    assert (await check(checks, b"phone-pass", "smtp")).ok
    assert len(checks.auth.cache) == 0


async def test_failed_app_passwords_cost_the_same_penalty(store: PasswdFileStore) -> None:
    tracker = PenaltyTracker(PenaltySettings())
    checks = pipeline(store, penalty=tracker)
    key = tracker.key("192.0.2.7", info().address)
    await check(checks, b"tablet-pass")  # scoped to imap: a guess like any other
    await check(checks, b"guess")
    assert tracker.delay_of(key, 0.0) > 0


async def test_no_app_passwords_without_the_check(store: PasswdFileStore) -> None:
    checks = pipeline(store)
    checks.app_passwords = None  # the feature off: the attribute check and nothing else
    assert (await check(checks, b"phone-pass")).reason is Reason.PASSWORD_MISMATCH


async def test_last_used_is_flushed_off_the_login_path(store: PasswdFileStore) -> None:
    await check(pipeline(store), b"phone-pass")
    await flush_once([store])
    source = store.app_passwords
    assert isinstance(source, ap.AppPasswordFile)
    assert ap.read_used(source.path) == {("alice", "phone"): NOW}


def test_results_match_the_metric_labels() -> None:
    assert RESULTS == APP_PASSWORD_RESULTS


async def test_an_unusable_hash_in_the_file_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "apps"
    path.write_text("alice:x:{SSHA512}short::\n")
    with pytest.raises(ap.StoreFormatError, match="apps:1"):
        ap.AppPasswordFile(path).load()
    assert parse_stored("{SSHA512}short").scheme == "SSHA512"
    await trio.lowlevel.checkpoint()


async def test_a_read_only_directory_costs_a_warning_per_interval_not_the_login(
    store: PasswdFileStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.passdb.test_rewrite import read_only_directory

    source = store.app_passwords
    assert isinstance(source, ap.AppPasswordFile)
    checks = pipeline(store)
    with read_only_directory(tmp_path):
        assert (await check(checks, b"phone-pass")).ok
        await flush_once([store])
        assert (await check(checks, b"phone-pass")).ok  # within the interval: nothing new
        assert not source.has_pending()
        await flush_once([store])
    assert capsys.readouterr().out.count("last-used times not written") == 1
    assert not ap.used_path(source.path).exists()
