"""The PyPI ``dovecotauth`` client (1.0.1) against the auth server.

A small third-party library: ``connect(service, unix=PATH)`` sends VERSION 1.1 and CPID,
reads the handshake up to DONE (keeping SPID, CUID, COOKIE and the mechanisms it knows,
PLAIN only), then ``auth("PLAIN", user, password, secured=..., no_penalty=..., **fields)``
sends one AUTH per call on the same connection and returns ``(ok, fields)``. Its demo
command, ``python -m dovecotauth client``, reads the password from stdin and prints that
tuple. Parametrised over authbridge (one process and workers, ``--dovecot-compat``) and
the real Dovecot 2.3; the last tests run authbridge's default mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.interop.common import INTERNAL_FAILURE_USER, USERS, AuthServer
from tests.support import missing_peer, runtime_dir, wait_for_text
from tests.support.authbridge_proc import AuthbridgeServer

pytestmark = pytest.mark.interop

PLAINTEXT_REFUSED = "Plaintext authentication disallowed on non-secure (SSL/TLS) connections."


def dovecotauth() -> ModuleType:
    """The library; skip (fail under CI=true) if it is not installed."""
    try:
        import dovecotauth as module
    except ImportError:
        missing_peer("dovecotauth is not installed (pip install dovecotauth)")
    return module


def auth(
    server: AuthServer, user: str, password: str, **options: object
) -> tuple[bool | None, object]:
    """One PLAIN login on a new connection, as a ``service=smtp`` client."""
    with dovecotauth().connect("smtp", unix=str(server.socket_path)) as conn:
        result: tuple[bool | None, object] = conn.auth("PLAIN", user, password, **options)
        return result


def demo_client(socket_path: Path, user: str, password: str) -> subprocess.CompletedProcess[str]:
    """``python -m dovecotauth client``, the password on stdin (no terminal: its fallback)."""
    dovecotauth()
    # The demo reads $USER when it builds its parser, even with --user given.
    env = dict(os.environ, USER=os.environ.get("USER", "root"))
    command = [sys.executable, "-m", "dovecotauth", "client", "--unix", str(socket_path)]
    return subprocess.run(
        [*command, "--service", "smtp", "--user", user],
        input=password + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
        start_new_session=True,
    )


def test_handshake_is_read_to_done(auth_server: AuthServer) -> None:
    with dovecotauth().connect("smtp", unix=str(auth_server.socket_path)) as conn:
        assert conn.auth("PLAIN", "plainuser", USERS["plainuser"].password) == (
            True,
            {"user": "plainuser"},
        )
        assert conn.mechanisms == {"PLAIN": frozenset({b"plaintext"})}
        assert conn.spid.isdigit() and conn.cuid.isdigit()
        assert len(conn.cookie) == 32


@pytest.mark.parametrize("user", ["plainuser", "sha512user", "bcryptuser", "alice@example.com"])
def test_right_password_is_ok(auth_server: AuthServer, user: str) -> None:
    assert auth(auth_server, user, USERS[user].password, secured=True) == (True, {"user": user})


@pytest.mark.parametrize(("user", "password"), [("sha512user", "wrong"), ("nosuchuser", "x")])
def test_wrong_password_or_unknown_user_fails(
    auth_server: AuthServer, user: str, password: str
) -> None:
    assert auth(auth_server, user, password, secured=True) == (False, {"user": user})


def test_internal_failure_is_a_temp_fail_code(auth_server: AuthServer) -> None:
    """Dovecot 2.3's answer to a lookup that cannot be done, and authbridge's in compat."""
    result = auth(auth_server, INTERNAL_FAILURE_USER, "whatever", secured=True)
    assert result == (False, {"user": INTERNAL_FAILURE_USER, "code": "temp_fail"})


def test_passwords_with_spaces_quotes_and_percent(auth_server: AuthServer) -> None:
    for name in ("spaceuser", "quoteuser"):
        assert auth(auth_server, name, USERS[name].password)[0] is True, name


def test_many_requests_on_one_connection(auth_server: AuthServer) -> None:
    """Rising request ids on one connection; a FAIL in between changes nothing."""
    good = USERS["plainuser"].password
    with dovecotauth().connect("smtp", unix=str(auth_server.socket_path)) as conn:
        outcomes = [
            conn.auth("PLAIN", "plainuser", password, secured=True, no_penalty=True)[0]
            for password in (good, "wrong", good, "wrong", good)
        ]
    assert outcomes == [True, False, True, False, True]


def test_fields_reach_the_server(auth_server: AuthServer) -> None:
    """``rip``/``lip`` keyword arguments travel as AUTH fields; a login is case-folded."""
    ok, fields = auth(
        auth_server, "PlainUser", USERS["plainuser"].password, rip="192.0.2.7", lip="127.0.0.1"
    )
    assert ok is True
    assert fields == {"user": "plainuser", "original_user": "PlainUser"}
    if auth_server.kind == "dovecot":
        wait_for_text(auth_server.log_text, "service=smtp\trip=192.0.2.7\tlip=127.0.0.1")
    else:
        wait_for_text(auth_server.log_text, '"service": "smtp", "rip": "192.0.2.7"')


@pytest.mark.parametrize(("password", "printed"), [("plainpass", "(True, "), ("no", "(False, ")])
def test_demo_client_command(auth_server: AuthServer, password: str, printed: str) -> None:
    proc = demo_client(auth_server.socket_path, "plainuser", password)
    assert proc.returncode == 0, proc.stderr
    assert f"{printed}{{'user': 'plainuser'}})" in proc.stdout, proc.stdout + proc.stderr


# -- authbridge's default mode: dovecotauth's ``secured`` flag decides PLAIN ------------


@pytest.fixture(scope="module")
def default_server(interop_dir: Path, users_file: Path) -> Iterator[AuthServer]:
    base = runtime_dir(interop_dir, "dovecotauth-default")
    socket_path = base / "auth-client"
    with AuthbridgeServer(users_file, socket_path, extra_args=["--failure-delay", "0"]) as bridge:
        yield AuthServer("authbridge", socket_path, bridge.stderr_text)


def test_default_mode_refuses_plain_without_secured(default_server: AuthServer) -> None:
    result = auth(default_server, "plainuser", USERS["plainuser"].password)
    assert result == (False, {"user": "plainuser", "reason": PLAINTEXT_REFUSED})


def test_default_mode_accepts_plain_when_secured(default_server: AuthServer) -> None:
    result = auth(default_server, "plainuser", USERS["plainuser"].password, secured=True)
    assert result == (True, {"user": "plainuser"})


def test_default_mode_demo_client_is_refused(default_server: AuthServer) -> None:
    """The demo command has no way to say ``secured``."""
    proc = demo_client(default_server.socket_path, "plainuser", USERS["plainuser"].password)
    assert "(False, " in proc.stdout and "Plaintext authentication disallowed" in proc.stdout
    assert USERS["plainuser"].password not in default_server.log_text()
