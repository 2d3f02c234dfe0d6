"""The example config's "Known:" lists are the registries the loader really checks.

They had gone stale (mechanisms without SCRAM, store types without exim-file and sql).
Each ``Known: a, b, c.`` comment (it may wrap onto following comment lines and ends at
the first full stop) belongs to the next setting shown; this test compares every list
with the registry behind that setting, and requires a list for each of them.
"""

from __future__ import annotations

import re
from pathlib import Path

from authbridge import config
from authbridge.core.mechanisms import REGISTRY as MECHANISMS
from authbridge.schemes import available_schemes

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "authbridge.toml.example"

#: (table, key) -> what the loader accepts there.
REGISTRIES: dict[tuple[str, str], set[str]] = {
    ("server", "mechanisms"): {name.lower() for name in MECHANISMS},
    ("store", "type"): set(config.STORE_TYPES),
    ("store", "default_scheme"): set(available_schemes()),
    ("store", "driver"): set(config.SQL_DRIVERS),
    ("log", "format"): set(config.LOG_FORMATS),
    ("log", "level"): set(config.LOG_LEVELS),
    ("log", "unknown_users"): set(config.UNKNOWN_USER_MODES),
    ("auth_policy", "hash_mech"): set(config.POLICY_HASH_MECHS),
}

_HEADER = re.compile(r"^\[\[?(\w+)\]\]?\s*$")
_SETTING = re.compile(r"^(?:# ?)?([a-z0-9_]+) = ")


def known_lists(text: str) -> dict[tuple[str, str], list[str]]:
    """``(table, key) -> items`` of every Known list in ``text``."""
    lines = text.splitlines()
    found: dict[tuple[str, str], list[str]] = {}
    table = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        header = _HEADER.match(line)
        if header:
            table = header.group(1)
        if line.startswith("#") and "Known:" in line:
            words = line.split("Known:", 1)[1]
            while "." not in words:
                index += 1
                words += " " + lines[index].lstrip("#")
            items = [item.strip() for item in words.split(".", 1)[0].split(",")]
            key = next(
                match.group(1)
                for match in map(_SETTING.match, lines[index + 1 :])
                if match is not None
            )
            assert (table, key) not in found, f"two Known lists for {table}.{key}"
            found[(table, key)] = items
        index += 1
    return found


def test_every_known_list_is_its_registry() -> None:
    lists = known_lists(EXAMPLE.read_text())
    assert set(lists) == set(REGISTRIES)
    for where, items in lists.items():
        assert len(items) == len(set(items)), where
        assert set(items) == REGISTRIES[where], where


def test_the_parser_reads_wrapped_lists_and_finds_their_setting() -> None:
    text = '[log]\n# Known: a, b,\n#   c. More prose.\n# more\n#level = "a"\n'
    assert known_lists(text) == {("log", "level"): ["a", "b", "c"]}


def test_a_stale_list_is_caught() -> None:
    stale = EXAMPLE.read_text().replace(
        "# Known: plain, login, cram-md5, scram-sha-1, scram-sha-256, oauthbearer, xoauth2.",
        "# Known: plain, login, cram-md5.",
    )
    mechanisms = known_lists(stale)[("server", "mechanisms")]
    assert set(mechanisms) != REGISTRIES[("server", "mechanisms")]
