"""SharedState in-process on a real redis-server with a password: the trio reader's
AUTH and SELECT, the failure script's rules, the breaker on a refusing Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from authbridge.checks.fingerprint import Fingerprints
from authbridge.checks.shared import SharedState
from authbridge.config import PenaltySettings
from tests.support import runtime_dir
from tests.support.redis import RedisServer


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
