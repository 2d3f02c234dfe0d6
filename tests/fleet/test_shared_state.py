"""SharedState in-process on a real redis-server with a password (and with TLS): the
trio reader's AUTH, SELECT and TLS, the failure script's rules, the breaker on a
refusing Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from authbridge.checks.fingerprint import Fingerprints
from authbridge.checks.shared import SharedState
from authbridge.config import PenaltySettings
from tests.support import require_binary, runtime_dir
from tests.support.redis import RedisServer
from tests.support.tls import make_self_signed


@pytest.fixture
def locked_redis(fleet_dir: Path) -> Iterator[RedisServer]:
    with RedisServer(runtime_dir(fleet_dir, "locked"), password="s3cret-pw") as server:
        yield server


def _state(url: str, errors: list[str], **kwargs: object) -> SharedState:
    settings = PenaltySettings(
        backend="redis", redis_url=url, key_prefix="unit:", max_users_per_ip=2, **kwargs
    )  # type: ignore[arg-type]
    return SharedState(settings, on_error=errors.append)


async def _written(state: SharedState, bucket: str, account: str, level: int) -> None:
    with trio.fail_after(10):
        while (await state.fetch(bucket, account) or (0, 0))[0] < level:
            await trio.sleep(0.01)


async def test_reads_and_writes_with_auth_and_a_database(locked_redis: RedisServer) -> None:
    errors: list[str] = []
    state = _state(locked_redis.url, errors)
    fp = Fingerprints(b"k" * 32)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.run)
        assert await state.fetch("192.0.2.1", fp.user("u")) == (0, 0)
        for password in (b"a", b"a", b"b"):  # the same wrong password twice: one guess
            state.failed("192.0.2.1", fp.user("u"), fp.guess("u", password))
        await _written(state, "192.0.2.1", fp.user("u"), 2)
        assert await state.fetch("192.0.2.1", fp.user("u")) == (2, 2)
        for n in range(3):  # user names beyond max_users_per_ip (2): two levels each
            state.failed("192.0.2.1", fp.user(f"v{n}"), fp.guess(f"v{n}", b"x"))
        await _written(state, "192.0.2.1", fp.user("u"), 2 + 1 + 2 + 2)
        state.close()
    assert errors == []
    # Database 3 of the URL, keys under the prefix, fingerprints only.
    keys = sorted(locked_redis.client().keys("*"))
    assert keys and all(k.startswith(b"unit:") for k in keys)


async def test_a_refusing_redis_opens_the_breaker_once(locked_redis: RedisServer) -> None:
    errors: list[str] = []
    wrong = locked_redis.url.replace("s3cret-pw", "wrong")
    state = _state(wrong, errors, redis_retry_after=60.0)
    assert await state.fetch("192.0.2.2", "acct") is None
    assert errors == ["refused"] and state.down_since is not None
    assert not state.usable()  # nobody waits on Redis until the retry time


async def test_a_write_after_a_reload_closed_the_state_is_dropped(
    locked_redis: RedisServer,
) -> None:
    errors: list[str] = []
    state = _state(locked_redis.url, errors)
    state.close()
    state.failed("192.0.2.3", "acct", None)  # a request begun before the reload: no raise
    state.succeeded("192.0.2.3")
    assert errors == []


async def test_tls_with_a_password(fleet_dir: Path) -> None:
    """``rediss://``: the trio reader and redis-py's writer both verify the certificate."""
    require_binary("openssl")
    tls = make_self_signed(runtime_dir(fleet_dir, "redis-tls-cert"))
    with RedisServer(runtime_dir(fleet_dir, "tls"), "tls-pw", (tls.cert, tls.key)) as redis:
        assert redis.url.startswith("rediss://")
        errors: list[str] = []
        state = _state(redis.url, errors)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(state.run)
            state.failed("192.0.2.4", "acct", b"guess-fp")
            await _written(state, "192.0.2.4", "acct", 1)
            assert await state.fetch("192.0.2.4", "acct") == (1, 1)
            state.close()
        assert errors == []
        # A certificate the client does not trust: refused, and the breaker opens.
        untrusted = redis.url.split("?")[0]  # no ssl_ca_certs: the system's CAs only
        other = _state(untrusted, errors)
        assert await other.fetch("192.0.2.4", "acct") is None
        assert errors and other.down_since is not None


