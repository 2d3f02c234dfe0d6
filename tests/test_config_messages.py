"""Config errors an operator can act on: the line, the key really at fault, a guess.

tomllib gives no line numbers; the loader finds the header or key in the text. Each case
here was reported without a line, without a suggestion, or against the wrong key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.config import ConfigError, parse_config

STORE = '[[store]]\npath = "users"\n'


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.toml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"{STORE}\n[polcy]\nfailure_delay = 1\n",
            "x.toml:4: unknown table 'polcy' (did you mean 'policy'?)",
        ),
        (
            '[server]\nsocket = "s"\n\n[[stores]]\npath = "users"\n',
            "x.toml:4: unknown table 'stores' (did you mean 'store'?)",
        ),
        (
            "[ penalty ]\nsteps = [1]\n[cahce]\n",
            "x.toml:3: unknown table 'cahce' (did you mean 'cache'?)",
        ),
        ("[server.extra]\na = 1\n", "x.toml:1: unknown table 'server.extra'"),
        ("[metrics]\nlisten = ''\n[unrelated]\n", "x.toml:3: unknown table 'unrelated'"),
    ],
)
def test_unknown_tables_have_a_line_and_a_guess(text: str, expected: str) -> None:
    assert _error(text) == expected


def test_an_unknown_table_is_reported_before_a_bad_value_elsewhere() -> None:
    # The settings of a misspelt table are what is missing: say so first.
    text = f"{STORE}[penalty]\nsteps = [1, 9]\n[polcy]\nfailure_delay = 0\n"
    assert _error(text) == "x.toml:5: unknown table 'polcy' (did you mean 'policy'?)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[server]\n\nsockett = 1\n",
            "x.toml:3: server.sockett: unknown setting (did you mean 'socket'?)",
        ),
        (
            f'{STORE}[[store]]\npath = "more"\ndefault_schem = "MD5"\n',
            "x.toml:5: store[1].default_schem: unknown setting (did you mean 'default_scheme'?)",
        ),
        # The same key name in another table is not taken for this one.
        (
            "[server]\nidle_timeout = 1\n[cache]\nidle_timeout = 2\n",
            "x.toml:4: cache.idle_timeout: unknown setting",
        ),
        ("top = 1\n[server]\ntop = 2\n", "x.toml:1: top: unknown setting"),
        (
            "[policy]\nrequire_secure = true\nfailure_dealy = 1\n",
            "x.toml:2: policy.require_secure: unknown setting (did you mean 'require_secured'?)",
        ),
        (
            "[log]\nformat = 'jsn'\n",
            "x.toml:2: log.format: must be one of auto, json, console (did you mean 'json'?)",
        ),
    ],
)
def test_unknown_keys_have_a_line_and_a_guess(text: str, expected: str) -> None:
    assert _error(text) == expected


def test_a_penalty_step_too_long_blames_the_step() -> None:
    message = _error(f"{STORE}[penalty]\nsteps = [1, 9]\n")
    assert message.startswith("x.toml:4: penalty.steps: "), message
    assert "failure_delay (2 s) plus the largest penalty step (9 s)" in message


def test_a_failure_delay_too_long_blames_the_delay() -> None:
    message = _error(f"{STORE}[policy]\nfailure_delay = 5\n")
    assert message.startswith("x.toml:4: policy.failure_delay: "), message


def test_both_set_blames_the_steps() -> None:
    text = f"{STORE}[policy]\nfailure_delay = 5\n[penalty]\nsteps = [1, 6]\n"
    assert _error(text).startswith("x.toml:6: penalty.steps: ")


def test_a_disabled_penalty_adds_no_delay() -> None:
    text = f"{STORE}[policy]\nfailure_delay = 5\n[penalty]\nenabled = false\nsteps = [1, 6]\n"
    assert parse_config(text, "x.toml").penalty.enabled is False


# ---------------------------------------------------------------------- app passwords


def test_app_password_settings_and_store_keys_load() -> None:
    from authbridge.config import APP_PASSWORD_QUERIES

    config = parse_config(
        '[[store]]\npath = "/etc/users"\napp_passwords = "users.app"\n'
        '[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "/x.db"\n'
        "password_query = \"SELECT password FROM u WHERE username = '%u'\"\n"
        "app_passwords = true\n"
        "app_password_query = \"SELECT label, password FROM a WHERE username = '%u'\"\n"
        '[app_passwords]\nrequire_app_password_for = ["SMTP"]\nused_interval = 60\n',
        "/etc/authbridge/authbridge.toml",
        Path("/etc/authbridge"),
    )
    files, sql = config.stores
    assert files.app_password_file == "/etc/authbridge/users.app"
    queries = dict(sql.app_password_queries)
    assert queries["app_password_query"].startswith("SELECT label, password FROM a")
    assert queries["app_password_delete_query"] == APP_PASSWORD_QUERIES["app_password_delete_query"]
    assert config.app_passwords.require_app_password_for == ("smtp",)
    assert config.app_passwords.used_interval == 60.0
    assert config.has_app_passwords
    assert not parse_config('[[store]]\npath = "/u"\n').has_app_passwords


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            '[app_passwords]\nrequire_app_password_for = ["smtp", "s m"]\n',
            "t.toml:2: app_passwords.require_app_password_for: 's m' is not a service name",
        ),
        ('[app_passwords]\nscheme = "PLAIN"\n', "t.toml:2: app_passwords.scheme: PLAIN cannot"),
        ('[app_passwords]\nscheme = "ARGON2"\n', "t.toml:2: app_passwords.scheme: unknown scheme"),
        ("[app_passwords]\nused_interval = 0\n", "t.toml:2: app_passwords.used_interval: must be"),
        ("[app_passwords]\nrequire_app_passwords_for = []\n", "did you mean"),
        (
            '[[store]]\npath = "/u"\napp_passwords = "/u"\n',
            "t.toml:3: store[0].app_passwords: must be a file of its own",
        ),
        (
            '[[store]]\npath = "/u"\napp_passwords = true\n',
            "t.toml:3: store[0].app_passwords: expected str, got bool",
        ),
        (
            '[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "/x"\npassword_query = "SELECT 1"\n'
            'app_password_query = "SELECT 2"\n',
            "t.toml:6: store[0].app_password_query: set app_passwords = true",
        ),
        (
            '[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "/x"\npassword_query = "SELECT 1"\n'
            'app_passwords = "yes"\n',
            "t.toml:6: store[0].app_passwords: expected bool, got str",
        ),
    ],
)
def test_app_password_config_errors_name_file_line_and_key(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    assert says in str(caught.value), str(caught.value)
