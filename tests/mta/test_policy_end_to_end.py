"""One authbridge TOML drives both the daemon and the emitted MTA configs.

``authbridge serve --config X`` (its own policy on: allowed_networks, PLAIN/LOGIN only on
``secured`` sessions) behind Exim and Postfix configs made with ``emit-* --config X``.
The layers back each other up: Exim refuses an AUTH it did not advertise, Postfix does
not, and there authbridge refuses the client address itself.
"""

from __future__ import annotations

import base64
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mta.conftest import USERS, emit
from tests.mta.exim_helpers import bs_pipe, exim_check, exim_owned_dirs
from tests.mta.postfix_helpers import emit_postfix, wait_for_banner
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.postfix import PostfixMaster
from tests.support.swaks import run_swaks
from tests.support.tls import TlsFiles

LAN_CLIENT = "192.168.0.10"
OUTSIDE_CLIENT = "198.51.100.7"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "policy")


@pytest.fixture(scope="module")
def config_file(policy_dir: Path, users_file: Path) -> Path:
    path = policy_dir / "authbridge.toml"
    path.write_text(
        "[server]\n"
        f'socket = "{policy_dir / "auth-client"}"\n'
        'socket_mode = "0666"\n'
        'mechanisms = ["plain", "login", "cram-md5"]\n'
        "[policy]\n"
        "require_secured = true\n"
        'allowed_networks = ["127.0.0.0/8", "192.168.0.0/24"]\n'
        "failure_delay = 0.0\n"
        "[[store]]\n"
        'type = "passwd-file"\n'
        f'path = "{users_file}"\n'
    )
    return path


@pytest.fixture(scope="module")
def daemon(policy_dir: Path, users_file: Path, config_file: Path) -> Iterator[Path]:
    socket_path = policy_dir / "auth-client"
    args = ("--config", str(config_file), "--failure-delay", "0")
    with AuthbridgeServer(users_file, socket_path, extra_args=args):
        yield socket_path


def _exim_conf(base: Path, config_file: Path, tls: TlsFiles, *extra: str) -> Path:
    exim_owned_dirs(base / "spool", base / "log")
    conf = base / "exim.conf"
    result = emit(
        "emit-exim-config", "--standalone", str(conf), "--config", str(config_file),
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--spool-dir", str(base / "spool"), "--log-file-path", f"{base}/log/%slog",
        *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    exim_check(conf)
    return conf


def _raw_exim_session(conf: Path, client_ip: str, commands: list[str]) -> list[str]:
    """Talk SMTP to ``exim -bs`` line by line (swaks never sends an unadvertised AUTH)."""
    proc = subprocess.Popen(
        [require_binary("exim"), "-C", str(conf), "-odq", "-bs", "-oMa", client_ip,
         "-oMi", "127.0.0.1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout
    buffer = b""

    def reply() -> str:
        nonlocal buffer
        deadline = time.monotonic() + 10
        while True:
            lines = buffer.split(b"\r\n")
            for index, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" ":
                    buffer = b"\r\n".join(lines[index + 1 :])
                    return line.decode()
            ready, _, _ = select.select([stdout], [], [], deadline - time.monotonic())
            assert ready, f"no reply from exim; got {buffer!r}"
            chunk = os.read(stdout.fileno(), 4096)
            assert chunk, f"exim closed the session; got {buffer!r}"
            buffer += chunk

    try:
        replies = [reply()]
        for command in commands:
            proc.stdin.write(command.encode() + b"\r\n")
            proc.stdin.flush()
            replies.append(reply())
    finally:
        proc.stdin.close()
        proc.wait(10)
    return replies


def _plain(user: str) -> str:
    return base64.b64encode(f"\0{user}\0{USERS[user]}".encode()).decode()


def test_emitted_exim_uses_the_daemons_socket_and_networks(
    policy_dir: Path, config_file: Path, tls_files: TlsFiles, daemon: Path
) -> None:
    text = _exim_conf(runtime_dir(policy_dir, "exim"), config_file, tls_files).read_text()
    assert f"server_socket = {daemon}" in text
    assert "{<; 127.0.0.0/8 ; 192.168.0.0/24}" in text


def test_exim_lan_client_authenticates_with_daemon_policy_on(
    policy_dir: Path, config_file: Path, tls_files: TlsFiles, daemon: Path
) -> None:
    conf = _exim_conf(runtime_dir(policy_dir, "exim"), config_file, tls_files)
    pipe = bs_pipe(conf, LAN_CLIENT, tls=True)
    result = run_swaks(pipe=pipe, tls=True, auth="PLAIN", user="alice", password=USERS["alice"])
    assert result.auth_code == 235, result.transcript


def test_exim_refuses_unadvertised_auth_from_outside(
    policy_dir: Path, config_file: Path, tls_files: TlsFiles, daemon: Path
) -> None:
    conf = _exim_conf(runtime_dir(policy_dir, "exim"), config_file, tls_files)
    replies = _raw_exim_session(
        conf, OUTSIDE_CLIENT, ["EHLO client.test", f"AUTH PLAIN {_plain('alice')}", "QUIT"]
    )
    assert replies[1].startswith("250 ")
    assert replies[2].startswith("503 "), replies  # AUTH command used when not advertised


def test_plaintext_without_tls_is_still_refused_by_the_daemon(
    policy_dir: Path, config_file: Path, tls_files: TlsFiles, daemon: Path
) -> None:
    """If the admin lifts the TLS rule in Exim, authbridge's require_secured still holds
    for PLAIN; CRAM-MD5 (no clear-text password) goes through."""
    conf = _exim_conf(
        runtime_dir(policy_dir, "exim-notls"), config_file, tls_files,
        "--allow-auth-without-tls", "--allow-plaintext-without-tls",
    )  # fmt: skip
    pipe = bs_pipe(conf, LAN_CLIENT, tls=False)
    plain = run_swaks(pipe=pipe, auth="PLAIN", user="alice", password=USERS["alice"])
    assert plain.auth_code == 535, plain.transcript
    cram = run_swaks(pipe=pipe, auth="CRAM-MD5", user="alice", password=USERS["alice"])
    assert cram.auth_code == 235, cram.transcript


@pytest.fixture(scope="module")
def postfix(
    policy_dir: Path, config_file: Path, tls_files: TlsFiles, daemon: Path
) -> Iterator[PostfixMaster]:
    emitted = emit_postfix(
        runtime_dir(policy_dir, "postfix"), daemon, tls_files, free_tcp_port(),
        "--config", str(config_file), "--domains", "example.org",
    )  # fmt: skip
    assert f"smtpd_sasl_path = {daemon}\n" in emitted.main_lines
    with PostfixMaster(emitted.config) as master:
        wait_for_banner(master)
        yield master


def test_postfix_lan_client_authenticates(postfix: PostfixMaster) -> None:
    result = run_swaks(
        server=postfix.server, tls=True, auth="LOGIN", user="bob", password=USERS["bob"]
    )
    assert result.auth_code == 235, result.transcript


def test_postfix_blind_auth_from_outside_is_refused_by_the_daemon(postfix: PostfixMaster) -> None:
    result = run_swaks(
        server=postfix.server,
        tls=True,
        auth="PLAIN",
        user="bob",
        password=USERS["bob"],
        extra_args=["--xclient-addr", OUTSIDE_CLIENT],
    )
    assert f"XCLIENT ADDR={OUTSIDE_CLIENT}" in result.transcript
    assert result.auth_code == 535, result.transcript