async def _until(check: object, timeout: float = 10.0) -> None:
    """Wait (trio) until ``check()`` is true, with a deadline."""
    with trio.fail_after(timeout):
        while not check():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_every_instance_reads_the_fleet_s_counts_from_its_mirror(
    locked_redis: RedisServer,
) -> None:
    """A writes, B (subscribed) sees it without a round trip; keys written before B
    started are loaded; A's success clears the address in B's copy too."""
    errors: list[str] = []
    a, b = _state(locked_redis.url, errors), _state(locked_redis.url, errors)
    fp = Fingerprints(b"k" * 32)
    account = fp.user("u")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        a.failed("192.0.2.10", account, fp.guess("u", b"one"))  # before B exists
        await _written(a, "192.0.2.10", account, 1)
        assert b.lookup("192.0.2.10", account) is None  # not subscribed yet: local state
        nursery.start_soon(b.run)
        await _until(lambda: b.mirror.synced)
        assert b.lookup("192.0.2.10", account) == (1, 1)  # from the initial load
        a.failed("192.0.2.10", account, fp.guess("u", b"two"))
        a.failed("2001:db8::/64", account, fp.guess("u", b"three"))
        await _until(lambda: b.lookup("2001:db8::/64", account) == (1, 3))
        assert b.lookup("192.0.2.10", account) == (2, 3)
        a.succeeded("192.0.2.10")
        await _until(lambda: b.lookup("192.0.2.10", account) == (0, 3))
        # Nothing on a request's path touched Redis: the lookups are dict reads.
        a.close()
        b.close()
    assert errors == []


async def test_the_mirror_is_dropped_while_redis_is_gone_and_reloaded_after(
    fleet_dir: Path,
) -> None:
    """SIGKILL: the subscription breaks, lookups fall back to local state, the outage
    is counted; a new Redis (empty) is subscribed again and the local levels pushed."""
    errors: list[str] = []
    states: list[bool] = []
    with RedisServer(runtime_dir(fleet_dir, "mirror")) as redis:
        settings = PenaltySettings(
            backend="redis", redis_url=redis.url, key_prefix="m:", redis_retry_after=0.2
        )
        state = SharedState(settings, on_error=errors.append, on_state=states.append)
        state.snapshot = lambda: [("ip", "192.0.2.20", 3, 60.0)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(state.run)
            await _until(lambda: state.mirror.synced)
            assert state.lookup("192.0.2.20", "acct") == (0, 0)
            redis.kill()
            await _until(lambda: state.lookup("192.0.2.20", "acct") is None)
            assert states == [False] and "connection" in errors
            redis.start()  # empty: this process's levels are pushed back
            await _until(lambda: state.lookup("192.0.2.20", "acct") == (3, 0))
            assert states == [False, True]
            assert int(redis.client().get("m:ip:192.0.2.20")) == 3
            state.close()


async def test_a_silent_redis_is_noticed_by_the_subscription_s_ping(fleet_dir: Path) -> None:
    """SIGSTOP keeps the sockets open: without writes, only the ping notices it."""
    import signal

    errors: list[str] = []
    with RedisServer(runtime_dir(fleet_dir, "stopped")) as redis:
        settings = PenaltySettings(
            backend="redis", redis_url=redis.url, key_prefix="s:", redis_retry_after=0.2
        )
        state = SharedState(settings, on_error=errors.append)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(state.run)
            await _until(lambda: state.mirror.synced)
            redis.signal(signal.SIGSTOP)
            try:
                await _until(lambda: state.lookup("192.0.2.30", "a") is None)
                assert errors and errors[0] == "timeout"
            finally:
                redis.signal(signal.SIGCONT)
            await _until(lambda: state.lookup("192.0.2.30", "a") == (0, 0))
            state.close()


def _readme_acl_rules() -> list[str]:
    """The README's ``ACL SETUSER authbridge ...`` rules, for the prefix ``acl:``."""
    import re

    text = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    found = re.search(r"`ACL SETUSER authbridge (on [^`]+)`", text)
    assert found, "README.md lost its ACL SETUSER line"
    rules = found.group(1).replace("authbridge:", "acl:").replace(">PASSWORD", ">acl-pw")
    return rules.split()


async def test_the_readme_s_acl_user_is_enough(locked_redis: RedisServer) -> None:
    """The README's ``ACL SETUSER`` line (prefix ``acl:``): writes, the subscription and
    its load all work with exactly those rights."""
    admin = locked_redis.client()
    admin.execute_command("ACL", "SETUSER", "authbridge", *_readme_acl_rules())
    admin.set("acl:ip:192.0.2.40", 2, px=60_000)  # there before the instance starts
    url = f"unix://authbridge:acl-pw@{locked_redis.socket}?db=3"
    errors: list[str] = []
    settings = PenaltySettings(backend="redis", redis_url=url, key_prefix="acl:")
    a, b = SharedState(settings, on_error=errors.append), SharedState(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await _until(lambda: a.mirror.synced and b.mirror.synced)
        assert b.lookup("192.0.2.40", "acct") == (2, 0)
        a.failed("192.0.2.41", "acct", b"fp")
        await _until(lambda: b.lookup("192.0.2.41", "acct") == (1, 1))
        a.succeeded("192.0.2.40")
        await _until(lambda: b.lookup("192.0.2.40", "acct") == (0, 1))
        a.close()
        b.close()
    assert errors == []
