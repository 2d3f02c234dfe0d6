"""The sender map: one source, parsed strictly, rendered for Exim and for Postfix."""

from __future__ import annotations

import ipaddress

import pytest

from authbridge.mta.errors import SenderMapError
from authbridge.mta.postfix import networks_cidr, sasl_exceptions_networks
from authbridge.mta.senders import (
    SenderMap,
    parse_allow_sender,
    parse_login_file,
    render_exim_lsearch,
    render_postfix_regexp,
    render_postfix_texthash,
)


def test_flags_and_file_merge_normalised_and_sorted() -> None:
    flags = parse_allow_sender(["Bob=B@Example.org", "alice=x@example.org,y@example.org"])
    from_file = parse_login_file("# comment\n\nalice: z@example.org, x@example.org\n", "f")
    merged = flags.merged(from_file)
    assert merged.entries == (
        ("alice", ("x@example.org", "y@example.org", "z@example.org")),
        ("bob", ("b@example.org",)),
    )


def test_lsearch_output_reads_back_identically() -> None:
    original = parse_allow_sender(["alice=x@example.org,y@example.org", "carol@a.test=c@b.test"])
    text = render_exim_lsearch(original)
    assert "alice: x@example.org, y@example.org\n" in text
    assert parse_login_file(text, "round-trip") == original


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice x@example.org\n", "f:1: expected 'login: address"),
        ("alice: x@example.org\nbad login: y@example.org\n", "f:2: login"),
        ("alice: not-an-address\n", "f:1:"),
        ('alice: "quoted"@example.org\n', "f:1:"),
    ],
)
def test_malformed_lines_are_reported_with_their_line(text: str, message: str) -> None:
    with pytest.raises(SenderMapError, match=message):
        parse_login_file(text, "f")


@pytest.mark.parametrize("value", ["alice", "=a@b.org", "alice=", "a b=c@d.org", "alice=a@b..org"])
def test_bad_allow_sender_values(value: str) -> None:
    with pytest.raises(SenderMapError):
        parse_allow_sender([value])


def test_postfix_texthash_lists_map_owners_and_natural_owners() -> None:
    sender_map = SenderMap.from_mapping(
        {"alice": ["postmaster@example.org", "sales@other.test"], "bob": ["postmaster@example.org"]}
    )
    text = render_postfix_texthash(sender_map, ["example.org"])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        # the first map that knows a sender wins in Postfix, so the natural owners
        # (login "postmaster", login spelt as the address) are repeated here
        "postmaster@example.org\talice, bob, postmaster, postmaster@example.org",
        "sales@other.test\talice, sales@other.test",
    ]


def test_postfix_regexp_covers_each_domain_and_address_logins() -> None:
    text = render_postfix_regexp(["example.org", "my-domain.test"])
    assert "/^([^@]+)@(example\\.org|my-domain\\.test)$/\t${1}, ${1}@${2}" in text
    assert text.rstrip().endswith("/^(.+@.+)$/\t${1}")
    assert "@(" not in render_postfix_regexp([])


def test_postfix_network_lists() -> None:
    networks = (ipaddress.ip_network("192.168.0.0/24"), ipaddress.ip_network("2001:db8::/32"))
    assert (
        sasl_exceptions_networks(networks) == "!192.168.0.0/24, ![2001:db8::]/32, 0.0.0.0/0, [::]/0"
    )
    cidr = networks_cidr(networks).splitlines()
    assert cidr[1:3] == ["192.168.0.0/24\tDUNNO", "2001:db8::/32\tDUNNO"]
    assert cidr[3].startswith("0.0.0.0/0\tREJECT") and cidr[4].startswith("::/0\tREJECT")
