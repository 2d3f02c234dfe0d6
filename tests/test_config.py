"""Config loading: typed values, defaults, and errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.config import ConfigError, load_config, parse_config

GOOD = """
[server]
socket = "/run/authbridge/auth-client"
socket_mode = "0660"
socket_group = "Debian-exim"
mechanisms = ["plain", "login"]

[[store]]
type = "passwd-file"
path = "users.passwd"

[policy]
allowed_networks = ["192.168.0.0/24"]
failure_delay = 1
"""


def test_a_good_file_loads_into_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "authbridge.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.server.socket_path == "/run/authbridge/auth-client"
    assert config.server.socket_mode == 0o660
    assert config.server.socket_group == "Debian-exim"
    assert config.server.mechanisms == ("plain", "login")
    assert config.stores[0].path == str(tmp_path / "users.passwd")
    assert config.policy.allowed_networks == ("192.168.0.0/24",)
    assert config.policy.failure_delay == 1.0
    assert config.policy.require_secured is True


def test_dovecot_compatible_turns_every_policy_gate_off() -> None:
    compat = parse_config(GOOD).dovecot_compatible()
    assert compat.policy.require_secured is False
    assert compat.policy.allowed_networks == ()
    assert compat.policy.tempfail_disconnects is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[server]\nsocket_mode = "rw"\n', r"x.toml:2: server.socket_mode: must be an octal mode"),
        (
            '[server]\nmechanisms = ["plain", "gssapi"]\n',
            r"x.toml:2: server.mechanisms: unknown mechanism 'gssapi'",
        ),
        ("[policy]\nfailure_delay = -1\n", r"x.toml:2: policy.failure_delay: must not be negative"),
        (
            '[policy]\nallowed_networks = ["lan"]\n',
            r"x.toml:2: policy.allowed_networks: 'lan' is not a network",
        ),
        (
            "[policy]\nrequire_secured = 1\n",
            r"x.toml:2: policy.require_secured: expected bool, got int",
        ),
        ("[server]\n\nsockett = 1\n", r"x.toml:3: server.sockett: unknown setting"),
        (
            '[[store]]\ntype = "nis"\npath = "x"\n',
            r"x.toml:2: store\[0\].type: unknown store type 'nis'",
        ),
        (
            '[[store]]\ntype = "ldap"\nuris = "ldap://h"\nbase = "dc=x"\npath = "x"\n',
            r"x.toml:5: store\[0\].path: unknown setting",
        ),
        (
            '[[store]]\ntype = "ldap"\nbase = "dc=x"\nuris = "http://h"\n',
            r"x.toml:4: store\[0\].uris: 'http://h' is not an ldap://",
        ),
        ("[server\n", r"x.toml: TOML syntax error"),
    ],
)
def test_bad_values_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(text, "x.toml")


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml")
