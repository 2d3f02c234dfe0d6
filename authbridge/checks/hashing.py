"""Password verification kept off the event loop, on every core.

Cheap schemes (plain, salted SHA, CRAM-MD5 contexts) are checked inline: a hop to a
thread would cost more than the hash. Expensive ones (crypt family, bcrypt, argon2,
PBKDF2, SCRAM key derivation) go to worker threads, as many as there are cores. Each of
those computes in C with the GIL released — libxcrypt's ``crypt_r`` through ctypes,
bcrypt, argon2-cffi, hashlib — so the threads really run in parallel, and a 2-core
machine verifies about twice as many SHA512-CRYPT hashes per second as Dovecot's
single-threaded auth process. A burst of slow hashes queues on the limiter instead of
stalling the handshake of the next connection.

(Worker processes were measured too: a round trip cost the parent ~0.2 ms of CPU and
each worker ~40 MB, for no gain once the hashes release the GIL.)
"""

from __future__ import annotations

import os
from functools import partial

import trio

from authbridge import schemes
from authbridge.schemes import StoredPassword


class HasherUnavailable(Exception):
    """Verification could not run at all; the check is an internal failure."""


class Hasher:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.queued = 0
        self._limiter = trio.CapacityLimiter(self.workers)

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
        except (RuntimeError, MemoryError) as exc:  # no thread could be started
            raise HasherUnavailable(str(exc)) from None
        finally:
            self.queued -= 1
