"""The penalty's shared state on Redis: one fleet, one count per address and per account.

Latency: none on a request's path. Each failure is written by a Lua script (atomic: new
guess? more levels?) that also PUBLISHes the key's new value; every instance subscribes
and keeps the values in a :class:`~authbridge.checks.mirror.Mirror`, loaded once by SCAN
when the subscription starts. A check reads the mirror (:meth:`SharedState.lookup`, two
dict lookups). The writes are queued and sent by :meth:`SharedState.run` after the
verdict, off the request's path. TTLs live in Redis (``PEXPIRE``): no cleanup job.

The writes use redis-py (scripts, pipelines): its asyncio client runs on asyncio only and
the daemon is trio, so its synchronous client (thread-safe, its own connection pool) is
called from worker threads under a dedicated :class:`trio.CapacityLimiter`: a slow Redis
holds at most ``THREADS`` threads, never the event loop, and not the hash pool's. The
subscription and its load run on trio's own sockets (:mod:`authbridge.checks.resp`).

Redis down, slow or refusing: each write is bounded by ``redis_timeout`` and the
subscription is pinged every ``PING_EVERY`` seconds; the first failure opens a circuit
breaker for ``redis_retry_after`` seconds during which nothing waits on Redis and
requests use the local tracker alone (writes are dropped: the local tracker has them).
The subscription is then re-made and the mirror reloaded; its success closes the breaker
and pushes the local levels and counts that are higher than Redis's
(:meth:`SharedState.resync`). An outage is logged once when it starts and once when it
ends, and each failed call is counted by kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import trio

from authbridge.checks.mirror import Mirror
from authbridge.checks.resp import RespError, RespReader
from authbridge.config import PenaltySettings
from authbridge.observability.logs import get_logger

log = get_logger("authbridge.penalty")

#: Threads that may wait on Redis at once (stuck ones included, see fetch()).
THREADS = 8
#: Failure writes waiting for the writer; beyond it they are dropped (and counted).
QUEUE = 10_000
#: Writes sent in one pipeline (one round trip).
BATCH = 256
#: Seconds between pings on the subscription, and the grace after which a silent
#: Redis counts as gone (a SIGSTOPped Redis keeps its sockets open).
PING_EVERY = 1.0
PONG_GRACE = 2.0
#: Keys read per SCAN step when the mirror is loaded.
SCAN_COUNT = "1000"

# KEYS: level, guesses, users, account. ARGV: guess fingerprint ('' = always new),
# account fingerprint, forget_after ms, user_forget_after ms, max_users_per_ip (0: the
# spraying parts off), the channel, the address's bucket. Publishes the new values and
# returns the address's level after this failure.
_FAILED = """
local new = 1
if ARGV[1] ~= '' then
  new = redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local level = tonumber(redis.call('GET', KEYS[1]) or '0')
if new == 1 then
  local step = 1
  local limit = tonumber(ARGV[5])
  if limit > 0 then
    if redis.call('SCARD', KEYS[3]) <= limit then
      redis.call('SADD', KEYS[3], ARGV[2])
      redis.call('PEXPIRE', KEYS[3], ARGV[3])
    end
    if redis.call('SCARD', KEYS[3]) > limit then step = 2 end
    local count = redis.call('INCR', KEYS[4])
    redis.call('PEXPIRE', KEYS[4], ARGV[4])
    redis.call('PUBLISH', ARGV[6], 'user ' .. ARGV[2] .. ' ' .. count .. ' ' .. ARGV[4])
  end
  level = redis.call('INCRBY', KEYS[1], step)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if level > 0 then
  redis.call('PUBLISH', ARGV[6], 'ip ' .. ARGV[7] .. ' ' .. level .. ' ' .. ARGV[3])
end
return level
"""

# KEYS: one counter. ARGV: value, TTL ms, the channel, "<kind> <name>". Raises the
# counter to the value, never lowers it (and publishes the raise).
_RAISE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
end
return current
"""

# KEYS: counters found by SCAN. Returns each one's value ('' if gone) and PTTL.
_LOAD = """
local out = {}
for _, key in ipairs(KEYS) do
  out[#out + 1] = redis.call('GET', key) or ''
  out[#out + 1] = redis.call('PTTL', key)
end
return out
"""


