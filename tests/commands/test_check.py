"""``authbridge check``: loads everything ``serve`` would, binds nothing, exits 0/1/2."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

#: The checkout under test (not whichever authbridge the venv has installed).
REPO = Path(__file__).resolve().parents[2]
GOOD_USERS = "alice:{PLAIN}alicepass::::::\nbob:{PLAIN}bobpass::::::nologin reason=left\n"


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def write_config(tmp_path: Path, stores: str, mechanisms: str = '"plain", "login"') -> Path:
    config = tmp_path / "authbridge.toml"
    config.write_text(
        f'[server]\nsocket = "{tmp_path / "auth-client"}"\nmechanisms = [{mechanisms}]\n' + stores
    )
    return config


def passwd_store(path: Path) -> str:
    return f'[[store]]\ntype = "passwd-file"\npath = "{path}"\n'


def sqlite_store(path: Path) -> str:
    return (
        f'[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "{path}"\n'
        "password_query = \"SELECT password FROM users WHERE username = '%u'\"\n"
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("authbridge check: error:")


def test_a_good_config_prints_a_summary_and_binds_nothing(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(GOOD_USERS)
    config = write_config(tmp_path, passwd_store(users))
    proc = check("--config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"store passwd-file:{users}: 2 users" in proc.stdout
    assert "disabled (nologin): bob (left)" in proc.stdout
    assert "mechanisms: PLAIN LOGIN" in proc.stdout
    assert "ok: the configuration and every store load" in proc.stdout
    assert not (tmp_path / "auth-client").exists()


def test_store_problems_exit_1(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}a::::::\nalice:{PLAIN}b::::::\nx:{NOSUCH}abc::::::\n")
    missing = tmp_path / "missing-users"
    config = write_config(tmp_path, passwd_store(users) + passwd_store(missing))
    proc = check("--config", str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    problems = [line for line in proc.stdout.splitlines() if line.startswith("problem:")]
    text = "\n".join(problems)
    assert "more than once" in text  # the duplicate, with file and line
    assert "NOSUCH" in text  # the unknown scheme
    assert str(missing) in text  # the store that is not there
    assert "Traceback" not in proc.stdout + proc.stderr


def test_an_enabled_mechanism_nobody_can_use_is_a_problem(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:{SHA512-CRYPT}$6$abc$" + "x" * 86 + "::::::\n")
    config = write_config(tmp_path, passwd_store(users), '"plain", "cram-md5"')
    proc = check("--config", str(config))
    assert proc.returncode == 1
    assert "mechanism CRAM-MD5 is enabled but no user's stored scheme allows it" in proc.stdout


def test_sqlite_store_is_queried(tmp_path: Path) -> None:
    db = tmp_path / "users.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (username TEXT, password TEXT)")
    good = check("--config", str(write_config(tmp_path, sqlite_store(db))))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "password_query ran for a non-existent user" in good.stdout


def test_sqlite_query_error_and_missing_database(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE other (x TEXT)")
    broken = check("--config", str(write_config(tmp_path, sqlite_store(db))))
    assert broken.returncode == 1
    assert "no such table: users" in broken.stdout
    missing = tmp_path / "missing.sqlite"
    gone = check("--config", str(write_config(tmp_path, sqlite_store(missing))))
    assert gone.returncode == 1 and "does not exist" in gone.stdout
    assert not missing.exists()  # checking never creates the database


@pytest.mark.parametrize(
    "content",
    ["[polcy]\nfailure_delay = 1\n", "[server\n", '[policy]\nfailure_delay = "x"\n'],
)
def test_an_unusable_config_exits_2_with_one_line(tmp_path: Path, content: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    proc = check("--config", str(config))
    assert proc.returncode == 2
    assert_one_line_error(proc)


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_unreadable_config_paths_exit_2(tmp_path: Path, where: str) -> None:
    path = tmp_path / "nothing.toml" if where == "missing" else tmp_path
    proc = check("--config", str(path))
    assert proc.returncode == 2
    assert_one_line_error(proc)


def test_the_default_config_path_is_used(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(GOOD_USERS)
    config = write_config(tmp_path, passwd_store(users))
    found = check(env={"AUTHBRIDGE_CONFIG": str(config)})
    assert found.returncode == 0 and f"config: {config}" in found.stdout
    none = check(env={"AUTHBRIDGE_CONFIG": str(tmp_path / "absent.toml")})
    assert none.returncode == 2 and "give --config FILE" in none.stderr


def test_a_bad_app_password_line_is_a_problem_with_its_place(tmp_path: Path) -> None:
    from authbridge.commands.check import check as check_config
    from authbridge.config import load_config

    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}pw::::::\n")
    apps = tmp_path / "users.app"
    apps.write_text("# comment\nalice:phone:{PLAIN}x::\nalice:broken\n")
    config = write_config(tmp_path, f'[[store]]\npath = "{users}"\napp_passwords = "{apps}"\n')
    report = check_config(load_config(config), str(config))
    assert any(f"{apps}:3: expected user:label" in p for p in report.problems), report.problems
    apps.write_text("alice:phone:{PLAIN}x::\n")
    report = check_config(load_config(config), str(config))
    assert not report.problems
    assert any("1 app passwords" in line for line in report.lines)


def test_a_dovecot_config_is_checked_as_serve_would_serve_it(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(GOOD_USERS)
    (tmp_path / "deny-users").write_text("carol\n")  # names only, as Dovecot's example
    dovecot = tmp_path / "dovecot.conf"
    dovecot.write_text(
        "auth_mechanisms = plain login\n"
        f"passdb {{\n  driver = passwd-file\n  deny = yes\n  args = {tmp_path}/deny-users\n}}\n"
        f"passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {users}\n"
        "  result_failure = return-fail\n}\n"
    )
    proc = check("--dovecot-config", str(dovecot), env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"passdb 1: passwd-file {tmp_path}/deny-users deny ({dovecot}:2)" in proc.stdout
    assert f"passdb 2: passwd-file {users} result_failure=return-fail ({dovecot}:7)" in proc.stdout
    assert "PLAIN          usable by 2 of 2 file-store users" in proc.stdout
    assert "ok: the configuration and every store load" in proc.stdout


def test_a_dovecot_config_authbridge_cannot_serve_exits_2(tmp_path: Path) -> None:
    dovecot = tmp_path / "dovecot.conf"
    dovecot.write_text("passdb {\n  driver = checkpassword\n  args = /usr/bin/checkpassword\n}\n")
    proc = check("--dovecot-config", str(dovecot), env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert f"{dovecot}:2: passdb 1 (checkpassword): driver:" in proc.stderr


def _oauth_config(tmp_path: Path, jwks: str, introspection: str, secret: str) -> Path:
    (tmp_path / "oauth.secret").write_text(secret + "\n")
    return write_config(
        tmp_path,
        "[oauth]\n"
        f'jwks_url = "{jwks}"\nintrospection_url = "{introspection}"\n'
        f'client_id = "authbridge"\nclient_secret_file = "{tmp_path / "oauth.secret"}"\n'
        "timeout = 2\n",
        mechanisms='"oauthbearer", "xoauth2"',
    )


def test_oauth_provider_is_asked_once_and_its_problems_named(tmp_path: Path) -> None:
    """check fetches the JWKS and asks the introspection endpoint (a wrong client secret
    is a problem there); the secret is never printed."""
    from tests.support.oauth_provider import CLIENT_SECRET, OAuthProvider

    provider = OAuthProvider().start()
    try:
        good = _oauth_config(tmp_path, provider.jwks_url, provider.introspection_url, CLIENT_SECRET)
        proc = check("--config", str(good))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"oauth: JWKS at {provider.jwks_url} answers (2 keys)" in proc.stdout
        assert f"oauth: introspection at {provider.introspection_url} answers" in proc.stdout
        assert provider.jwks_requests >= 1 and provider.introspection_requests == 1
        wrong = _oauth_config(
            tmp_path, provider.jwks_url, provider.introspection_url, "not-the-secret"
        )
        proc = check("--config", str(wrong))
        assert proc.returncode == 1
        assert "introspection at" in proc.stdout and "HTTP 401" in proc.stdout
        assert "not-the-secret" not in proc.stdout + proc.stderr
    finally:
        provider.stop()
    down = _oauth_config(tmp_path, provider.jwks_url, provider.introspection_url, CLIENT_SECRET)
    proc = check("--config", str(down))  # the provider is gone: both named, exit 1
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "JWKS at" in proc.stdout and "temporary failure" in proc.stdout
