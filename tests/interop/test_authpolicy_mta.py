"""The policy server's verdict as an SMTP client sees it, through the REAL Exim and Postfix.

authbridge with ``[auth_policy]`` behind each MTA: the policy server refusing gives 535
(Postfix also shows the server's ``msg``), allowing gives 235, and the report that
follows says what happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.common import USERS
from tests.support import free_tcp_port, require_binary, runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import EximConfig, exim_pipe_command, write_exim_config
from tests.support.policy_server import ALLOW, PolicyServer, reject
from tests.support.postfix import PostfixMaster, write_postfix_config
from tests.support.swaks import SwaksResult, run_swaks
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

LAN_CLIENT = "192.168.0.10"
USER = USERS["sha512user"]


@pytest.fixture(scope="module")
def policy() -> Iterator[PolicyServer]:
    with PolicyServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(policy: PolicyServer) -> None:
    policy.clear()
    policy.answer(default=ALLOW)


@pytest.fixture(scope="module")
def socket_path(policy: PolicyServer, interop_dir: Path, users_file: Path) -> Iterator[Path]:
    base = runtime_dir(interop_dir, "authbridge-authpolicy")
    config = base / "authbridge.toml"
    config.write_text(
        "[policy]\nfailure_delay = 0.0\n[penalty]\nenabled = false\n"
        f'[auth_policy]\nserver_url = "{policy.url}"\nhash_nonce = "mta-nonce"\n'
    )
    path = base / "auth-client"
    with AuthbridgeServer(users_file, path, extra_args=["--config", str(config)]):
        yield path


@pytest.fixture(scope="module")
def exim_config(socket_path: Path, interop_dir: Path, tls_files: TlsFiles) -> EximConfig:
    require_binary("exim")
    require_binary("socat")
    base = runtime_dir(interop_dir, "exim-authpolicy")
    return write_exim_config(base, auth_socket=socket_path, port=free_tcp_port(), tls=tls_files)


@pytest.fixture(scope="module")
def postfix(socket_path: Path, interop_dir: Path, tls_files: TlsFiles) -> Iterator[PostfixMaster]:
    base = runtime_dir(interop_dir, "postfix-authpolicy")
    config = write_postfix_config(
        base, auth_socket=socket_path, port=free_tcp_port(), tls=tls_files
    )
    with PostfixMaster(config) as master:
        yield master


def _exim(config: EximConfig) -> SwaksResult:
    pipe = exim_pipe_command(config, client_ip=LAN_CLIENT, tls=True)
    return run_swaks(pipe=pipe, auth="PLAIN", user=USER.name, password=USER.password, tls=True)


def _postfix(master: PostfixMaster) -> SwaksResult:
    return run_swaks(
        server=master.server, auth="PLAIN", user=USER.name, password=USER.password, tls=True
    )


def _report(policy: PolicyServer) -> dict[str, object]:
    reports = wait_for_value(lambda: policy.of("report"), bool, what="the report")
    return reports[-1].body


def test_exim_235_when_the_policy_server_allows(
    exim_config: EximConfig, policy: PolicyServer
) -> None:
    result = _exim(exim_config)
    assert result.auth_code == 235, result.transcript
    body = policy.of("allow")[0].body
    assert (body["login"], body["remote"], body["protocol"]) == (USER.name, LAN_CLIENT, "smtp")
    assert _report(policy)["success"] is True


def test_exim_535_when_the_policy_server_refuses(
    exim_config: EximConfig, policy: PolicyServer
) -> None:
    policy.answer(reject("Blocked by policy"))
    result = _exim(exim_config)
    assert result.auth_code == 535, result.transcript
    report = _report(policy)
    assert (report["success"], report["policy_reject"]) == (False, True)


def test_postfix_235_when_the_policy_server_allows(
    postfix: PostfixMaster, policy: PolicyServer
) -> None:
    result = _postfix(postfix)
    assert result.auth_code == 235, result.transcript
    assert _report(policy)["success"] is True


def test_postfix_535_with_the_servers_message(postfix: PostfixMaster, policy: PolicyServer) -> None:
    policy.answer(reject("Blocked by policy"))
    result = _postfix(postfix)
    assert result.auth_code == 535, result.transcript
    assert "Blocked by policy" in result.transcript
