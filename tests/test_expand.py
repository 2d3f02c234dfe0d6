"""Dovecot %-variables in extra-field values."""

from __future__ import annotations

import pytest

from authbridge.checks.expand import ExpansionError, expand, variables

VALUES = variables("alice@example.org", "smtp", "192.0.2.7", None)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("/var/mail/%d/%n", "/var/mail/example.org/alice"),
        ("%u", "alice@example.org"),
        ("%{user} %{domain} %{username}", "alice@example.org example.org alice"),
        ("100%%", "100%"),
        ("%Uu", "ALICE@EXAMPLE.ORG"),
        ("%s from %r via %l", "smtp from 192.0.2.7 via "),
        ("plain", "plain"),
    ],
)
def test_known_variables(template: str, expected: str) -> None:
    assert expand(template, VALUES) == expected


@pytest.mark.parametrize("template", ["50%x", "%{nosuch}", "trailing %", "%{open"])
def test_unknown_or_broken_variables_are_errors(template: str) -> None:
    with pytest.raises(ExpansionError):
        expand(template, VALUES)
