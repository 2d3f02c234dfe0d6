"""``[oauth]``: keys checked with file, line and key; the OAuth mechanisms offered only
with it (and both by default once it is there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.config import ConfigError, load_config, parse_config

JWKS = 'jwks_url = "https://idp.example.org/realms/mail/protocol/openid-connect/certs"\n'


def test_off_by_default_and_no_oauth_mechanism() -> None:
    config = parse_config("")
    assert not config.oauth.enabled
    assert "oauthbearer" not in config.server.mechanisms


def test_oauth_adds_both_mechanisms_after_the_others() -> None:
    config = parse_config("[oauth]\n" + JWKS)
    assert config.oauth.enabled
    assert config.server.mechanisms == ("plain", "login", "cram-md5", "oauthbearer", "xoauth2")


def test_named_oauth_mechanisms_are_taken_as_listed() -> None:
    config = parse_config('[server]\nmechanisms = ["xoauth2", "plain"]\n[oauth]\n' + JWKS)
    assert config.server.mechanisms == ("xoauth2", "plain")


def test_every_key(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = parse_config(
        "[oauth]\n"
        'introspection_url = "https://idp.example.org/introspect"\n'
        'client_id = "authbridge"\n'
        'client_secret_file = "secret"\n'
        'issuer = "https://idp.example.org/realms/mail"\n'
        'audience = ["smtp", "account"]\n'
        'username_attribute = "preferred_username"\n'
        "check_authzid = false\n"
        'algorithms = ["ES256"]\n'
        "clock_skew = 5\ntimeout = 1.5\njwks_refresh = 600\njwks_min_refresh = 30\n"
        "cache_ttl = 120\nnegative_ttl = 5\ncache_max_entries = 50\n",
        base_dir=tmp_path,
    )
    o = config.oauth
    assert o.client_secret == "s3cret" and o.audience == ("smtp", "account")
    assert (o.username_attribute, o.check_authzid, o.algorithms) == (
        "preferred_username",
        False,
        ("ES256",),
    )
    assert (o.clock_skew, o.timeout, o.cache_ttl, o.cache_max_entries) == (5.0, 1.5, 120.0, 50)
    assert "s3cret" not in repr(o)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\nmechanisms = ["plain", "oauthbearer"]\n', "a.toml:2: server.mechanisms:"),
        ('[oauth]\njwks_url = "ftp://x"\n', "a.toml:2: oauth.jwks_url: expected an http"),
        (
            '[oauth]\nintrospection_url = "https://x/i"\n',
            "a.toml:2: oauth.introspection_url: needs client_id and client_secret",
        ),
        ("[oauth]\n" + JWKS + 'algorithms = ["none"]\n', "a.toml:3: oauth.algorithms: unknown"),
        ("[oauth]\n" + JWKS + 'algorithms = ["HS256"]\n', "a.toml:3: oauth.algorithms:"),
        ("[oauth]\n" + JWKS + "timeout = 0\n", "a.toml:3: oauth.timeout: must be greater"),
        ("[oauth]\n" + JWKS + 'username_attribute = ""\n', "a.toml:3: oauth.username_attr"),
        ("[oauth]\n" + JWKS + "jwks_urls = 1\n", "a.toml:3: oauth.jwks_urls: unknown setting"),
        (
            "[oauth]\n" + JWKS + 'client_secret_file = "/nonexistent/x"\n',
            "a.toml:3: oauth.client_secret_file: cannot read",
        ),
    ],
)
def test_bad_settings_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
