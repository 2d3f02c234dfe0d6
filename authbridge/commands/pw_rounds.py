"""What ``pw -r N`` really uses for a scheme, so ``pw`` can say so before hashing.

``doveadm pw`` clamps an out-of-range cost silently (``-r 40 -s BLF-CRYPT`` becomes a
cost-31 bcrypt that runs for days) and ignores ``-r`` for schemes without a cost; the
scheme modules clamp the same way so the hashes match, and this module only words it.
"""

from __future__ import annotations

from authbridge.schemes import argon2_scheme, bcrypt_scheme, crypt_family

# Base scheme name -> (lowest, highest or None) cost the scheme accepts.
_RANGES: dict[str, tuple[int, int | None]] = {
    "BLF-CRYPT": (bcrypt_scheme.MIN_COST, bcrypt_scheme.MAX_COST),
    "CRYPT": (bcrypt_scheme.MIN_COST, bcrypt_scheme.MAX_COST),  # made as bcrypt
    "SHA256-CRYPT": (crypt_family.MIN_SHA_ROUNDS, crypt_family.MAX_SHA_ROUNDS),
    "SHA512-CRYPT": (crypt_family.MIN_SHA_ROUNDS, crypt_family.MAX_SHA_ROUNDS),
    "ARGON2I": (argon2_scheme.MIN_TIME_COST["ARGON2I"], None),
    "ARGON2ID": (argon2_scheme.MIN_TIME_COST["ARGON2ID"], None),
    "PBKDF2": (1, None),
}


def rounds_warning(scheme: str, rounds: int | None) -> str | None:
    """A one-line warning when ``-r rounds`` is not used as given for ``scheme``, else None."""
    if rounds is None:
        return None
    base = scheme.upper().partition(".")[0]
    limits = _RANGES.get(base)
    if limits is None:
        return f"-r {rounds} is ignored: {base} has no cost setting (as in doveadm pw)"
    low, high = limits
    used = max(rounds, low) if high is None else min(max(rounds, low), high)
    if used == rounds:
        return None
    allowed = f"{low}-{high}" if high is not None else f"at least {low}"
    return f"-r {rounds} is out of range for {base} ({allowed}); using {used}"
