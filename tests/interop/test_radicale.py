"""Radicale (PyPI, >= 3.5.7) with ``[auth] type = dovecot`` against the auth server.

A third-party auth-client: a new connection per login, the handshake read with a single
``recv``, VERSION 1.1 and CPID, then ``AUTH PLAIN service=radicale rip=...`` with an
initial response and no ``secured``. A PROPFIND on the user's own collection answers
207 when the auth server said OK and 401 when it said FAIL. Parametrised over
authbridge (one process and workers) and the real Dovecot 2.3, in ``--dovecot-compat``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.common import AUTHBRIDGE_ARGS, INTERNAL_FAILURE_USER, USERS, AuthServer
from tests.support import free_tcp_port, runtime_dir, wait_for_text
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.radicale import RadicaleServer

pytestmark = pytest.mark.interop

MULTI_STATUS = 207
UNAUTHORIZED = 401
INTERNAL_SERVER_ERROR = 500


@pytest.fixture(scope="module")
def radicale(auth_server: AuthServer, interop_dir: Path) -> Iterator[RadicaleServer]:
    workdir = runtime_dir(interop_dir, f"radicale-{auth_server.kind}")
    with RadicaleServer(auth_server.socket_path, workdir) as server:
        yield server


@pytest.mark.parametrize(
    "user", ["plainuser", "sha512user", "bcryptuser", "alice@example.com", "quoteuser"]
)
def test_right_password_gets_207(radicale: RadicaleServer, user: str) -> None:
    status = radicale.propfind(user, USERS[user].password)
    assert status == MULTI_STATUS, radicale.log_tail()


def test_password_with_spaces_quotes_and_percent(radicale: RadicaleServer) -> None:
    status = radicale.propfind("spaceuser", USERS["spaceuser"].password)
    assert status == MULTI_STATUS, radicale.log_tail()


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("sha512user", "wrong"),
        ("plainuser", "PLAINPASS"),
        ("nosuchuser", "whatever"),
        ("brokenhash", "anything"),
    ],
)
def test_refused_login_gets_401(radicale: RadicaleServer, user: str, password: str) -> None:
    assert radicale.propfind(user, password) == UNAUTHORIZED, radicale.log_tail()


def test_failure_then_success_on_fresh_connections(radicale: RadicaleServer) -> None:
    """Radicale opens a connection per login: a FAIL leaves nothing behind."""
    assert radicale.propfind("plainuser", "nope") == UNAUTHORIZED
    assert radicale.propfind("plainuser", USERS["plainuser"].password) == MULTI_STATUS
    assert radicale.propfind("plainuser", "nope again") == UNAUTHORIZED


def test_internal_failure_is_401_as_with_dovecot(radicale: RadicaleServer) -> None:
    """``FAIL code=temp_fail``: Radicale reads only OK or not, so it asks for a password."""
    assert radicale.propfind(INTERNAL_FAILURE_USER, "whatever") == UNAUTHORIZED


def test_request_carries_service_and_remote_ip(
    radicale: RadicaleServer, auth_server: AuthServer
) -> None:
    """The auth server sees ``service=radicale`` and Radicale's client address as rip."""
    assert radicale.propfind("cramuser", USERS["cramuser"].password) == MULTI_STATUS
    if auth_server.kind == "dovecot":
        # auth_debug logs each request it reads (the response hidden).
        wait_for_text(auth_server.log_text, "PLAIN\tservice=radicale\trip=127.0.0.1\tresp=")
        wait_for_text(auth_server.log_text, "client passdb out: OK\t")
    else:
        wait_for_text(auth_server.log_text, '"service": "radicale", "rip": "127.0.0.1"')


def test_wrong_password_does_not_reach_the_logs(
    radicale: RadicaleServer, auth_server: AuthServer
) -> None:
    secret = "radicale-secret-9f3e"
    assert radicale.propfind("plainuser", secret) == UNAUTHORIZED
    assert secret not in radicale.log_text()
    assert secret not in auth_server.log_text()


# -- over TCP: Radicale's AF_INET connection type to authbridge's tcp_listen ----------


@pytest.fixture(scope="module")
def radicale_tcp(interop_dir: Path, users_file: Path) -> Iterator[RadicaleServer]:
    base = runtime_dir(interop_dir, "radicale-tcp")
    port = free_tcp_port()
    config = base / "authbridge.toml"
    config.write_text(f'[server]\ntcp_listen = ["127.0.0.1:{port}"]\n')
    args = [*AUTHBRIDGE_ARGS, "--config", str(config)]
    with (
        AuthbridgeServer(users_file, base / "auth-client", extra_args=args),
        RadicaleServer(("127.0.0.1", port), base / "radicale") as server,
    ):
        yield server


@pytest.mark.parametrize(
    ("password", "status"), [("plainpass", MULTI_STATUS), ("no", UNAUTHORIZED)]
)
def test_over_tcp(radicale_tcp: RadicaleServer, password: str, status: int) -> None:
    assert radicale_tcp.propfind("plainuser", password) == status, radicale_tcp.log_tail()


# -- default mode, plaintext allowed: a temporary failure closes the connection ------


@pytest.fixture(scope="module")
def radicale_default(interop_dir: Path, users_file: Path) -> Iterator[RadicaleServer]:
    base = runtime_dir(interop_dir, "radicale-default")
    config = base / "authbridge.toml"
    config.write_text("[policy]\nrequire_secured = false\nfailure_delay = 0\n")
    with (
        AuthbridgeServer(users_file, base / "auth-client", extra_args=["--config", str(config)]),
        RadicaleServer(base / "auth-client", base / "radicale") as server,
    ):
        yield server


def test_default_mode_internal_failure_is_500_not_401(radicale_default: RadicaleServer) -> None:
    """tempfail_disconnects: Radicale cannot read a reply and answers 500, so a CalDAV
    client is not told its password is wrong; the next login opens a new connection."""
    status = radicale_default.propfind(INTERNAL_FAILURE_USER, "whatever")
    assert status == INTERNAL_SERVER_ERROR, radicale_default.log_tail()
    assert radicale_default.propfind("plainuser", USERS["plainuser"].password) == MULTI_STATUS
    assert radicale_default.propfind("plainuser", "wrong") == UNAUTHORIZED
