"""Dovecot's own client, ``doveadm auth test``, against the auth server.

doveadm 2.3 always authenticates with PLAIN (``service=doveadm`` unless ``-x`` says
otherwise), exits 0 with "auth succeeded" and prints the OK's extra fields, or exits
77 with "auth failed".
"""

from __future__ import annotations

import subprocess

import pytest

from tests.interop.common import USERS, AuthServer
from tests.support import require_binary

pytestmark = pytest.mark.interop

DOVEADM_AUTH_FAILED = 77


def doveadm_auth_test(
    server: AuthServer, user: str, password: str, *info: str
) -> subprocess.CompletedProcess[str]:
    cmd = [require_binary("doveadm"), "auth", "test", "-a", str(server.socket_path)]
    for item in info:
        cmd += ["-x", item]
    cmd += [user, password]
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False
    )


def extra_fields(output: str) -> list[str]:
    """The tab/space separated ``key=value`` items doveadm prints after "extra fields:"."""
    fields: list[str] = []
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("extra fields"):
            fields += [item for rest in lines[index + 1 :] for item in rest.split()]
    return fields


@pytest.mark.parametrize("user", ["plainuser", "sha512user", "bcryptuser", "alice@example.com"])
def test_good_password_succeeds(auth_server: AuthServer, user: str) -> None:
    proc = doveadm_auth_test(auth_server, user, USERS[user].password)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"passdb: {user} auth succeeded" in proc.stdout
    assert f"user={user}" in extra_fields(proc.stdout)


def test_wrong_password_exits_77(auth_server: AuthServer) -> None:
    proc = doveadm_auth_test(auth_server, "sha512user", "wrong")
    assert proc.returncode == DOVEADM_AUTH_FAILED, proc.stdout + proc.stderr
    assert "auth failed" in proc.stdout + proc.stderr


def test_unknown_user_exits_77(auth_server: AuthServer) -> None:
    proc = doveadm_auth_test(auth_server, "nosuchuser", "whatever")
    assert proc.returncode == DOVEADM_AUTH_FAILED, proc.stdout + proc.stderr


@pytest.mark.parametrize(("password", "status"), [("plainpass", 0), ("wrong", 77)])
def test_with_service_and_remote_ip(auth_server: AuthServer, password: str, status: int) -> None:
    proc = doveadm_auth_test(
        auth_server, "plainuser", password, "service=smtp", "rip=192.0.2.7", "lip=127.0.0.1"
    )
    assert proc.returncode == status, proc.stdout + proc.stderr


def test_uppercase_login_is_lowercased(auth_server: AuthServer) -> None:
    proc = doveadm_auth_test(auth_server, "PlainUser", USERS["plainuser"].password)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "user=plainuser" in extra_fields(proc.stdout), proc.stdout


def test_password_with_spaces_and_quotes(auth_server: AuthServer) -> None:
    for name in ("spaceuser", "quoteuser"):
        proc = doveadm_auth_test(auth_server, name, USERS[name].password)
        assert proc.returncode == 0, proc.stdout + proc.stderr
