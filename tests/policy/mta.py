"""Real Exim and Postfix wired to one authbridge, for the policy tests."""

from __future__ import annotations

from pathlib import Path

from tests.policy.users import PASSWORDS
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.exim import EximConfig, exim_pipe_command, write_exim_config
from tests.support.postfix import PostfixConfig, write_postfix_config
from tests.support.swaks import SwaksResult, run_swaks
from tests.support.tls import TlsFiles

DOVEADM_AUTH_FAILED = 77


def exim_for(socket_path: Path, base: Path, name: str, tls: TlsFiles) -> EximConfig:
    require_binary("exim")
    require_binary("swaks")
    require_binary("socat")
    return write_exim_config(
        runtime_dir(base, name), auth_socket=socket_path, port=free_tcp_port(), tls=tls
    )


def postfix_for(socket_path: Path, base: Path, name: str, tls: TlsFiles) -> PostfixConfig:
    require_binary("swaks")
    return write_postfix_config(
        runtime_dir(base, name), auth_socket=socket_path, port=free_tcp_port(), tls=tls
    )


def password_of(user: str) -> str:
    return PASSWORDS[user]


def exim_session(
    config: EximConfig,
    user: str,
    *,
    client_ip: str | None = None,
    test_host: str | None = None,
    tls: bool = False,
    mech: str = "PLAIN",
    password: str | None = None,
    timeout: float = 20.0,
) -> SwaksResult:
    """One SMTP session on ``exim -bs -oMa IP`` (or ``-bh IP``); no traffic leaves the host."""
    pipe = exim_pipe_command(config, client_ip=client_ip, test_host=test_host, tls=tls)
    secret = password_of(user) if password is None else password
    return run_swaks(pipe=pipe, auth=mech, user=user, password=secret, tls=tls, timeout=timeout)


def postfix_session(
    server: str,
    user: str,
    *,
    tls: bool = True,
    mech: str = "PLAIN",
    password: str | None = None,
    timeout: float = 20.0,
) -> SwaksResult:
    secret = password_of(user) if password is None else password
    return run_swaks(server=server, auth=mech, user=user, password=secret, tls=tls, timeout=timeout)
