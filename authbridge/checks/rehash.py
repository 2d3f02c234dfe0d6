"""Rehash on login: a weak stored password replaced after a successful PLAIN/LOGIN login.

The check pipeline calls :meth:`Rehasher.offer` with the password it just verified and
the stored value it verified against. ``offer`` decides (see rehash_policy) and puts a
small job on a bounded queue; it never waits, and a full queue drops the job (counted).
One background task of the daemon (:meth:`Rehasher.run`) takes the jobs, hashes each
password with the target scheme in a thread (a strong scheme is slow on purpose), and
hands the new values to the store, which writes them only where the user's entry still
holds the verified value (see ``passdb.rewrite``). Nothing here can fail a login: the
reply went out before any of this runs, and a failing write is counted and logged.

A write that fails (a read-only directory, a lock held too long, a database error) is
not tried again at once: the store and each of its users in the batch wait a backoff
(:data:`BACKOFF_FIRST` seconds, doubling on each further failure up to
:data:`BACKOFF_MAX`), and logins meanwhile are counted ``deferred``, not queued. A
user whose entry the store cannot rewrite in place (``skipped_unwritable``) waits the
longest backoff at once. A success clears the store's backoff.

Logs name the user, the store and the scheme names; never the password or a hash.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import trio

from authbridge import schemes
from authbridge.checks.rehash_policy import KEEP_FOR_MECHANISM, RehashPolicy
from authbridge.errors import StoreError
from authbridge.observability.logs import get_logger
from authbridge.passdb.rewrite import CHANGED, UNWRITABLE, WRITTEN, PasswordChange
from authbridge.schemes import StoredPassword

log = get_logger("authbridge.rehash")

#: The closed set of results counted in ``authbridge_rehashes_total``.
RESULTS = (WRITTEN, CHANGED, "skipped_mechanism", UNWRITABLE, "dropped", "failed", "deferred")
#: Jobs taken from the queue together; one file write serves those of the same store.
BATCH = 64
#: Users warned about (kept for a mechanism) remembered, so each is warned once.
WARNED_MAX = 100_000
#: Seconds a store (and its users) waits after a failed write, then doubling...
BACKOFF_FIRST = 60.0
#: ... up to this.
BACKOFF_MAX = 3600.0
#: Users in backoff remembered at most (the oldest are forgotten first).
BACKOFF_USERS_MAX = 100_000


@dataclass(slots=True)
class Backoff:
    """Until when a store or a user is not written to again, and the delay that led there."""

    until: float
    delay: float


class Rewritable(Protocol):
    """A store that can write new password values: ``can_rewrite`` is true, and it has
    ``rewrite_passwords(changes)`` (blocking: the passwd-file and Exim file stores, run
    in a thread) or ``async arewrite_passwords(changes)`` (SQL with an update_query),
    answering each user's result (``written`` or ``skipped_changed``)."""

    @property
    def name(self) -> str: ...

    @property
    def can_rewrite(self) -> bool: ...


_K = TypeVar("_K", int, tuple[int, str])
_SyncRewrite = Callable[[Sequence[PasswordChange]], dict[str, str]]
_AsyncRewrite = Callable[[Sequence[PasswordChange]], Awaitable[dict[str, str]]]


@dataclass(slots=True)
class RehashJob:
    store: Rewritable
    user: str
    #: The stored value the login verified: the entry is changed only if it still holds it.
    verified: StoredPassword
    password: bytes


