"""Fixtures that start the real peers on loopback for the interop tests.

Every auth-server-facing fixture is parametrised over ``authbridge``,
``authbridge-workers`` (a supervisor with two serving processes on the socket) and
``dovecot``: the same test, run against the real Dovecot 2.3 auth service, shows that
the asserted SMTP outcome is what Dovecot produces, and against authbridge that we
produce it too, in either process model.
The auth server is module-scoped, so each test module starts each server once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.common import AUTHBRIDGE_ARGS, AuthServer, write_users_file
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth
from tests.support.exim import EximConfig, EximDaemon, write_exim_config
from tests.support.postfix import PostfixConfig, PostfixMaster, write_postfix_config
from tests.support.tls import TlsFiles, make_self_signed

AUTH_SERVERS = ("authbridge", "authbridge-workers", "dovecot")


@pytest.fixture(scope="session")
def interop_dir() -> Iterator[Path]:
    """A 0755 directory directly under /tmp for everything the peers touch.

    Not pytest's tmp_path: every pytest session that starts (other developers' runs,
    too) resets /tmp/pytest-of-root to 0700, and Exim's and Postfix's unprivileged
    children then can no longer reach their spool, log or socket.
    Set AUTHBRIDGE_KEEP_INTEROP_DIR=1 to keep it for a post-mortem.
    """
    base = runtime_dir(None, "authbridge-interop")
    yield base
    if not os.environ.get("AUTHBRIDGE_KEEP_INTEROP_DIR"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_files(interop_dir: Path) -> TlsFiles:
    require_binary("openssl")
    return make_self_signed(interop_dir / "tls")


@pytest.fixture(scope="session")
def users_file(interop_dir: Path) -> Path:
    return write_users_file(interop_dir / "users.passwd")


@pytest.fixture(scope="module", params=AUTH_SERVERS)
def auth_server(
    request: pytest.FixtureRequest, interop_dir: Path, users_file: Path
) -> Iterator[AuthServer]:
    kind: str = request.param
    base = runtime_dir(interop_dir, kind)
    socket_path = base / "auth-client"
    if kind == "dovecot":
        with DovecotAuth(users_file, socket_path, workdir=base / "dovecot") as dovecot:
            yield AuthServer(kind, socket_path, dovecot.log_text)
    else:
        args = [*AUTHBRIDGE_ARGS, "--workers", "2" if kind == "authbridge-workers" else "1"]
        with AuthbridgeServer(users_file, socket_path, extra_args=args) as bridge:
            yield AuthServer(kind, socket_path, bridge.stderr_text)


@pytest.fixture(scope="module")
def exim_config(auth_server: AuthServer, interop_dir: Path, tls_files: TlsFiles) -> EximConfig:
    require_binary("exim")
    require_binary("swaks")
    base = runtime_dir(interop_dir, f"exim-{auth_server.kind}")
    return write_exim_config(
        base, auth_socket=auth_server.socket_path, port=free_tcp_port(), tls=tls_files
    )


@pytest.fixture(scope="module")
def exim(exim_config: EximConfig) -> Iterator[EximDaemon]:
    with EximDaemon(exim_config) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def postfix_config(
    auth_server: AuthServer, interop_dir: Path, tls_files: TlsFiles
) -> PostfixConfig:
    require_binary("swaks")
    base = runtime_dir(interop_dir, f"postfix-{auth_server.kind}")
    # One smtpd serves every session in turn, so connection reuse is observable.
    return write_postfix_config(
        base,
        auth_socket=auth_server.socket_path,
        port=free_tcp_port(),
        tls=tls_files,
        smtpd_maxproc=1,
    )


@pytest.fixture(scope="module")
def postfix(postfix_config: PostfixConfig) -> Iterator[PostfixMaster]:
    with PostfixMaster(postfix_config) as master:
        yield master
