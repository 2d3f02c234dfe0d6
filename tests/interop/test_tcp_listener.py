"""The TCP listener, for MTAs on other hosts: real Postfix over ``inet:host:port``.

Also: a client outside ``tcp_allowed_networks`` is refused (connection closed before any
handshake) and logged.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.common import USERS, write_users_file
from tests.support import free_tcp_port, require_binary, runtime_dir, wait_for_text
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.postfix import PostfixMaster, write_postfix_config
from tests.support.swaks import run_swaks
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

CONFIG = """\
[server]
tcp_listen = ["127.0.0.1:{port}"]
tcp_allowed_networks = [{allowed}]

[policy]
require_secured = false
failure_delay = 0
"""


def _start(base: Path, users: Path, allowed: str, workers: int) -> tuple[AuthbridgeServer, int]:
    port = free_tcp_port()
    config = base / f"tcp-{port}.toml"
    config.write_text(CONFIG.format(port=port, allowed=allowed))
    server = AuthbridgeServer(
        users,
        base / f"unix-{port}",
        extra_args=["--config", str(config), "--workers", str(workers)],
    )
    return server, port


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    """The TCP listener and its allow-list work the same when workers inherit them."""
    value: int = request.param
    return value


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "tcp")


@pytest.fixture(scope="module")
def users(base: Path) -> Path:
    path = base / "users"
    write_users_file(path)
    return path


@pytest.fixture(scope="module")
def tcp_server(base: Path, users: Path, workers: int) -> Iterator[tuple[AuthbridgeServer, int]]:
    server, port = _start(base, users, '"127.0.0.0/8"', workers)
    with server:
        yield server, port


def test_postfix_authenticates_over_inet(
    tcp_server: tuple[AuthbridgeServer, int], base: Path, tls_files: TlsFiles
) -> None:
    require_binary("swaks")
    _server, port = tcp_server
    # A dead UNIX socket file: if Postfix used it instead of inet:, AUTH would say 454.
    dead = base / f"dead-socket-{port}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as holder:
        holder.bind(str(dead))
    config = write_postfix_config(
        runtime_dir(base, "postfix-inet"),
        auth_socket=dead,
        port=free_tcp_port(),
        tls=tls_files,
        extra_main={"smtpd_sasl_path": f"inet:127.0.0.1:{port}"},
    )
    user = next(iter(USERS.values()))
    with PostfixMaster(config) as master:
        good = run_swaks(server=master.server, auth="PLAIN", user=user.name, password=user.password)
        bad = run_swaks(
            server=master.server, auth="LOGIN", user=user.name, password="wrong password"
        )
    assert good.auth_code == 235, good.transcript
    assert bad.auth_code == 535, bad.transcript


def test_a_client_outside_the_allowed_networks_is_refused_and_logged(
    base: Path, users: Path, workers: int
) -> None:
    server, port = _start(base, users, '"192.0.2.0/24"', workers)
    with server:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            try:
                data = conn.recv(4096)
            except ConnectionResetError:
                data = b""
            assert data == b""  # closed without a handshake
        # Log lines go out through the writer thread, a moment after the refusal.
        wait_for_text(server.stderr_text, "outside tcp_allowed_networks")
