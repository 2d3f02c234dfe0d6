"""The penalty beyond one address in one process: password spraying and shared state.

:class:`Fleet` joins three counts: the address's level (the local
:class:`~authbridge.checks.penalty.PenaltyTracker`), the account's new wrong guesses
over all addresses (:class:`~authbridge.checks.spraying.UserFailures`), and, with
``backend = "redis"``, the same two counts of the whole fleet
(:class:`~authbridge.checks.shared.SharedState`). When Redis answers, its counts
decide (a success at another instance cleared the address for all); when it does not,
this process's own counts do, and they are pushed to Redis when it returns.

Who waits, and when (the rightful user is never locked out):

- an address with failures waits *before* its check for the larger of its own step
  and the account's spraying step (never both: delay + failure delay stays below
  Postfix's 10 s);
- a clean address is checked at once; only if that fails for a sprayed account is the
  FAIL held for the spraying step (an OK is never held). So the rightful user, from an
  address that did not fail, logs in without delay however hard the account is sprayed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from authbridge.checks.fingerprint import Fingerprints
from authbridge.checks.shared import SharedState
from authbridge.checks.spraying import UserFailures, spray_delay
from authbridge.config import PenaltySettings


class LocalTracker(Protocol):
    """What the fleet uses of :class:`~authbridge.checks.penalty.PenaltyTracker` (which
    makes the fleet, so this module does not import it)."""

    settings: PenaltySettings
    fingerprints: Fingerprints

    def level_of(self, key: str, now: float) -> int: ...
    def failed_fp(self, key: str, user: str, checksum: bytes | None, now: float) -> bool: ...
    def succeeded_in(self, key: str | None) -> None: ...
    def levels(self, now: float) -> list[tuple[str, int, float]]: ...


class Fleet:
    def __init__(self, tracker: LocalTracker) -> None:
        self.tracker = tracker
        self.settings = settings = tracker.settings
        self.fingerprints = tracker.fingerprints
        self.users = UserFailures(settings)
        #: The accounts with failures (empty: no spraying delay for anyone; read by the
        #: pipeline to skip the fleet's steps while local and quiet).
        self.counts = self.users.entries
        self.spraying = settings.spraying
        #: Told of each spraying delay: ("before" | "after", seconds).
        self.on_spray: Callable[[str, float], None] = lambda when, seconds: None
        #: Told of each shared read: "hit" (Redis answered) or "fallback" (local only).
        self.on_shared: Callable[[str], None] = lambda result: None
        self.shared: SharedState | None = None
        if settings.backend == "redis":
            self.shared = SharedState(settings)
            self.shared.snapshot = self._snapshot

    def account(self, user: str) -> str:
        return self.fingerprints.user(user)

    def delays(
        self, bucket: str, user: str, remote: tuple[int, int] | None, now: float
    ) -> tuple[float, float, bool]:
        """(seconds before the check, seconds added to a FAIL, whether the address is
        clean) for this request."""
        if remote is not None:  # Redis answered: the fleet's truth (a success elsewhere
            level, count = remote  # cleared the address everywhere)
        else:
            level = self.tracker.level_of(bucket, now)
            count = self.users.count(user, now) if self.spraying else 0
        spray = spray_delay(self.settings, count) if self.spraying else 0.0
        if level > 0:
            steps = self.settings.steps
            step = steps[min(level, len(steps)) - 1]
            if spray > step:
                self.on_spray("before", spray)
                return spray, 0.0, False
            return step, 0.0, False
        return 0.0, spray, True

    def failed(self, bucket: str, user: str, secret: bytes | None, now: float) -> None:
        guess = None if secret is None else self.fingerprints.guess(user, secret)
        new = self.tracker.failed_fp(bucket, user, guess, now)
        if new and self.spraying:
            self.users.failed(user, now)
        if self.shared is not None:
            self.shared.failed(bucket, self.account(user), guess)

    def succeeded(self, bucket: str, clean: bool = False) -> None:
        """A success from ``bucket``; ``clean``: it had no level before (as far as the
        read before the check knew), so Redis has nothing to clear and is not called."""
        self.tracker.succeeded_in(bucket)
        if self.shared is not None and not clean:
            self.shared.succeeded(bucket)

    def _snapshot(self) -> list[tuple[str, str, int, float]]:
        """What to push to Redis when it returns: local levels and counts, with TTLs."""
        now = self.shared.clock() if self.shared is not None else 0.0
        pushed = [("ip", key, level, ttl) for key, level, ttl in self.tracker.levels(now)]
        pushed += [("user", self.account(u), n, ttl) for u, n, ttl in self.users.counts(now)]
        return pushed
