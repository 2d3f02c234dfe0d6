"""This process's copy of the fleet's counts, kept current by Redis's messages.

Why a copy: a read from Redis before each check put a round trip on every login's path
(+0.3 ms at p50 and up to +1.5 ms at p99 on the test VM, more than issue 18 allows). The
counts change only on failures, which are rare next to logins, so every instance writes
to Redis and Redis tells every instance (PUBLISH from the same script that changes the
key): a check then reads a dict. When the subscription starts, the keys already in Redis
are loaded once (SCAN); a message that arrives during that load is newer than the load.

Entries expire with the TTL Redis gave their key, so the copy forgets as Redis does.
Bounded: past ``limit`` entries, expired ones are dropped, then the oldest.
"""

from __future__ import annotations

from collections.abc import Callable

#: Entries kept per table (addresses, accounts): 64 bytes-ish each, a few tens of MB.
LIMIT = 200_000


class Mirror:
    """Two tables, ``ip`` (address buckets → level) and ``user`` (account fingerprints →
    failure count), each value with the time it expires."""

    def __init__(self, clock: Callable[[], float], limit: int = LIMIT) -> None:
        self.clock = clock
        self.limit = limit
        self.tables: dict[str, dict[str, tuple[int, float]]] = {"ip": {}, "user": {}}
        #: Loaded and subscribed: only then is the copy the fleet's truth.
        self.synced = False
        #: Keys a message set while the initial load ran (the load must not undo them).
        self._touched: set[tuple[str, str]] | None = None

    def begin_load(self) -> None:
        """A new subscription: forget everything, record what messages set meanwhile."""
        self.synced = False
        for table in self.tables.values():
            table.clear()
        self._touched = set()

    def loaded(self, kind: str, name: str, value: int, ttl_ms: int) -> None:
        """A key read by the initial load (older than any message since it began)."""
        if self._touched is not None and (kind, name) in self._touched:
            return
        self._set(kind, name, value, ttl_ms)

    def end_load(self) -> None:
        self._touched = None
        self.synced = True

    def lost(self) -> None:
        """The subscription broke: the copy may miss changes from now on."""
        self.synced = False

    def message(self, payload: bytes) -> None:
        """``<kind> <name> <value> <ttl ms>`` as the scripts publish it; value 0 clears."""
        try:
            kind, name, value, ttl = payload.decode("ascii").split(" ")
            count, ttl_ms = int(value), int(ttl)
        except ValueError:
            return  # not ours (another program on the channel): ignored
        if kind not in self.tables:
            return
        if self._touched is not None:
            self._touched.add((kind, name))
        self._set(kind, name, count, ttl_ms)

    def value(self, kind: str, name: str, now: float) -> int:
        entry = self.tables[kind].get(name)
        if entry is None:
            return 0
        if entry[1] <= now:
            del self.tables[kind][name]
            return 0
        return entry[0]

    def _set(self, kind: str, name: str, value: int, ttl_ms: int) -> None:
        table = self.tables[kind]
        if value <= 0 or ttl_ms == 0:
            table.pop(name, None)
            return
        # A key without TTL (-1) should not exist; kept for the longest TTL we set.
        expires = self.clock() + (ttl_ms / 1000 if ttl_ms > 0 else 86_400.0)
        table.pop(name, None)  # re-inserted last: the dict's order is the age
        table[name] = (value, expires)
        if len(table) > self.limit:
            self._prune(table)

    def _prune(self, table: dict[str, tuple[int, float]]) -> None:
        now = self.clock()
        for name in [n for n, (_, expires) in table.items() if expires <= now]:
            del table[name]
        excess = len(table) - self.limit * 9 // 10
        if excess > 0:
            for name in list(table)[:excess]:
                del table[name]