class Rehasher:
    """The queue of rehash jobs and the task that serves it."""

    def __init__(
        self,
        policy: RehashPolicy,
        queue_size: int,
        on_result: Callable[[str], None] | None = None,
        backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Replaced on reload; the queue stays.
        self.policy = policy
        self.on_result = on_result
        self._send, self._receive = trio.open_memory_channel[RehashJob](queue_size)
        #: (store, user) queued or being written: a user logging in again meanwhile is
        #: not queued twice.
        self._pending: set[tuple[int, str]] = set()
        self._warned: set[tuple[str, str]] = set()
        self._limiter = trio.CapacityLimiter(1)
        self._backoff_first, self._backoff_max = backoff
        self._clock = clock
        #: Keyed by id(store) and by (id(store), user); only failures are in here.
        self._store_backoff: dict[int, Backoff] = {}
        self._user_backoff: dict[tuple[int, str], Backoff] = {}

    def _count(self, result: str, amount: int = 1) -> None:
        if self.on_result is not None:
            for _ in range(amount):
                self.on_result(result)

    # ------------------------------------------------------------------ login path

    def offer(self, store: object, user: str, stored: StoredPassword, password: bytes) -> None:
        """After a successful login: queue a rehash if ``stored`` is weak. Never waits."""
        decision = self.policy.decide(stored)
        if decision is None:
            return
        if not getattr(store, "can_rewrite", False):
            return  # a store that cannot be written (SQL without an update_query)
        key = (id(store), user)
        if key in self._pending:
            return
        if decision == KEEP_FOR_MECHANISM:
            self._count("skipped_mechanism")
            self._warn_kept(store, user, stored)
            return
        if (self._store_backoff or self._user_backoff) and self._waiting(id(store), key):
            self._count("deferred")
            return
        job = RehashJob(store, user, stored, password)  # type: ignore[arg-type]
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            self._count("dropped")
            return
        self._pending.add(key)

    def _warn_kept(self, store: object, user: str, stored: StoredPassword) -> None:
        name = str(getattr(store, "name", "?"))
        if (name, user) in self._warned:
            return
        if len(self._warned) >= WARNED_MAX:
            self._warned.clear()
        self._warned.add((name, user))
        log.warning(
            "weak password kept: an enabled mechanism needs it",
            user=user,
            store=name,
            scheme=stored.scheme,
            target=self.policy.scheme,
            needed_by=",".join(sorted(self.policy.needed_by(stored))),
        )

    # ------------------------------------------------------------------ backoff

    def _waiting(self, store: int, key: tuple[int, str]) -> bool:
        now = self._clock()
        entries = (self._store_backoff.get(store), self._user_backoff.get(key))
        return any(entry is not None and now < entry.until for entry in entries)

    def _back_off(self, table: dict[_K, Backoff], name: _K, longest: bool = False) -> None:
        previous = table.get(name)
        delay = self._backoff_max if longest else self._backoff_first
        if previous is not None and not longest:
            delay = min(previous.delay * 2, self._backoff_max)
        table.pop(name, None)  # re-inserted last: the oldest go first when full
        table[name] = Backoff(self._clock() + delay, delay)
        if len(table) > BACKOFF_USERS_MAX:
            del table[next(iter(table))]

    def _failed(self, jobs: list[RehashJob]) -> None:
        """Count a failed write of ``jobs`` and back their store and users off."""
        self._count("failed", len(jobs))
        self._back_off(self._store_backoff, id(jobs[0].store))
        for job in jobs:
            self._back_off(self._user_backoff, (id(job.store), job.user))

    def backing_off(self) -> int:
        """Stores and users waiting after a failure (for tests and reports)."""
        now = self._clock()
        entries = [*self._store_backoff.values(), *self._user_backoff.values()]
        return sum(1 for entry in entries if now < entry.until)

    # ------------------------------------------------------------------ the task

    def queued(self) -> int:
        return int(self._receive.statistics().current_buffer_used)

    async def run(self) -> None:
        """Serve the queue until cancelled: a write under way is finished first (the file
        is replaced whole or not at all), a batch being hashed is left after its current
        hash (see :meth:`_rewrite`)."""
        async for job in self._receive:
            batch = [job]
            while len(batch) < BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            by_store: dict[int, list[RehashJob]] = {}
            for item in batch:
                by_store.setdefault(id(item.store), []).append(item)
            for jobs in by_store.values():
                try:
                    await self._rewrite(jobs)
                except Exception as exc:  # a rehash never takes the daemon down
                    self._failed(jobs)
                    log.error(
                        "rehash failed",
                        store=jobs[0].store.name,
                        users=len(jobs),
                        error=type(exc).__name__,
                    )
                finally:
                    for item in jobs:
                        self._pending.discard((id(item.store), item.user))

    async def _rewrite(self, jobs: list[RehashJob]) -> None:
        policy = self.policy
        # One thread call per job: a shutdown (cancellation) waits for the hash under
        # way, not for the whole batch (64 ARGON2ID hashes take many seconds). Jobs not
        # written are redone at the user's next login.
        changes = []
        for job in jobs:
            changes.append(
                await trio.to_thread.run_sync(
                    partial(_new_value, job, policy.scheme, policy.rounds), limiter=self._limiter
                )
            )
        store = jobs[0].store
        try:
            arewrite: _AsyncRewrite | None = getattr(store, "arewrite_passwords", None)
            if arewrite is not None:
                results = await arewrite(changes)
            else:
                rewrite: _SyncRewrite = getattr(store, "rewrite_passwords")  # noqa: B009
                results = await trio.to_thread.run_sync(rewrite, changes, limiter=self._limiter)
        except (OSError, StoreError) as exc:
            self._failed(jobs)
            # An OSError's reason (and file), an SqlStoreError's store and driver line:
            # neither quotes a password or a hash.
            why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            log.warning(
                "rehash not written: the store could not be changed",
                store=store.name,
                users=len(jobs),
                error=why or type(exc).__name__,
            )
            return
        self._store_backoff.pop(id(store), None)
        for job in jobs:
            result = results.get(job.user, CHANGED)
            self._count(result)
            self._user_backoff.pop((id(store), job.user), None)
            if result == UNWRITABLE:
                self._back_off(self._user_backoff, (id(store), job.user), longest=True)
                log.warning(
                    "rehash not written: the user's entry cannot be rewritten in place",
                    user=job.user,
                    store=store.name,
                )
            elif result == WRITTEN:
                log.info(
                    "password rehashed",
                    user=job.user,
                    store=store.name,
                    old=job.verified.scheme,
                    new=policy.scheme,
                )
            else:
                log.info(
                    "rehash skipped: the user's entry changed since the login",
                    user=job.user,
                    store=store.name,
                )


def _new_value(job: RehashJob, scheme: str, rounds: int | None) -> PasswordChange:
    """The job's password hashed with ``scheme`` (slow: in a thread)."""
    value = schemes.generate(scheme, job.password, job.user, rounds)
    if any(c in value for c in ": \t\r\n"):
        raise ValueError(f"a {scheme} value cannot be stored in a colon-separated line")
    return PasswordChange(job.user, job.verified, value)
