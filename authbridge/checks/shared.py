"""The penalty's shared state on Redis: one fleet, one count per address and per account.

Latency: one round trip before a check (:meth:`SharedState.fetch`, an MGET of the
address's and the account's keys) on trio's own sockets (:mod:`authbridge.checks.resp`:
no thread hop on the request's path); the failure writes (one Lua script per failure,
atomic: new guess? more levels?) are queued and sent by :meth:`SharedState.run` after
the reply, off the request's path. TTLs live in Redis (``PEXPIRE``): no cleanup job.

The writes use redis-py (scripts, pipelines): its asyncio client runs on asyncio only and
the daemon is trio, so its synchronous client (thread-safe, its own connection pool) is
called from worker threads under a dedicated :class:`trio.CapacityLimiter`: a slow Redis
holds at most ``THREADS`` threads, never the event loop, and not the hash pool's.

Redis down, slow or refusing: each call is bounded by ``redis_timeout``; the first
failure opens a circuit breaker for ``redis_retry_after`` seconds during which nothing
waits on Redis (requests use the local tracker alone, writes are dropped: the local
tracker has them). One request then probes; its success closes the breaker and pushes
the local levels and counts that are higher than Redis's (:meth:`SharedState.resync`).
An outage is logged once when it starts and once when it ends, and each failed call is
counted by kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import trio

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

# KEYS: level, guesses, users, account. ARGV: guess fingerprint ('' = always new),
# account fingerprint, forget_after ms, user_forget_after ms, max_users_per_ip (0: the
# spraying parts off). Returns the address's level after this failure.
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
    redis.call('INCR', KEYS[4])
    redis.call('PEXPIRE', KEYS[4], ARGV[4])
  end
  level = redis.call('INCRBY', KEYS[1], step)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return level
"""

# KEYS: one counter. ARGV: value, TTL ms. Raises the counter to the value, never lowers it.
_RAISE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return current
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

    async def fetch(self, bucket: str, account: str | None) -> tuple[int, int] | None:
        """The address's level and the account's count in Redis; ``None``: not now."""
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
                    args=[guess, account, self._forget_ms, self._user_forget_ms, self._max_users],
                    client=pipe,
                )
            elif job[0] == "succeeded":
                bucket = job[1]
                pipe.delete(self._ip + bucket, self._guesses + bucket, self._users + bucket)
            else:
                self._resync(pipe, job[1])
        pipe.execute()

    def _resync(self, pipe: Any, snapshot: Iterable[tuple[str, str, int, float]]) -> None:
        """Raise Redis's counters to this process's where they are higher."""
        for kind, name, value, ttl in snapshot:
            key = (self._ip if kind == "ip" else self._account) + name
            ms = str(max(1, math.ceil(ttl * 1000)))
            self._raise_script(keys=[key], args=[value, ms], client=pipe)
