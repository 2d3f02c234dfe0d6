"""The emitted Postfix lines, added to a minimal config, run by the real Postfix 3.7.

The base config only says where things live (unpacked binaries, private queue, log file)
and that nothing is ever delivered; every SASL, TLS and sender-policy setting comes from
``authbridge emit-postfix-config``. ``postconf -n`` and ``postfix check`` validate it,
then a real smtpd on loopback is driven by swaks through the auth socket.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mta.conftest import USERS, AuthSocket
from tests.mta.postfix_helpers import EmittedPostfix, emit_postfix, postfix_tool, wait_for_banner
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.postfix import (
    POSTCONF,
    PostfixMaster,
    postfix_env,
)
from tests.support.swaks import SwaksResult, run_swaks
from tests.support.tls import TlsFiles


@pytest.fixture(scope="module")
def emitted(
    tmp_path_factory: pytest.TempPathFactory, auth_socket: AuthSocket, tls_files: TlsFiles
) -> EmittedPostfix:
    require_binary("swaks")
    return emit_postfix(
        runtime_dir(tmp_path_factory, "postfix"), auth_socket.path, tls_files, free_tcp_port(),
        "--socket", str(auth_socket.path),
        "--networks", "127.0.0.0/8,192.168.0.0/24", "--domains", "example.org",
        "--allow-sender", "alice=postmaster@example.org", "--hostname", "mx.example.org",
    )  # fmt: skip


@pytest.fixture(scope="module")
def master(emitted: EmittedPostfix) -> Iterator[PostfixMaster]:
    with PostfixMaster(emitted.config) as running:
        wait_for_banner(running)
        yield running


def test_postconf_accepts_every_emitted_line(emitted: EmittedPostfix) -> None:
    proc = subprocess.run(
        [str(POSTCONF), "-c", str(emitted.config.conf_dir), "-n"],
        capture_output=True,
        text=True,
        env=postfix_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr  # e.g. unused/unknown parameter
    active = dict(line.split(" = ", 1) for line in proc.stdout.splitlines() if " = " in line)
    for line in emitted.main_lines.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split(" = ", 1)
            assert active.get(name) == value, name
    services = subprocess.run(
        [str(POSTCONF), "-c", str(emitted.config.conf_dir), "-F"],
        capture_output=True,
        text=True,
        env=postfix_env(),
        timeout=60,
        check=True,
    ).stdout
    assert f"127.0.0.1:{emitted.config.port}/inet/chroot = n" in services


def test_postfix_check_is_clean(emitted: EmittedPostfix) -> None:
    proc = postfix_tool("postfix", "-c", str(emitted.config.conf_dir), "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # unpacked (not dpkg-installed) binaries lack their setgid bits: the only tolerated noise
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and not any(noise in line for noise in _INSTALL_NOISE)
    ]
    assert not problems, problems


# dpkg-statoverride never ran for the unpacked .deb (gotcha P5); harmless for SMTP.
_INSTALL_NOISE = ("not set-gid", "not owned by group postdrop")


def _advertised(result: SwaksResult) -> list[str] | None:
    last_ehlo = result.transcript.rsplit("EHLO", 1)[-1]
    for line in last_ehlo.splitlines():
        text = line.lstrip("<-~* ")
        if text[4:9] == "AUTH " or text[4:9] == "AUTH=":
            return text[9:].split()
    return None


def _auth(mechanism: str, user: str) -> dict[str, Any]:
    return {"auth": mechanism, "user": user, "password": USERS[user]}


def test_auth_not_offered_before_starttls(master: PostfixMaster) -> None:
    result = run_swaks(server=master.server, stop_after="EHLO")
    assert result.last_code == 250, result.transcript
    assert _advertised(result) is None


def test_auth_offered_after_starttls(master: PostfixMaster) -> None:
    result = run_swaks(server=master.server, tls=True, stop_after="EHLO")
    assert sorted(_advertised(result) or []) == ["CRAM-MD5", "LOGIN", "PLAIN"], result.transcript


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_authenticates_through_the_socket(master: PostfixMaster, mechanism: str) -> None:
    result = run_swaks(server=master.server, tls=True, **_auth(mechanism, "alice"))
    assert result.auth_code == 235, result.transcript


def test_wrong_password_is_refused(master: PostfixMaster) -> None:
    result = run_swaks(server=master.server, tls=True, auth="PLAIN", user="alice", password="wrong")
    assert result.auth_code == 535, result.transcript


def _send(master: PostfixMaster, user: str, sender: str) -> SwaksResult:
    return run_swaks(
        server=master.server,
        tls=True,
        stop_after="RCPT",
        extra_args=["--from", sender, "--to", "someone@remote.example"],
        **_auth("PLAIN", user),
    )


@pytest.mark.parametrize(
    ("user", "sender"),
    [
        ("alice", "bob@example.org"),
        ("bob", "postmaster@example.org"),
        ("alice", "alice@example.net"),
        ("alice", "carol@example.org"),
    ],
)
def test_foreign_sender_rejected_at_rcpt(master: PostfixMaster, user: str, sender: str) -> None:
    result = _send(master, user, sender)
    after_auth = result.codes[result.codes.index(235) + 1 :]
    assert after_auth[:2] == (250, 553), result.transcript  # MAIL ok, RCPT refused
    assert "not owned by user" in result.transcript


@pytest.mark.parametrize(
    ("user", "sender"),
    [
        ("alice", "alice@example.org"),
        ("alice", "postmaster@example.org"),
        ("carol@example.org", "carol@example.org"),
    ],
)
def test_owned_sender_accepted(master: PostfixMaster, user: str, sender: str) -> None:
    result = _send(master, user, sender)
    after_auth = result.codes[result.codes.index(235) + 1 :]
    assert after_auth[:2] == (250, 250), result.transcript


@pytest.mark.parametrize(("client", "offered"), [("198.51.100.7", False), ("192.168.0.10", True)])
def test_auth_offered_only_to_configured_networks(
    master: PostfixMaster, client: str, offered: bool
) -> None:
    result = run_swaks(
        server=master.server,
        tls=True,
        extra_args=["--xclient-addr", client],
        **_auth("PLAIN", "alice"),
    )
    assert f"XCLIENT ADDR={client}" in result.transcript
    assert (_advertised(result) is not None) == offered, result.transcript


def test_client_outside_networks_cannot_send_even_with_blind_auth(master: PostfixMaster) -> None:
    """Postfix accepts an AUTH it did not advertise, so the emitted cidr check refuses the
    mail (and authbridge's allowed_networks the AUTH, unless in --dovecot-compat)."""
    result = run_swaks(
        server=master.server,
        tls=True,
        stop_after="RCPT",
        extra_args=[
            "--xclient-addr", "198.51.100.7",
            "--from", "alice@example.org", "--to", "someone@remote.example",
        ],
        **_auth("PLAIN", "alice"),
    )  # fmt: skip
    assert "submission is only open to the configured networks" in result.transcript
    assert "250 2.1.5" not in result.transcript, result.transcript  # no recipient accepted


@pytest.fixture(scope="module")
def chrooted(
    tmp_path_factory: pytest.TempPathFactory, users_file: Path, tls_files: TlsFiles
) -> Iterator[PostfixMaster]:
    """Debian's layout: smtpd chrooted into the queue directory, the auth socket inside
    it, and smtpd_sasl_path relative to it."""
    run = runtime_dir(tmp_path_factory, "postfix-chroot")
    socket_path = run / "spool" / "private" / "authbridge"
    emitted = emit_postfix(
        run, socket_path, tls_files, free_tcp_port(),
        "--socket", str(socket_path), "--domains", "example.org",
    )  # fmt: skip
    assert "smtpd_sasl_path = private/authbridge\n" in emitted.main_lines
    assert " inet n - y - - smtpd\n" in emitted.master_lines
    args = ("--dovecot-compat", "--failure-delay", "0")
    with (
        AuthbridgeServer(users_file, socket_path, extra_args=args),
        PostfixMaster(emitted.config) as master,
    ):
        wait_for_banner(master)
        yield master


@pytest.mark.parametrize("mechanism", ["PLAIN", "CRAM-MD5"])
def test_chrooted_smtpd_reaches_the_socket_in_its_queue(
    chrooted: PostfixMaster, mechanism: str
) -> None:
    result = run_swaks(server=chrooted.server, tls=True, **_auth(mechanism, "bob"))
    assert result.auth_code == 235, result.transcript
