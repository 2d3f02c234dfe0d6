"""Password verification kept off the event loop, on every core.

Cheap schemes (plain, salted SHA, CRAM-MD5 contexts) are checked inline: a hop to
another thread or process would cost more than the hash. Expensive ones (crypt family,
bcrypt, argon2, PBKDF2) go to a pool of worker *processes* sized to the cores: CPython's
``crypt`` module and libpass's pure-Python SHA-crypt hold the GIL, so threads would run
them one at a time. A burst of slow hashes queues in the pool instead of stalling the
handshake of the next connection, and a 2-core machine verifies twice as many as a
single-threaded auth process.

The bridge from a ``concurrent.futures`` future back to trio is a done-callback that
wakes the waiting task through the trio token: no thread is parked per request.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

import trio

from authbridge import schemes
from authbridge.schemes import StoredPassword


class HasherUnavailable(Exception):
    """The worker pool broke (a worker died); the check is an internal failure."""


def _warm_up() -> int:
    """Run in each worker once, so the first real check does not pay for imports."""
    schemes.available_schemes()
    return os.getpid()


class Hasher:
    def __init__(self, workers: int | None = None, processes: bool = True) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.processes = processes
        self.queued = 0
        self._limiter = trio.CapacityLimiter(self.workers)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker processes now (at daemon start, not on the first login)."""
        if not self.processes or self._pool is not None:
            return
        # forkserver: workers never inherit the event loop's threads or sockets.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["authbridge.schemes"])
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        for future in [pool.submit(_warm_up) for _ in range(self.workers)]:
            future.result()
        self._pool = pool  # only now: until the workers are warm, threads do the work

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def verify(self, stored: StoredPassword, password: bytes, user: str) -> bool:
        """True when ``password`` matches; raises schemes.SchemeError for broken data."""
        if not schemes.is_expensive(stored):
            return schemes.verify_password(stored, password, user)
        self.queued += 1
        try:
            if self._pool is None:
                return await trio.to_thread.run_sync(
                    partial(schemes.verify_password, stored, password, user),
                    limiter=self._limiter,
                )
            return await self._in_process(stored, password, user)
        finally:
            self.queued -= 1

    async def _in_process(self, stored: StoredPassword, password: bytes, user: str) -> bool:
        assert self._pool is not None
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: Future[bool]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        try:
            future = self._pool.submit(schemes.verify_password, stored, password, user)
        except BrokenProcessPool:
            self._restart()
            raise HasherUnavailable("the hashing worker pool was broken; restarted") from None
        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        try:
            return future.result()
        except BrokenProcessPool:
            self._restart()
            raise HasherUnavailable("a hashing worker died; pool restarted") from None

    def _restart(self) -> None:
        self.close()
        self.start()
