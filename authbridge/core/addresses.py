"""Client addresses, parsed once.

Every request carries ``rip``/``lip`` text. The session parses each once, through the
one cache here, into the canonical text and the :mod:`ipaddress` object, and the
request info carries both (``RequestInfo.rip`` and ``RequestInfo.address``): the policy
gate, the penalty tracker and ``allow_nets`` use the parsed address, ``%{rip}`` the
text. Parsing the same few addresses with :mod:`ipaddress` per request cost more than
the hash check of a salted SHA password; a small LRU cache per text keeps it to a dict
lookup.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Distinct address texts remembered; a spray from many addresses only evicts entries.
CACHE_SIZE = 4096


@lru_cache(maxsize=CACHE_SIZE)
def parse(text: str) -> tuple[str, IPAddress] | None:
    """``(canonical text, address)`` of ``text``, or ``None`` when it is not an address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(address), address


def normalise(text: str) -> str | None:
    """The canonical text of an address, or ``None`` when ``text`` is not one."""
    parsed = parse(text)
    return None if parsed is None else parsed[0]
