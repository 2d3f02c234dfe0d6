"""Client address parsing: the same text names the same address as in Dovecot 2.3.

The expectations come from replaying each text as ``rip`` against the real Dovecot 2.3
(protocol/transcripts/rip-lenient-forms.txt replays a selection against both servers).
"""

from __future__ import annotations

import ipaddress

import pytest

from authbridge.checks.penalty import PenaltySettings, PenaltyTracker
from authbridge.core import addresses

ACCEPTED = [
    ("192.0.2.7", "192.0.2.7"),
    ("192.0.2.7 ", "192.0.2.7"),
    ("192.0.2.7 junk", "192.0.2.7"),
    ("192.0.2.7\x0b", "192.0.2.7"),
    ("192.0.2.7\r", "192.0.2.7"),
    ("192.0.2.07", "192.0.2.7"),
    ("192.0.2.010", "192.0.2.10"),  # decimal fast path: not octal 8
    ("00192.0.2.7", "192.0.2.7"),
    ("0300.0.2.7", "192.0.2.7"),  # octal, through inet_aton
    ("0xc0.0.2.7", "192.0.2.7"),
    ("192.0.2.0x7", "192.0.2.7"),
    ("3221225991", "192.0.2.7"),
    ("192.0.519", "192.0.2.7"),
    ("192.131079", "192.2.0.7"),
    ("0", "0.0.0.0"),
    ("192.0.2", "192.0.0.2"),
    ("1.2", "1.0.0.2"),
    ("0x7f.1", "127.0.0.1"),
    ("01.02.03.04", "1.2.3.4"),
    ("[::]", "::"),
    ("0000:0000::0001", "::1"),
    ("::1.2.3.4", "::1.2.3.4"),
    ("1.2.3.4 192.0.2.7", "1.2.3.4"),
    ("::ffff:192.0.2.7", "::ffff:192.0.2.7"),
    ("::ffff:c000:207", "::ffff:192.0.2.7"),
    ("[::ffff:192.0.2.7]", "::ffff:192.0.2.7"),
    ("2001:DB8:0:0:0::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
]

REFUSED = [
    "",
    "192.0.2.300",
    "192.0.2.7.",
    " 192.0.2.7",
    "192.0.2.7x",
    "192.0.2.7;",
    "192.0.2.7/24",
    "4294967296",
    "0x",
    "[192.0.2.7]",
    "fe80::1%lo",
    "2001:db8::1 ",
    "::ffff:192.0.2.7 ",
    "192.0.2.7\xa0",
    "192.0.2.\uff17",
    "\u0661\u0669\u0662.0.2.7",
    "+192.0.2.7",
    "192.0.2.-7",
    "192.0.2.7\x00",
    "NULL",
    "0x100.0.0.1",
    "1e1.0.0.1",
    "[]",
    "[::1",
    "::1]",
    "1::2::3",
    "::ffff:1.2.3",
]


@pytest.mark.parametrize(("text", "canonical"), ACCEPTED)
def test_accepted_as_dovecot_does(text: str, canonical: str) -> None:
    parsed = addresses.parse(text)
    assert parsed is not None
    assert parsed[0] == canonical
    assert str(ipaddress.ip_address(parsed[1])) == str(parsed[1])


@pytest.mark.parametrize("text", REFUSED)
def test_refused_as_dovecot_does(text: str) -> None:
    assert addresses.parse(text) is None


def test_an_ipv4_mapped_address_is_its_ipv4_address() -> None:
    """As Dovecot 2.3 tests membership (checked against it with allow_nets)."""
    mapped = ipaddress.IPv6Address("::ffff:192.0.2.7")
    assert addresses.in_network(mapped, ipaddress.IPv4Network("192.0.2.0/24"))
    assert addresses.in_network(mapped, ipaddress.IPv4Network("0.0.0.0/0"))
    assert not addresses.in_network(mapped, ipaddress.IPv4Network("198.51.100.0/24"))
    assert not addresses.in_network(mapped, ipaddress.IPv6Network("::ffff:0:0/96"))
    assert not addresses.in_network(mapped, ipaddress.IPv6Network("::/0"))
    plain6 = ipaddress.IPv6Address("2001:db8::1")
    assert not addresses.in_network(plain6, ipaddress.IPv4Network("0.0.0.0/0"))
    assert not addresses.in_network(
        ipaddress.IPv4Address("192.0.2.7"), ipaddress.IPv6Network("::ffff:192.0.2.0/120")
    )


def test_penalty_keys_an_ipv4_mapped_client_by_its_ipv4_address() -> None:
    """Not by the /64 every IPv4-mapped client shares, which would pool them all."""
    tracker = PenaltyTracker(PenaltySettings())
    one = tracker.key("::ffff:192.0.2.7")
    other = tracker.key("::ffff:198.51.100.9")
    assert one == tracker.key("192.0.2.7")
    assert one != other


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.0/24", "192.0.2.0/24"),
        ("192.0.2.1/24", "192.0.2.0/24"),
        ("0300.0.2.0/024", "192.0.2.0/24"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("::/0", "::/0"),
        ("[2001:db8::]/32", "2001:db8::/32"),
        ("2001:db8::1", "2001:db8::1/128"),
    ],
)
def test_networks_read_as_dovecot_reads_them(text: str, expected: str) -> None:
    assert str(addresses.network(text)) == expected


@pytest.mark.parametrize(
    "text", ["bogus", "192.0.2.0/33", "192.0.2.0/+24", "192.0.2.0/ 24", "192.0.2.0/", "::/129"]
)
def test_networks_dovecot_refuses(text: str) -> None:
    assert addresses.network(text) is None
