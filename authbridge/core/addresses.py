"""Client addresses, parsed once, the way Dovecot parses them.

Every request carries ``rip``/``lip`` text. The session parses each once, through the
one cache here, into the canonical text and the :mod:`ipaddress` object, and the
request info carries both (``RequestInfo.rip`` and ``RequestInfo.address``): the policy
gate, the penalty tracker and ``allow_nets`` use the parsed address, ``%{rip}`` the
text. Parsing the same few addresses with :mod:`ipaddress` per request cost more than
the hash check of a salted SHA password; a small LRU cache per text keeps it to a dict
lookup.

Dovecot 2.3 accepts more than :mod:`ipaddress` does, and an MTA's ``rip`` decides
``allow_nets``, so the same text must name the same address here: first a decimal
``a.b.c.d`` (leading zeros are decimal) or one decimal number, then, for text with a
colon, ``inet_pton`` on IPv6 (brackets allowed), else the C library's ``inet_aton``,
which takes one to four parts in octal, hex or decimal and stops at white space. The
strict parser runs first; the lenient path only ever sees text it refused.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Distinct address texts remembered; a spray from many addresses only evicts entries.
CACHE_SIZE = 4096

_UINT_MAX = 0xFFFFFFFF


@lru_cache(maxsize=CACHE_SIZE)
def parse(text: str) -> tuple[str, IPAddress] | None:
    """``(canonical text, address)`` of ``text``, or ``None`` when it is not an address."""
    try:
        # A scope (``fe80::1%eth0``) is refused: Dovecot's inet_pton refuses it too.
        address: IPAddress | None = None if "%" in text else ipaddress.ip_address(text)
    except ValueError:
        address = _lenient(text)
    if address is None:
        return None
    return _text(address), address


def normalise(text: str) -> str | None:
    """The canonical text of an address, or ``None`` when ``text`` is not one."""
    parsed = parse(text)
    return None if parsed is None else parsed[0]


def _text(address: IPAddress) -> str:
    """The text Dovecot's ``%{rip}`` shows: the C library's, which writes an embedded
    IPv4 address in dotted form (``::ffff:192.0.2.7``) where Python 3.11 writes hex."""
    if isinstance(address, ipaddress.IPv6Address):
        return socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address)


def in_network(address: IPAddress, network: IPNetwork) -> bool:
    """Membership as Dovecot tests it: an IPv4-mapped IPv6 address is its IPv4 address
    (MTAs on dual-stack sockets report clients as ``::ffff:a.b.c.d``), so it is inside
    IPv4 networks and outside every IPv6 one, ``::/0`` included."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped in network
    return address in network


@lru_cache(maxsize=CACHE_SIZE)
def network(text: str) -> IPNetwork | None:
    """``address[/bits]`` as Dovecot reads a network (``allow_nets``), or ``None``.

    The address as :func:`parse` reads it (``0300.0.2.0/24`` is 192.0.2.0/24), the bits
    in decimal (leading zeros allowed, no sign or space), an address alone is a host."""
    address_text, slash, bits_text = text.partition("/")
    parsed = parse(address_text)
    if parsed is None:
        return None
    address = parsed[1]
    bits: int = address.max_prefixlen
    if slash:
        if not (bits_text.isascii() and bits_text.isdigit()) or int(bits_text) > bits:
            return None
        bits = int(bits_text)
    return ipaddress.ip_network((address, bits), strict=False)


def _lenient(text: str) -> IPAddress | None:
    """What Dovecot's parser makes of a text the strict parser refused, or ``None``."""
    if "\0" in text or not text.isascii():
        return None
    fast = _decimal_ipv4(text)
    if fast is not None:
        return fast
    try:
        if ":" in text:
            if text.startswith("[") and text.endswith("]") and len(text) > 2:
                text = text[1:-1]
            return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text))
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def _decimal_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """Dovecot's fast path: one decimal number, or four decimal parts below 256."""
    parts = text.split(".")
    if not all(part.isdigit() for part in parts):
        return None
    numbers = [int(part) for part in parts]
    if any(number > _UINT_MAX for number in numbers):
        return None
    if len(numbers) == 1:
        return ipaddress.IPv4Address(numbers[0])
    if len(numbers) == 4 and all(number < 256 for number in numbers):
        return ipaddress.IPv4Address(bytes(numbers))
    return None
