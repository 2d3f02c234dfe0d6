"""Password verification kept off the event loop.

Cheap schemes (plain, salted SHA) are checked inline: a thread hop would cost more than
the hash. Expensive ones (crypt family, bcrypt, argon2, PBKDF2) go to worker threads
bounded by the number of cores, so a burst of slow hashes queues there instead of
stalling the handshake of the next connection.
"""

from __future__ import annotations

import os
from functools import partial

import trio

from authbridge import schemes
from authbridge.schemes import StoredPassword


class Hasher:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._limiter = trio.CapacityLimiter(self.workers)
        self.queued = 0

    async def verify(self, stored: StoredPassword, password: bytes, user: str) -> bool:
        """True when ``password`` matches; raises schemes.SchemeError for broken data."""
        if not schemes.is_expensive(stored):
            return schemes.verify_password(stored, password, user)
        self.queued += 1
        try:
            return await trio.to_thread.run_sync(
                partial(schemes.verify_password, stored, password, user),
                limiter=self._limiter,
            )
        finally:
            self.queued -= 1