class SharedState:
    """One Redis, reached from worker threads, behind a circuit breaker."""

    def __init__(
        self,
        settings: PenaltySettings,
        on_error: Callable[[str], None] = lambda kind: None,
        on_state: Callable[[bool], None] = lambda up: None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        import redis  # only a fleet configuration pays for the import
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.settings = settings
        self.on_error, self.on_state, self.clock = on_error, on_state, clock
        timeout = settings.redis_timeout
        self._client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # no retries: the breaker decides
            health_check_interval=0,
        )
        # Exception: whatever else goes wrong on the way to Redis ("internal") must
        # not cost a login either; it is counted and logged like an outage.
        self._errors: tuple[type[BaseException], ...] = (Exception,)
        self._timeout_errors: tuple[type[BaseException], ...] = (
            redis.TimeoutError,
            trio.TooSlowError,
        )
        self._connection_errors: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            OSError,
            trio.BrokenResourceError,
        )
        self._refused_errors: tuple[type[BaseException], ...] = (redis.RedisError, RespError)
        self._reader = RespReader(settings.redis_url)
        self._failed_script = self._client.register_script(_FAILED)
        self._raise_script = self._client.register_script(_RAISE)
        self._limiter = trio.CapacityLimiter(THREADS)
        self._send, self._receive = trio.open_memory_channel[tuple[Any, ...]](QUEUE)
        prefix = settings.key_prefix
        self._ip, self._guesses, self._users = f"{prefix}ip:", f"{prefix}ipg:", f"{prefix}ipu:"
        self._account = f"{prefix}user:"
        self.channel = f"{prefix}events"
        #: The fleet's counts as the subscription last told them (read by lookup()).
        self.mirror = Mirror(clock)
        self._pong = 0.0
        self._forget_ms = str(max(1, math.ceil(settings.forget_after * 1000)))
        self._user_forget_ms = str(max(1, math.ceil(settings.user_forget_after * 1000)))
        self._max_users = str(settings.max_users_per_ip if settings.spraying else 0)
        #: Breaker: None while Redis answers; else when the outage began.
        self.down_since: float | None = None
        self._retry_at = 0.0
        self._probing = False
        #: Set by the owner: what to push when Redis comes back.
        self.snapshot: Callable[[], Iterable[tuple[str, str, int, float]]] = list
        self.closed = False

    # ------------------------------------------------------------ the breaker

    def usable(self) -> bool:
        """Whether to ask Redis now; while it is away, one caller in a while probes."""
        if self.down_since is None:
            return True
        if self._probing or self.clock() < self._retry_at:
            return False
        self._probing = True
        return True

    def _failed(self, exc: BaseException) -> None:
        kind = self._kind(exc)
        self.on_error(kind)
        self._probing = False
        self._retry_at = self.clock() + self.settings.redis_retry_after
        if self.down_since is None:
            self.down_since = self.clock()
            self.on_state(False)
            log.warning(
                "shared state unavailable; serving on local state",
                backend="redis",
                kind=kind,
                error=type(exc).__name__,
                retry_after=self.settings.redis_retry_after,
            )

    def _answered(self) -> None:
        self._probing = False
        if self.down_since is not None:
            down_for = round(self.clock() - self.down_since, 3)
            self.down_since = None
            self.on_state(True)
            log.warning("shared state recovered", backend="redis", down_for=down_for)
            self.queue(("resync",))

    def _kind(self, exc: BaseException) -> str:
        if isinstance(exc, self._timeout_errors):
            return "timeout"
        if isinstance(exc, self._connection_errors):
            return "connection"
        if isinstance(exc, self._refused_errors):
            return "refused"
        return "internal"

    # ------------------------------------------------------------ reads

    def lookup(self, bucket: str, account: str) -> tuple[int, int] | None:
        """The address's level and the account's count in the fleet, from the mirror;
        ``None`` while it cannot be trusted (Redis away, subscription not loaded)."""
        mirror = self.mirror
        if self.down_since is not None or not mirror.synced:
            return None
        now = self.clock()
        return mirror.value("ip", bucket, now), mirror.value("user", account, now)

    async def watch(self) -> None:
        """Keep the mirror: subscribe, load, apply each message; again after a break."""
        while not self.closed:
            try:
                await self._subscribed()
            except self._errors as exc:
                self.mirror.lost()
                self._failed(_cause(exc))
            await trio.sleep(self.settings.redis_retry_after)

    async def _subscribed(self) -> None:
        timeout = self.settings.redis_timeout
        with trio.fail_after(timeout * 10):
            conn = await self._reader.connect()
        try:
            with trio.fail_after(timeout * 10):
                await conn.call("SUBSCRIBE", self.channel)
            self.mirror.begin_load()
            self._pong = self.clock()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, conn)
                await self._load()
                self.mirror.end_load()
                self._answered()
                while True:
                    await trio.sleep(PING_EVERY)
                    if self.clock() - self._pong > PING_EVERY + PONG_GRACE:
                        raise trio.TooSlowError("no answer to PING on the subscription")
                    with trio.fail_after(timeout * 10):
                        await conn.send("PING")
        finally:
            self.mirror.lost()
            await conn.aclose()

    async def _listen(self, conn: Any) -> None:
        while True:
            reply = await conn.reply()
            if isinstance(reply, list) and reply:
                if reply[0] == b"message" and len(reply) == 3:
                    self.mirror.message(reply[2])
                elif reply[0] == b"pong":
                    self._pong = self.clock()

    async def _load(self) -> None:
        """Read the counters already in Redis into the mirror (SCAN, then values)."""
        timeout = self.settings.redis_timeout * 10
        with trio.fail_after(timeout):
            conn = await self._reader.connect()
        try:
            for kind, prefix in (("ip", self._ip), ("user", self._account)):
                cursor: bytes = b"0"
                while True:
                    with trio.fail_after(timeout):
                        cursor, keys = await conn.call(
                            "SCAN", cursor, "MATCH", prefix + "*", "COUNT", SCAN_COUNT
                        )
                    if keys:
                        with trio.fail_after(timeout):
                            values = await conn.call("EVAL", _LOAD, str(len(keys)), *keys)
                        for key, value, ttl in zip(keys, values[0::2], values[1::2], strict=True):
                            name = key[len(prefix) :].decode("ascii", "replace")
                            self.mirror.loaded(kind, name, int(value or 0), int(ttl))
                    if cursor == b"0":
                        break
        finally:
            await conn.aclose()

    async def fetch(self, bucket: str, account: str | None) -> tuple[int, int] | None:
        """The address's level and the account's count read from Redis itself (one
        round trip: for ``authbridge check`` and tests; requests read the mirror)."""
        keys = (
            [self._ip + bucket] if account is None else [self._ip + bucket, self._account + account]
        )
        try:
            with trio.fail_after(self.settings.redis_timeout):
                values = await self._reader.mget(keys)
        except self._errors as exc:
            self._failed(exc)
            return None
        self._answered()
        level = int(values[0] or 0)
        count = int(values[1] or 0) if account is not None else 0
        return level, count

    # ------------------------------------------------------------ writes (off the path)

    def queue(self, job: tuple[Any, ...]) -> None:
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            self.on_error("queue_full")
        except trio.ClosedResourceError:
            pass  # a reload replaced this state; a request begun before it ends here

    def failed(self, bucket: str, account: str, guess: bytes | None) -> None:
        """A failed guess from ``bucket`` at ``account`` (``guess`` None: always new)."""
        self.queue(("failed", bucket, account, b"" if guess is None else guess))

    def succeeded(self, bucket: str) -> None:
        self.queue(("succeeded", bucket))

    def close(self) -> None:
        """Stop :meth:`run` (a reload replaced this state)."""
        self.closed = True
        self._send.close()

    async def run(self) -> None:
        """Keep the mirror and send the queued writes until :meth:`close`."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch)
            await self._write_queued()
            nursery.cancel_scope.cancel()

    async def _write_queued(self) -> None:
        """Send the queued writes, a batch per round trip, while the breaker allows."""
        async with self._receive:
            async for job in self._receive:
                batch = [job]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                if not self.usable():
                    continue  # the local tracker has them; resync pushes the levels
                # The snapshot is taken here, in trio's thread, where the counts change.
                batch = [("resync", self.snapshot()) if j[0] == "resync" else j for j in batch]
                try:
                    with trio.fail_after(self.settings.redis_timeout * 10):
                        await trio.to_thread.run_sync(
                            self._write, batch, limiter=self._limiter, abandon_on_cancel=True
                        )
                except self._errors as exc:
                    self._failed(exc)
                else:
                    self._answered()

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for job in batch:
            if job[0] == "failed":
                _, bucket, account, guess = job
                self._failed_script(
                    keys=[
                        self._ip + bucket,
                        self._guesses + bucket,
                        self._users + bucket,
                        self._account + account,
                    ],
                    args=[
                        guess,
                        account,
                        self._forget_ms,
                        self._user_forget_ms,
                        self._max_users,
                        self.channel,
                        bucket,
                    ],
                    client=pipe,
                )
            elif job[0] == "succeeded":
                bucket = job[1]
                pipe.delete(self._ip + bucket, self._guesses + bucket, self._users + bucket)
                pipe.publish(self.channel, f"ip {bucket} 0 0")
            else:
                self._resync(pipe, job[1])
        pipe.execute()

    def _resync(self, pipe: Any, snapshot: Iterable[tuple[str, str, int, float]]) -> None:
        """Raise Redis's counters to this process's where they are higher."""
        for kind, name, value, ttl in snapshot:
            key = (self._ip if kind == "ip" else self._account) + name
            ms = str(max(1, math.ceil(ttl * 1000)))
            label = f"{kind} {name}"
            self._raise_script(keys=[key], args=[value, ms, self.channel, label], client=pipe)


def _cause(exc: BaseException) -> BaseException:
    """The one error inside the groups a nursery wraps it in (for its kind)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
