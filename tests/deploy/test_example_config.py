"""deploy/authbridge.toml.example: loads as shipped, and documents every key config.py reads.

Convention in the example: a setting shown at its default is commented as ``#key = value``
(no space after ``#``); prose comments are ``# text``. Uncommenting every setting must give
a valid config equal to the defaults, so the example can neither lie about a default nor
mention a key the loader would reject.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from authbridge import config
from authbridge.checks.cache import CacheSettings
from authbridge.checks.penalty import PenaltySettings
from authbridge.config_ldap import LdapSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "authbridge.toml.example"
_SETTING = re.compile(r"^#([a-z0-9_]+ = .*)$", re.MULTILINE)

#: dataclass field -> key in the file, where they differ; None = not a file key.
_FILE_KEY = {
    "socket_path": "socket",
    "stores": None,
    "source": None,
    "app_password_file": "app_passwords",
    # The sql store's app password queries: deploy/sql/README.md documents them.
    "app_password_queries": None,
    # [policy.service.NAME] tables: a commented example after [policy]'s keys.
    "services": None,
    # An ldap store's settings: its own keys, documented one by one (below).
    "ldap": None,
    # --dovecot-config's passdb chain rules and name rules: read from dovecot.conf, not TOML.
    "rules": None,
    "usernames": None,
}


def _uncommented() -> str:
    return _SETTING.sub(r"\1", EXAMPLE.read_text())


def test_example_loads_as_shipped() -> None:
    loaded = config.parse_config(EXAMPLE.read_text(), str(EXAMPLE))
    assert [(s.type, s.path) for s in loaded.stores] == [("passwd-file", "/etc/authbridge/users")]


def test_every_commented_setting_is_real_and_shows_the_default() -> None:
    shipped = config.parse_config(EXAMPLE.read_text(), str(EXAMPLE))
    everything = config.parse_config(_uncommented(), str(EXAMPLE))
    assert everything == shipped  # every "#key = value" is the built-in default


def test_every_config_key_is_documented() -> None:
    text = _uncommented()
    sections = {
        "server": config.ServerConfig,
        "store": config.StoreConfig,
        "policy": config.PolicyConfig,
        "log": config.LogConfig,
        "metrics": config.MetricsConfig,
        "penalty": PenaltySettings,
        "cache": CacheSettings,
        "rehash": config.RehashSettings,
        "app_passwords": config.AppPasswordSettings,
        "auth_policy": config.AuthPolicySettings,
        "oauth": config.OAuthSettings,
    }
    documented: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[\[?(\w+)\]\]?", line.strip())
        if header:
            current = header.group(1)
            continue
        key = re.match(r"^([a-z0-9_]+) = ", line)
        if key is None and current == "store":
            # Keys of the other store types are shown in a commented example table.
            key = re.match(r"^# ([a-z0-9_]+) = ", line)
        if key:
            documented.setdefault(current, set()).add(key.group(1))
    for section, cls in sections.items():
        expected = {_FILE_KEY.get(f.name, f.name) for f in dataclasses.fields(cls)} - {None}
        if section == "store":
            expected |= {f.name for f in dataclasses.fields(LdapSettings)}
        assert documented.get(section, set()) == expected, section
    top = {_FILE_KEY.get(f.name, f.name) for f in dataclasses.fields(config.Config)} - {None}
    assert top == set(sections) - {"store"}
