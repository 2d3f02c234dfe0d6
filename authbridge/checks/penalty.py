"""Per-client-address penalty: repeated failures from one address slow that address only.

Keyed by the request's ``rip`` (IPv4 as is, IPv6 by a configurable prefix, /64 by
default) — never by the MTA's own socket address. Repeating the same wrong password does
not escalate (a mis-configured phone is not an attacker), a success clears the record,
and a record is forgotten after a quiet period. The delay is capped so that delay plus
failure delay stays below Postfix's 10 s read timeout.

The guesses are remembered as keyed fingerprints (:mod:`authbridge.checks.fingerprint`).
With ``spraying`` on, an address that failed for more than ``max_users_per_ip``
distinct user names escalates by two levels per new guess instead of one. The fleet
parts (per-user counts, Redis) live in :mod:`authbridge.checks.fleet`, which uses this
tracker as its local state.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

# Defined with the rest of the configuration (which must not import the checks);
# re-exported here, next to the tracker it configures.
from authbridge.checks.fingerprint import Fingerprints, load_key
from authbridge.config import PenaltySettings as PenaltySettings
from authbridge.core import addresses
from authbridge.core.addresses import IPAddress

#: How many recent (user, password) checksums per address do not raise the penalty.
RECENT_CHECKSUMS = 10
#: Address texts whose bucket is remembered (the cache starts over when full): the
#: address is parsed once per request by the session; this keeps the bucket derived
#: from it (the trusted-network test, the IPv6 prefix).
KEY_CACHE_SIZE = 4096


@dataclass(slots=True)
class _Record:
    level: int
    last_failure: float
    recent: list[bytes] = field(default_factory=list)
    #: User names that failed from this address (spraying on; bounded).
    users: set[str] | None = None


class PenaltyTracker:
    def __init__(self, settings: PenaltySettings | None = None) -> None:
        self.settings = settings or PenaltySettings()
        self._trusted = tuple(
            ipaddress.ip_network(n, strict=False) for n in self.settings.trusted_networks
        )
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._keys: dict[str, str | None] = {}
        key_file = self.settings.password_fingerprint_key_file
        self.fingerprints = Fingerprints(load_key(key_file) if key_file else None)
        #: The fleet parts (spraying, shared state), or ``None``: today's tracker only.
        self.fleet: Any = None
        if self.settings.enabled and (self.settings.spraying or self.settings.backend != "local"):
            from authbridge.checks.fleet import Fleet  # only configurations that use it

            self.fleet = Fleet(self)

    def __len__(self) -> int:
        return len(self._records)

    def key(self, rip: str | None, address: IPAddress | None = None) -> str | None:
        """The bucket of ``rip`` (canonical text; ``address``: the same, parsed), or
        ``None`` when it is never penalised. The check pipeline asks once per request
        and passes the bucket to :meth:`delay_of`, :meth:`failed_in`, :meth:`succeeded_in`."""
        if not self.settings.enabled or rip is None:
            return None
        try:
            return self._keys[rip]
        except KeyError:
            pass
        if address is None:  # a caller with the text only (tests, tools)
            parsed = addresses.parse(rip)
            key = None if parsed is None else self._key(*parsed)
        else:
            key = self._key(rip, address)
        if len(self._keys) >= KEY_CACHE_SIZE:
            self._keys.clear()
        self._keys[rip] = key
        return key

    def _key(self, rip: str, address: IPAddress) -> str | None:
        if any(addresses.in_network(address, net) for net in self._trusted):
            return None
        if address.version == 6:
            mapped = address.ipv4_mapped
            if mapped is not None:  # one IPv4 client, not the /64 of every mapped one
                return str(mapped)
            net = ipaddress.IPv6Network((address, self.settings.ipv6_prefix), strict=False)
            return str(net)
        return rip

    def delay(self, rip: str | None, now: float) -> float:
        """Seconds to hold a new request from ``rip`` before checking it."""
        return self.delay_of(self.key(rip), now)

    def delay_of(self, key: str | None, now: float) -> float:
        """:meth:`delay` for a bucket from :meth:`key`."""
        record = self._records.get(key) if key else None
        if record is None or record.level == 0:
            return 0.0
        if now - record.last_failure > self.settings.forget_after:
            del self._records[key]  # type: ignore[arg-type]
            return 0.0
        steps = self.settings.steps
        return steps[min(record.level, len(steps)) - 1]

    def failed(self, rip: str | None, user: str, password: bytes | None, now: float) -> None:
        """A failed guess from ``rip``; ``password`` ``None``: nothing to fingerprint, so
        it always counts as a new guess (a CRAM-MD5 digest of a fresh challenge)."""
        self.failed_in(self.key(rip), user, password, now)

    def failed_in(self, key: str | None, user: str, password: bytes | None, now: float) -> bool:
        """:meth:`failed` for a bucket from :meth:`key`; whether it was a new guess."""
        if key is None:
            return False
        checksum = None if password is None else self.fingerprints.guess(user, password)
        return self.failed_fp(key, user, checksum, now)

    def failed_fp(self, key: str, user: str, checksum: bytes | None, now: float) -> bool:
        """:meth:`failed_in` with the guess's fingerprint already made."""
        record = self._records.get(key)
        if record is None or now - record.last_failure > self.settings.forget_after:
            record = _Record(level=0, last_failure=now)
            self._records[key] = record
        self._records.move_to_end(key)
        new = checksum is None or checksum not in record.recent
        if new:
            record.level += self._step(record, user)
            if checksum is not None:
                record.recent.append(checksum)
                del record.recent[:-RECENT_CHECKSUMS]
        record.last_failure = now
        while len(self._records) > self.settings.max_entries:
            self._records.popitem(last=False)
        return new

    def _step(self, record: _Record, user: str) -> int:
        """1, or 2 once the address has failed for too many distinct user names."""
        if not self.settings.spraying:
            return 1
        limit = self.settings.max_users_per_ip
        users = record.users
        if users is None:
            users = record.users = set()
        if len(users) <= limit:
            users.add(user)
        return 2 if len(users) > limit else 1

    def level_of(self, key: str, now: float) -> int:
        """The level of a bucket now (0: none or forgotten)."""
        record = self._records.get(key)
        if record is None or now - record.last_failure > self.settings.forget_after:
            return 0
        return record.level

    def levels(self, now: float) -> list[tuple[str, int, float]]:
        """Every live bucket: (bucket, level, seconds left before it is forgotten)."""
        forget = self.settings.forget_after
        return [
            (key, r.level, forget - (now - r.last_failure))
            for key, r in self._records.items()
            if r.level > 0 and now - r.last_failure <= forget
        ]

    def succeeded(self, rip: str | None) -> None:
        self.succeeded_in(self.key(rip))

    def succeeded_in(self, key: str | None) -> None:
        """:meth:`succeeded` for a bucket from :meth:`key`."""
        if key is not None:
            self._records.pop(key, None)
