"""Password spraying: wrong guesses at one account, counted over every address.

One password tried against many accounts from many addresses stays under any per-address
limit; counting per account catches it. The count slows further guesses at that account
(:meth:`delay`) but never locks its rightful user out: :mod:`authbridge.checks.fleet`
holds only requests from addresses that already failed, and delays the FAIL (never the
OK) of a clean address. Only new guesses count (an identical wrong password retried
from one address is one guess), and a count is forgotten after ``user_forget_after``
seconds without a new failure.
"""

from __future__ import annotations

from collections import OrderedDict

from authbridge.config import PenaltySettings


def spray_delay(settings: PenaltySettings, failures: int) -> float:
    """Seconds for an account with ``failures`` new wrong guesses (0 below the threshold)."""
    over = failures - settings.user_threshold
    if over < 0:
        return 0.0
    steps = settings.user_steps
    return steps[min(over, len(steps) - 1)]


class UserFailures:
    """This process's per-account counts (also the fallback when Redis is away)."""

    def __init__(self, settings: PenaltySettings) -> None:
        self.settings = settings
        #: user -> (new wrong guesses, time of the last)
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.entries = self._counts  # never replaced: its emptiness is read per request

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, user: str, now: float) -> int:
        entry = self._counts.get(user)
        if entry is None:
            return 0
        if now - entry[1] > self.settings.user_forget_after:
            del self._counts[user]
            return 0
        return entry[0]

    def failed(self, user: str, now: float) -> int:
        """One more new wrong guess at ``user``; the count after it."""
        count = self.count(user, now) + 1
        self._counts[user] = (count, now)
        self._counts.move_to_end(user)
        while len(self._counts) > self.settings.max_entries:
            self._counts.popitem(last=False)
        return count

    def counts(self, now: float) -> list[tuple[str, int, float]]:
        """Every live account: (user, count, seconds left before it is forgotten)."""
        forget = self.settings.user_forget_after
        return [
            (user, n, forget - (now - at))
            for user, (n, at) in self._counts.items()
            if now - at <= forget
        ]
