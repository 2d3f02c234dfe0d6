"""The emitted standalone exim.conf, run by the real Exim, driven by the real swaks.

The daemon listens on 127.0.0.1 (inside the configured networks); clients outside them
are simulated with ``exim -bs -oMa IP`` — Exim only sets its variables, no packet leaves.
Authentication goes through the real auth socket (authbridge, see conftest).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.mta.conftest import USERS, AuthSocket, emit
from tests.mta.exim_helpers import bs_pipe, exim_check, exim_owned_dirs
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.exim import EximConfig, EximDaemon
from tests.support.swaks import SwaksResult, run_swaks
from tests.support.tls import TlsFiles

NETWORKS = "127.0.0.0/8,192.168.0.0/24"
LAN_CLIENT = "192.168.0.10"
OUTSIDE_CLIENT = "198.51.100.7"


@dataclass(frozen=True)
class EmittedExim:
    config: Path
    port: int


def _emit_standalone(base: Path, auth: AuthSocket, tls: TlsFiles, *extra: str) -> EmittedExim:
    require_binary("swaks")
    port = free_tcp_port()
    spool, logs = base / "spool", base / "log"
    exim_owned_dirs(spool, logs)
    conf = base / "exim.conf"
    result = emit(
        "emit-exim-config", "--standalone", str(conf),
        "--socket", str(auth.path),
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--networks", NETWORKS, "--domains", "example.org",
        "--allow-sender", "alice=postmaster@example.org",
        "--hostname", "mx.example.org",
        "--spool-dir", str(spool), "--log-file-path", f"{logs}/%slog",
        "--pid-file", str(base / "exim.pid"), "--listen", f"127.0.0.1:{port}",
        *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warnings:" not in result.stderr  # the fixture key is root:Debian-exim 0640
    exim_check(conf)
    return EmittedExim(conf, port)


@pytest.fixture(scope="module")
def emitted(
    tmp_path_factory: pytest.TempPathFactory, auth_socket: AuthSocket, tls_files: TlsFiles
) -> EmittedExim:
    require_binary("exim")
    return _emit_standalone(runtime_dir(tmp_path_factory, "exim-smtp"), auth_socket, tls_files)


@pytest.fixture(scope="module")
def daemon(emitted: EmittedExim, auth_socket: AuthSocket) -> Iterator[EximDaemon]:
    base = emitted.config.parent
    config = EximConfig(emitted.config, base, base / "log", emitted.port, auth_socket.path)
    with EximDaemon(config) as running:
        yield running


def _advertised(result: SwaksResult) -> list[str] | None:
    """Mechanisms in the last EHLO reply's AUTH line, None if AUTH was not offered."""
    last_ehlo = result.transcript.rsplit("EHLO", 1)[-1]
    match = re.search(r"^\s*<[-~]\s+250[- ]AUTH[ =](.*)$", last_ehlo, re.MULTILINE)
    return match.group(1).split() if match else None


def _after_auth(result: SwaksResult) -> tuple[int, ...]:
    """Reply codes after the 235 (swaks still sends QUIT after an error reply)."""
    return result.codes[result.codes.index(235) + 1 :]


def _auth(mechanism: str, user: str, **kwargs: Any) -> dict[str, Any]:
    return {"auth": mechanism, "user": user, "password": USERS[user], **kwargs}


def test_auth_not_offered_before_starttls(daemon: EximDaemon) -> None:
    result = run_swaks(server=daemon.server, stop_after="EHLO")
    assert result.last_code == 250
    assert _advertised(result) is None
    refused = run_swaks(server=daemon.server, **_auth("PLAIN", "alice"))
    assert "did not advertise authentication" in refused.transcript
    assert refused.returncode == 28


