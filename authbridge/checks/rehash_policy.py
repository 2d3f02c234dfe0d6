"""Which stored passwords a successful login rehashes (``[rehash]``), and which it may not.

A stored password is *weak* when its scheme is in ``rehash.weak``, or when it is the
target scheme itself with a lower cost than the target's (bcrypt cost, argon2 memory
or passes, SHA-crypt rounds, PBKDF2 or SCRAM iterations): what ``authbridge pw`` would
make today with the configured ``rounds``.

A weak password is still kept when an enabled mechanism needs it and the target could
not serve that mechanism: CRAM-MD5 works from a plaintext or CRAM-MD5 value, SCRAM from
a plaintext or SCRAM value of its own hash (``schemes.mechanisms_allowed``); rehashing
such a user to ARGON2ID would lock them out of that mechanism.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from authbridge import schemes
from authbridge.config import RehashSettings
from authbridge.schemes import StoredPassword

#: What :meth:`RehashPolicy.decide` answers for a weak password.
REHASH = "rehash"
KEEP_FOR_MECHANISM = "mechanism"

_ARGON2_COST = re.compile(r"\$m=(\d+),t=(\d+)")
_BCRYPT_COST = re.compile(r"\$2[abxy]?\$(\d+)\$")
_SHA_CRYPT_ROUNDS = re.compile(r"\$[56]\$rounds=(\d+)\$")
#: SHA256-CRYPT and SHA512-CRYPT without ``rounds=``.
SHA_CRYPT_DEFAULT_ROUNDS = 5000


def cost(stored: StoredPassword) -> tuple[int, ...] | None:
    """The cost parameters of a stored hash (``None``: a scheme without any, or unreadable)."""
    scheme, data = stored.scheme, stored.data
    try:
        if scheme in ("ARGON2I", "ARGON2ID"):
            match = _ARGON2_COST.search(data)
            return None if match is None else (int(match[1]), int(match[2]))
        if scheme == "BLF-CRYPT":
            match = _BCRYPT_COST.match(data)
            return None if match is None else (int(match[1]),)
        if scheme in ("SHA256-CRYPT", "SHA512-CRYPT"):
            match = _SHA_CRYPT_ROUNDS.match(data)
            return (SHA_CRYPT_DEFAULT_ROUNDS,) if match is None else (int(match[1]),)
        if scheme == "PBKDF2":  # $1$salt$rounds$hash
            return (int(data.split("$")[3]),)
        if scheme in ("SCRAM-SHA-1", "SCRAM-SHA-256"):  # iterations,salt,keys
            return (int(data.split(",", 1)[0]),)
    except (IndexError, ValueError):
        return None
    return None


class RehashPolicy:
    """The decisions of one ``[rehash]`` configuration with a set of enabled mechanisms."""

    def __init__(self, settings: RehashSettings, mechanisms: Iterable[str]) -> None:
        self.scheme = settings.scheme
        self.rounds = settings.rounds or None
        self.weak = frozenset(settings.weak)
        # One hash as the rehash would write it: its cost and what it can serve.
        sample = schemes.parse_stored(
            schemes.generate(self.scheme, b"rehash-policy-sample", "", self.rounds)
        )
        self.target_cost = cost(sample)
        self.target_serves = schemes.mechanisms_allowed(sample)
        self.mechanisms = frozenset(m.upper() for m in mechanisms)

    def is_weak(self, stored: StoredPassword) -> bool:
        if stored.scheme in self.weak:
            return True
        if stored.scheme != self.scheme or self.target_cost is None:
            return False
        have = cost(stored)
        return have is not None and any(h < t for h, t in zip(have, self.target_cost, strict=False))

    def needed_by(self, stored: StoredPassword) -> frozenset[str]:
        """Enabled mechanisms ``stored`` serves and the target scheme would not."""
        return (schemes.mechanisms_allowed(stored) - self.target_serves) & self.mechanisms

    def decide(self, stored: StoredPassword) -> str | None:
        """``None`` (not weak), :data:`REHASH`, or :data:`KEEP_FOR_MECHANISM`."""
        if not self.is_weak(stored):
            return None
        return KEEP_FOR_MECHANISM if self.needed_by(stored) else REHASH
