"""Auth cache: remembers recent verdicts so slow hashes and slow stores are paid once.

Entries are keyed by the normalised user and hold a keyed digest of the password that
was checked (never the password). Dovecot's semantics are kept:

- a cached success is used only for the same password; a different password is
  re-checked for real (the password may have changed), never failed from the cache;
- a cached failure is used for the same wrong password until the negative TTL ends;
- when the store has an internal failure, a cached success for the same password is
  served even if expired, so an outage does not lock out users who just logged in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

# Defined with the rest of the configuration (which must not import the checks);
# re-exported here, next to the cache it configures.
from authbridge.config import CacheSettings as CacheSettings
from authbridge.core.verdict import Verdict


@dataclass(slots=True)
class _Entry:
    digest: bytes
    verdict: Verdict
    stored_at: float


class AuthCache:
    def __init__(self, settings: CacheSettings | None = None) -> None:
        self.settings = settings or CacheSettings()
        self._key = secrets.token_bytes(32)
        self._ok: OrderedDict[str, _Entry] = OrderedDict()
        self._fail: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._ok) + len(self._fail)

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def _digest(self, password: bytes) -> bytes:
        return hmac.new(self._key, password, hashlib.sha256).digest()

    def lookup(self, user: str, password: bytes, now: float) -> Verdict | None:
        """A cached verdict that may be served now, or ``None`` (check for real)."""
        if not self.enabled:
            return None
        digest = self._digest(password)
        ok = self._ok.get(user)
        if ok is not None and now - ok.stored_at <= self.settings.ttl:
            if hmac.compare_digest(ok.digest, digest):
                self._ok.move_to_end(user)
                self.hits += 1
                return ok.verdict
            # Cached success, different password: the password may have changed.
            self.misses += 1
            return None
        bad = self._fail.get(user)
        fresh = bad is not None and now - bad.stored_at <= self.settings.negative_ttl
        if bad is not None and fresh and hmac.compare_digest(bad.digest, digest):
            self.hits += 1
            return bad.verdict
        self.misses += 1
        return None

    def stale_success(self, user: str, password: bytes) -> Verdict | None:
        """A cached success for this password, however old (for store outages)."""
        if not self.enabled:
            return None
        ok = self._ok.get(user)
        if ok is not None and hmac.compare_digest(ok.digest, self._digest(password)):
            return ok.verdict
        return None

    def store(self, user: str, password: bytes, verdict: Verdict, now: float) -> None:
        if not self.enabled:
            return
        entry = _Entry(self._digest(password), verdict, now)
        if verdict.ok:
            self._fail.pop(user, None)
            self._ok[user] = entry
            self._ok.move_to_end(user)
        elif self.settings.negative_ttl > 0:
            self._fail[user] = entry
            self._fail.move_to_end(user)
        while len(self) > self.settings.max_entries:
            victim = self._fail if self._fail else self._ok
            victim.popitem(last=False)

    def flush(self) -> int:
        """Forget everything (store reload, SIGUSR2); returns how many were dropped."""
        dropped = len(self)
        self._ok.clear()
        self._fail.clear()
        return dropped
