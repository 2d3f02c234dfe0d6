"""Parsed client addresses, cached.

Every request carries ``rip``/``lip`` text that the session normalises, the policy gate
and the penalty tracker look at, and ``allow_nets`` may check again: parsing the same
few addresses with :mod:`ipaddress` several times per request cost more than the hash
check of a salted SHA password. A small LRU cache per text keeps it to a dict lookup.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Distinct address texts remembered; a spray from many addresses only evicts entries.
CACHE_SIZE = 4096


@lru_cache(maxsize=CACHE_SIZE)
def parse(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``, cached; raises ValueError like it."""
    return ipaddress.ip_address(text)


@lru_cache(maxsize=CACHE_SIZE)
def normalise(text: str) -> str | None:
    """The canonical text of an address, or ``None`` when ``text`` is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
