"""Item 5: the auth cache — TTLs, bound, re-checks, outage fallback, and every flush.

In-process tests use explicit clocks and a store that counts its lookups; the daemon
tests read the cache counters from /metrics and change the users file under it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.cache import AuthCache, CacheSettings
from authbridge.checks.hashing import Hasher
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.passdb.base import PassdbEntry, StoreUnavailable
from authbridge.passdb.passwd_file import parse_passwd_file
from tests.policy.authclient import AuthClient
from tests.policy.conftest import StartBridge
from tests.policy.daemon import metrics_args, pid_of, scrape, wait_for_metrics, wait_until

OK = Verdict(Outcome.OK, "u")
BAD = Verdict(Outcome.FAIL, "u", Reason.PASSWORD_MISMATCH)


def _cache(**kwargs: object) -> AuthCache:
    return AuthCache(CacheSettings(enabled=True, **kwargs))  # type: ignore[arg-type]


def test_cache_is_off_by_default() -> None:
    cache = AuthCache()
    cache.store("u", b"pw", OK, 0.0)
    assert cache.lookup("u", b"pw", 0.0) is None
    assert len(cache) == 0


def test_positive_and_negative_ttl() -> None:
    cache = _cache(ttl=300.0, negative_ttl=60.0)
    cache.store("u", b"right", OK, 0.0)
    cache.store("v", b"wrong", BAD, 0.0)
    assert cache.lookup("u", b"right", 300.0) is OK
    assert cache.lookup("u", b"right", 300.5) is None
    assert cache.lookup("v", b"wrong", 60.0) is BAD
    assert cache.lookup("v", b"wrong", 60.5) is None
    # A cached failure answers only the same wrong password.
    assert cache.lookup("v", b"other", 1.0) is None


def test_zero_negative_ttl_caches_no_failure() -> None:
    cache = _cache(negative_ttl=0.0)
    cache.store("v", b"wrong", BAD, 0.0)
    assert len(cache) == 0


def test_size_bound_drops_failures_first() -> None:
    cache = _cache(max_entries=10)
    for n in range(5):
        cache.store(f"ok{n}", b"pw", OK, 0.0)
    for n in range(20):
        cache.store(f"bad{n}", b"pw", BAD, 0.0)
    assert len(cache) == 10
    assert all(cache.lookup(f"ok{n}", b"pw", 1.0) is OK for n in range(5))
    for n in range(20):
        cache.store(f"more{n}", b"pw", OK, 0.0)
    assert len(cache) == 10


def test_cache_holds_no_password() -> None:
    cache = _cache()
    cache.store("u", b"hunter2-secret", OK, 0.0)
    dump = repr(cache.__dict__) + repr(cache._ok) + repr(cache._fail)
    assert "hunter2" not in dump
    assert b"hunter2-secret" not in dump.encode()


class _CountingStore:
    """A passwd-file in memory that counts lookups and can be made to fail."""

    name = "memory"

    def __init__(self, text: str) -> None:
        self.entries = parse_passwd_file(text, "memory")
        self.lookups = 0
        self.down = False

    async def lookup(self, user: str, info: object = None) -> PassdbEntry | None:
        self.lookups += 1
        if self.down:
            raise StoreUnavailable("database down")
        return self.entries.get(user)


INFO = RequestInfo(id=1, mechanism="PLAIN", service="smtp", secured=True, rip="192.0.2.1")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _authenticator(
    text: str = "u:{PLAIN}right\nnet:{PLAIN}pw::::::allow_nets=192.0.2.0/24\n",
) -> tuple[Authenticator, _CountingStore, _Clock]:
    store = _CountingStore(text)
    clock = _Clock()
    cache = AuthCache(CacheSettings(enabled=True, ttl=300.0, negative_ttl=60.0))
    return Authenticator([store], Hasher(), cache=cache, clock=clock), store, clock


async def _check(
    auth: Authenticator, user: str, password: str, info: RequestInfo = INFO
) -> Outcome:
    verdict = await auth.check(info, VerifyPlain(user, "", password.encode()))
    assert isinstance(verdict, Verdict)
    return verdict.outcome


async def test_cached_success_saves_the_lookup() -> None:
    auth, store, clock = _authenticator()
    assert await _check(auth, "u", "right") is Outcome.OK
    assert await _check(auth, "u", "right") is Outcome.OK
    assert store.lookups == 1
    clock.now += 301
    assert await _check(auth, "u", "right") is Outcome.OK
    assert store.lookups == 2


async def test_cached_success_meeting_another_password_rechecks() -> None:
    """The password may have changed: a different one is checked for real, not failed."""
    auth, store, _ = _authenticator()
    await _check(auth, "u", "right")
    store.entries = parse_passwd_file("u:{PLAIN}changed\n", "memory")
    assert await _check(auth, "u", "changed") is Outcome.OK
    assert store.lookups == 2
    assert await _check(auth, "u", "wrong") is Outcome.FAIL
    assert store.lookups == 3


async def test_negative_cache_for_the_same_wrong_password() -> None:
    auth, store, clock = _authenticator()
    assert await _check(auth, "u", "wrong") is Outcome.FAIL
    assert await _check(auth, "u", "wrong") is Outcome.FAIL
    assert store.lookups == 1
    assert await _check(auth, "u", "right") is Outcome.OK
    assert store.lookups == 2
    clock.now += 61
    assert await _check(auth, "u", "wrong") is Outcome.FAIL
    assert store.lookups == 3


async def test_outage_serves_a_cached_success_even_expired() -> None:
    auth, store, clock = _authenticator()
    await _check(auth, "u", "right")
    clock.now += 10_000
    store.down = True
    assert await _check(auth, "u", "right") is Outcome.OK
    # ... but only for that password, and never a success for anyone else.
    assert await _check(auth, "u", "wrong") is Outcome.TEMPFAIL
    assert await _check(auth, "nobody", "right") is Outcome.TEMPFAIL


async def test_client_specific_verdicts_are_not_cached() -> None:
    """allow_nets depends on the address: a success from inside must not admit outside."""
    auth, _, _ = _authenticator()
    assert await _check(auth, "net", "pw") is Outcome.OK
    outside = RequestInfo(id=2, mechanism="PLAIN", service="smtp", secured=True, rip="10.0.0.1")
    assert await _check(auth, "net", "pw", outside) is Outcome.FAIL


# ---------------------------------------------------------------- the daemon

CONFIG = "[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n[cache]\nenabled = true\n"


def _users(path: Path, password: str) -> Path:
    path.write_text(f"cached:{{PLAIN}}{password}::::::\nother:{{PLAIN}}x::::::\n")
    path.chmod(0o644)
    return path


def test_daemon_cache_counts_and_flushes(bridge: StartBridge, policy_dir: Path) -> None:
    users = _users(policy_dir / "cache-users.passwd", "first-pass")
    args, url = metrics_args()
    server = bridge("cache", CONFIG, args, users=users)
    wait_for_metrics(url)
    pid = pid_of(server)

    def entries() -> float:
        return scrape(url)["authbridge_cache_entries"]

    with AuthClient(server.socket_path) as c:
        for n in range(3):
            assert c.plain(n + 1, "cached", "first-pass", "secured").startswith("OK")
        assert c.plain(9, "other", "nope", "secured").startswith("FAIL")
        assert c.plain(10, "other", "nope", "secured").startswith("FAIL")
    # Counters move just after the reply has gone out: wait for the scrape to show them.
    wait_until(
        lambda: scrape(url)["authbridge_cache_hits_total"] == 3,  # two successes, one failure
        10,
        "three cache hits in /metrics",
    )
    assert entries() == 2

    os.kill(pid, signal.SIGUSR2)
    wait_until(lambda: entries() == 0, 5, "SIGUSR2 to flush the cache")

    with AuthClient(server.socket_path) as c:
        assert c.plain(1, "cached", "first-pass", "secured").startswith("OK")
    assert entries() == 1
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: entries() == 0, 5, "SIGHUP (reload) to flush the cache")

    # A changed store flushes the cache: the old password stops working at once.
    with AuthClient(server.socket_path) as c:
        assert c.plain(1, "cached", "first-pass", "secured").startswith("OK")
    assert entries() == 1
    # A new password of another length: a changed size, whatever the mtime granularity.
    _users(users, "second-pass")
    wait_until(lambda: entries() == 0, 10, "the store change to flush the cache")
    with AuthClient(server.socket_path) as c:
        assert c.plain(1, "cached", "first-pass", "secured").startswith("FAIL")
        assert c.plain(2, "cached", "second-pass", "secured").startswith("OK")
