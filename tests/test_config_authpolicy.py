"""``[auth_policy]``: Dovecot's setting names and defaults; errors name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.config import DEFAULT_POLICY_ATTRIBUTES, ConfigError, load_config, parse_config


def test_off_by_default_with_dovecots_defaults() -> None:
    settings = parse_config("").auth_policy
    assert not settings.enabled
    assert settings.timeout_msecs == 2000
    assert (settings.hash_mech, settings.hash_truncate) == ("sha256", 12)
    assert settings.request_attributes == DEFAULT_POLICY_ATTRIBUTES
    assert not settings.reject_on_fail and not settings.log_only
    assert settings.check_before_auth and settings.check_after_auth
    assert settings.report_after_auth


def test_enabled_with_url_and_nonce() -> None:
    settings = parse_config(
        '[auth_policy]\nserver_url = "http://127.0.0.1:8084/"\nhash_nonce = "n0nce"\n'
        'hash_mech = "sha512"\nhash_truncate = 0\nreject_on_fail = true\n'
    ).auth_policy
    assert settings.enabled and settings.hash_nonce == "n0nce"
    assert (settings.hash_mech, settings.hash_truncate, settings.reject_on_fail) == (
        "sha512",
        0,
        True,
    )
    assert "n0nce" not in repr(settings)


def test_nonce_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "nonce").write_text("from-a-file\n")
    (tmp_path / "a.toml").write_text(
        '[auth_policy]\nserver_url = "http://127.0.0.1:1/"\nhash_nonce_file = "nonce"\n'
    )
    assert load_config(tmp_path / "a.toml").auth_policy.hash_nonce == "from-a-file"


@pytest.mark.parametrize(
    ("body", "line", "expected"),
    [
        ('server_url = "http://h/"\n', 2, "auth_policy.server_url: needs hash_nonce"),
        ('server_url = "ftp://h/"\n', 2, "auth_policy.server_url: expected an http"),
        ('hash_nonce = "x"\nhash_mech = "sha3"\n', 3, "auth_policy.hash_mech: must be one of"),
        ("hash_truncate = 1000\n", 2, "auth_policy.hash_truncate: must be between"),
        ("timeout_msecs = 0\n", 2, "auth_policy.timeout_msecs"),
        ('request_attributes = "login"\n', 2, "auth_policy.request_attributes: expected"),
        ('request_attributes = "a=%{x}"\n', 2, "unknown variable 'x'"),
        ('hash_nonce_file = "/nonexistent/n"\n', 2, "auth_policy.hash_nonce_file: cannot read"),
        ('hash_nonce = "a"\nhash_nonce_file = "b"\n', 3, "not both"),
        ("reject_on_fial = true\n", 2, "unknown setting (did you mean 'reject_on_fail'?)"),
    ],
)
def test_errors_name_file_line_and_key(body: str, line: int, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[auth_policy]\n" + body, "ab.toml")
    message = str(info.value)
    assert message.startswith(f"ab.toml:{line}: "), message
    assert expected in message
