"""authbridge's own default (NOT Dovecot-compatible): PLAIN/LOGIN only on ``secured`` sessions.

Dovecot's auth service does not enforce plaintext-over-TLS on its auth-client socket
(see test_exim's -bs tests, which pass against Dovecot without ``secured``); authbridge
does unless ``--dovecot-compat`` is given. What counts as ``secured`` is the MTA's
decision, so these tests pin down what the real Exim and Postfix send:

* Postfix marks a session secured only under TLS.
* Exim marks it secured under TLS, and also when the client address equals the
  interface address (any loopback TCP session); ``-bs -oMa 192.168.0.10`` is neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.common import BROKEN_HASH_USER, INTERNAL_FAILURE_USER, USERS, AuthServer
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import EximConfig, EximDaemon, exim_pipe_command, write_exim_config
from tests.support.postfix import PostfixMaster, write_postfix_config
from tests.support.swaks import SwaksResult, run_swaks
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

LAN_CLIENT = "192.168.0.10"


@pytest.fixture(scope="module")
def strict_authbridge(interop_dir: Path, users_file: Path) -> Iterator[AuthServer]:
    base = runtime_dir(interop_dir, "authbridge-strict")
    socket_path = base / "auth-client"
    with AuthbridgeServer(users_file, socket_path, extra_args=["--failure-delay", "0"]) as server:
        yield AuthServer("authbridge-strict", socket_path, server.stderr_text)


@pytest.fixture(scope="module")
def strict_exim(
    strict_authbridge: AuthServer, interop_dir: Path, tls_files: TlsFiles
) -> EximConfig:
    require_binary("exim")
    require_binary("socat")
    base = runtime_dir(interop_dir, "exim-strict")
    return write_exim_config(
        base, auth_socket=strict_authbridge.socket_path, port=free_tcp_port(), tls=tls_files
    )


@pytest.fixture(scope="module")
def strict_postfix(
    strict_authbridge: AuthServer, interop_dir: Path, tls_files: TlsFiles
) -> Iterator[PostfixMaster]:
    base = runtime_dir(interop_dir, "postfix-strict")
    config = write_postfix_config(
        base, auth_socket=strict_authbridge.socket_path, port=free_tcp_port(), tls=tls_files
    )
    with PostfixMaster(config) as master:
        yield master


def _exim_bs(config: EximConfig, mech: str, user: str, tls: bool) -> SwaksResult:
    pipe = exim_pipe_command(config, client_ip=LAN_CLIENT, tls=tls)
    return run_swaks(pipe=pipe, auth=mech, user=user, password=USERS[user].password, tls=tls)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_exim_plaintext_without_tls_is_refused(strict_exim: EximConfig, mech: str) -> None:
    result = _exim_bs(strict_exim, mech, "plainuser", tls=False)
    assert result.auth_code == 535, result.transcript


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_exim_plaintext_over_starttls_is_accepted(strict_exim: EximConfig, mech: str) -> None:
    result = _exim_bs(strict_exim, mech, "sha512user", tls=True)
    assert result.auth_code == 235, result.transcript


def test_exim_cram_md5_without_tls_is_accepted(strict_exim: EximConfig) -> None:
    """CRAM-MD5 never shows the password, so the secured rule does not apply to it."""
    result = _exim_bs(strict_exim, "CRAM-MD5", "cramuser", tls=False)
    assert result.auth_code == 235, result.transcript


def test_exim_loopback_daemon_counts_as_secured(strict_exim: EximConfig) -> None:
    with EximDaemon(strict_exim) as daemon:
        user = USERS["plainuser"]
        result = run_swaks(
            server=daemon.server, auth="PLAIN", user=user.name, password=user.password
        )
    assert result.auth_code == 235, result.transcript


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_postfix_plaintext_without_tls_is_refused(strict_postfix: PostfixMaster, mech: str) -> None:
    user = USERS["plainuser"]
    result = run_swaks(
        server=strict_postfix.server, auth=mech, user=user.name, password=user.password
    )
    assert result.auth_code == 535, result.transcript


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_postfix_plaintext_over_starttls_is_accepted(
    strict_postfix: PostfixMaster, mech: str
) -> None:
    user = USERS["bcryptuser"]
    result = run_swaks(
        server=strict_postfix.server, auth=mech, user=user.name, password=user.password, tls=True
    )
    assert result.auth_code == 235, result.transcript


def test_postfix_cram_md5_without_tls_is_accepted(strict_postfix: PostfixMaster) -> None:
    user = USERS["cramuser"]
    result = run_swaks(
        server=strict_postfix.server, auth="CRAM-MD5", user=user.name, password=user.password
    )
    assert result.auth_code == 235, result.transcript


# ---- a malformed store entry: the entry's fault, a plain 535 (issue #17), never 4xx ---


def test_exim_answers_535_for_a_malformed_stored_hash(strict_exim: EximConfig) -> None:
    pipe = exim_pipe_command(strict_exim, client_ip=LAN_CLIENT, tls=True)
    result = run_swaks(
        pipe=pipe, auth="PLAIN", user=BROKEN_HASH_USER, password="x", tls=True, timeout=5
    )
    assert result.auth_code == 535, result.transcript


def test_postfix_answers_535_for_a_malformed_stored_hash(strict_postfix: PostfixMaster) -> None:
    result = run_swaks(
        server=strict_postfix.server,
        auth="PLAIN",
        user=BROKEN_HASH_USER,
        password="x",
        tls=True,
        timeout=5,
    )
    assert result.auth_code == 535, result.transcript


# ---- internal failures: authbridge closes the connection so the MTA defers (4xx) -----


def test_exim_defers_on_internal_failure(strict_exim: EximConfig) -> None:
    pipe = exim_pipe_command(strict_exim, client_ip=LAN_CLIENT, tls=True)
    result = run_swaks(
        pipe=pipe, auth="PLAIN", user=INTERNAL_FAILURE_USER, password="x", tls=True, timeout=3
    )
    assert result.auth_code == 435, result.transcript


def test_postfix_defers_on_internal_failure(strict_postfix: PostfixMaster) -> None:
    result = run_swaks(
        server=strict_postfix.server,
        auth="PLAIN",
        user=INTERNAL_FAILURE_USER,
        password="x",
        tls=True,
        timeout=3,
    )
    assert result.auth_code == 454, result.transcript
    # The next session must work again: smtpd reconnects to the auth server.
    user = USERS["plainuser"]
    again = run_swaks(
        server=strict_postfix.server, auth="PLAIN", user=user.name, password=user.password, tls=True
    )
    assert again.auth_code == 235, again.transcript