def test_auth_offered_after_starttls(daemon: EximDaemon) -> None:
    result = run_swaks(server=daemon.server, tls=True, stop_after="EHLO")
    assert _advertised(result) == ["PLAIN", "LOGIN", "CRAM-MD5"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("user", ["alice", "carol@example.org"])
def test_authenticates_through_the_socket(daemon: EximDaemon, mechanism: str, user: str) -> None:
    result = run_swaks(server=daemon.server, tls=True, **_auth(mechanism, user))
    assert result.auth_code == 235, result.transcript


def test_wrong_password_is_refused(daemon: EximDaemon) -> None:
    result = run_swaks(
        server=daemon.server, tls=True, auth="PLAIN", user="alice", password="not-her-password"
    )
    assert result.auth_code == 535, result.transcript


@pytest.mark.parametrize(
    ("user", "sender"),
    [
        ("alice", "bob@example.org"),  # someone else's login@domain
        ("bob", "postmaster@example.org"),  # mapped to alice, not to bob
        ("alice", "alice@example.net"),  # not a configured domain
        ("alice", "carol@example.org"),  # another login spelt as an address
    ],
)
def test_foreign_envelope_sender_is_rejected(daemon: EximDaemon, user: str, sender: str) -> None:
    result = run_swaks(
        server=daemon.server,
        tls=True,
        stop_after="MAIL",
        extra_args=["--from", sender],
        **_auth("PLAIN", user),
    )
    assert result.auth_code == 235, result.transcript
    assert _after_auth(result)[0] == 553, result.transcript  # the reply to MAIL
    assert f"Sender address <{sender}> is not owned by {user}" in result.transcript


@pytest.mark.parametrize(
    ("user", "sender"),
    [
        ("alice", "alice@example.org"),  # login@domain
        ("alice", "Alice@Example.ORG"),  # compared case-insensitively
        ("alice", "postmaster@example.org"),  # from the sender map
        ("carol@example.org", "carol@example.org"),  # the login itself
    ],
)
def test_owned_envelope_sender_is_accepted(daemon: EximDaemon, user: str, sender: str) -> None:
    result = run_swaks(
        server=daemon.server,
        tls=True,
        stop_after="RCPT",
        extra_args=["--from", sender, "--to", "someone@remote.example"],
        **_auth("PLAIN", user),
    )
    assert result.auth_code == 235, result.transcript
    assert _after_auth(result)[:2] == (250, 250), result.transcript  # MAIL, (relayed) RCPT


def test_unauthenticated_relay_is_refused(daemon: EximDaemon) -> None:
    result = run_swaks(
        server=daemon.server,
        tls=True,
        stop_after="RCPT",
        extra_args=["--from", "alice@example.org", "--to", "someone@remote.example"],
    )
    assert result.codes[-2:] == (550, 221), result.transcript  # RCPT refused, then QUIT


def test_client_outside_networks_is_not_offered_auth(emitted: EmittedExim) -> None:
    outside = run_swaks(
        pipe=bs_pipe(emitted.config, OUTSIDE_CLIENT, tls=True), tls=True, stop_after="EHLO"
    )
    assert "<~  250 HELP" in outside.transcript, outside.transcript  # EHLO again, in TLS
    assert outside.last_code == 250, outside.transcript
    assert _advertised(outside) is None
    inside = run_swaks(
        pipe=bs_pipe(emitted.config, LAN_CLIENT, tls=True),
        tls=True,
        **_auth("PLAIN", "alice"),
    )
    assert inside.auth_code == 235, inside.transcript


def test_lan_client_without_tls_is_not_offered_auth(emitted: EmittedExim) -> None:
    result = run_swaks(pipe=bs_pipe(emitted.config, LAN_CLIENT, tls=False), stop_after="EHLO")
    assert result.last_code == 250, result.transcript
    assert _advertised(result) is None


def test_auth_without_tls_offers_only_non_plaintext_mechanisms(
    tmp_path: Path, auth_socket: AuthSocket, tls_files: TlsFiles
) -> None:
    emitted = _emit_standalone(
        runtime_dir(tmp_path, "notls"), auth_socket, tls_files, "--allow-auth-without-tls"
    )
    pipe = bs_pipe(emitted.config, LAN_CLIENT, tls=False)
    ehlo = run_swaks(pipe=pipe, stop_after="EHLO")
    assert _advertised(ehlo) == ["CRAM-MD5"]
    cram = run_swaks(pipe=pipe, **_auth("CRAM-MD5", "bob"))
    assert cram.auth_code == 235, cram.transcript
    outside = run_swaks(pipe=bs_pipe(emitted.config, OUTSIDE_CLIENT, tls=False), stop_after="EHLO")
    assert _advertised(outside) is None
    tls_ehlo = run_swaks(
        pipe=bs_pipe(emitted.config, LAN_CLIENT, tls=True), tls=True, stop_after="EHLO"
    )
    assert _advertised(tls_ehlo) == ["PLAIN", "LOGIN", "CRAM-MD5"]
