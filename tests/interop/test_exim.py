"""Real Exim 4.96 (``driver = dovecot`` authenticators) authenticating through the auth server.

Every outcome is the SMTP reply code the real swaks client printed (or, where swaks
cannot express the dialogue, the reply our raw SMTP client read from Exim).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.interop.common import BROKEN_HASH_USER, USERS, AuthServer
from tests.interop.smtp_dialogue import SmtpDialogue, b64, plain_response
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.exim import EximConfig, EximDaemon, exim_pipe_command, write_exim_config
from tests.support.swaks import SwaksResult, run_swaks
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

SWAKS_AUTH_FAILED = 28  # swaks' exit status when authentication did not succeed

# (mechanism, user) pairs that must authenticate: PLAIN and LOGIN work with every
# stored scheme, CRAM-MD5 only with {PLAIN} and {CRAM-MD5} passwords.
GOOD_LOGINS = [
    *[("PLAIN", name) for name in USERS if name != "cramuser"],
    *[("LOGIN", name) for name in ("plainuser", "sha512user", "bcryptuser", "alice@example.com",
                                    "quoteuser")],
    ("CRAM-MD5", "plainuser"),
    ("CRAM-MD5", "cramuser"),
]  # fmt: skip


def _auth(exim: EximDaemon, mech: str, user: str, password: str, tls: bool = False) -> SwaksResult:
    return run_swaks(server=exim.server, auth=mech, user=user, password=password, tls=tls)


@pytest.mark.parametrize("tls", [False, True], ids=["plain-tcp", "starttls"])
@pytest.mark.parametrize(("mech", "user"), GOOD_LOGINS)
def test_good_login_gets_235(exim: EximDaemon, mech: str, user: str, tls: bool) -> None:
    result = _auth(exim, mech, user, USERS[user].password, tls)
    assert result.auth_code == 235, result.transcript
    assert result.returncode == 0, result.transcript
    if tls:
        assert "<~  235" in result.transcript, "AUTH did not happen inside TLS"


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_wrong_password_gets_535(exim: EximDaemon, mech: str) -> None:
    result = _auth(exim, mech, "plainuser", "not-the-password")
    assert result.auth_code == 535, result.transcript
    assert result.returncode == SWAKS_AUTH_FAILED


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_unknown_user_gets_535(exim: EximDaemon, mech: str) -> None:
    result = _auth(exim, mech, "nosuchuser", "whatever")
    assert result.auth_code == 535, result.transcript
    assert result.returncode == SWAKS_AUTH_FAILED


def test_wrong_password_over_starttls_gets_535(exim: EximDaemon) -> None:
    result = _auth(exim, "PLAIN", "sha512user", "wrong", tls=True)
    assert result.auth_code == 535, result.transcript
    assert "<~* 535" in result.transcript


def test_cram_md5_cannot_use_a_crypt_hash(exim: EximDaemon) -> None:
    """CRAM-MD5 needs the plaintext or the CRAM-MD5 key; a SHA512-CRYPT user fails."""
    result = _auth(exim, "CRAM-MD5", "sha512user", USERS["sha512user"].password)
    assert result.auth_code == 535, result.transcript


def test_unusable_stored_hash_gets_535(exim: EximDaemon) -> None:
    """Dovecot 2.3 answers a plain FAIL for a hash of an unknown scheme; so must compat mode."""
    result = _auth(exim, "PLAIN", BROKEN_HASH_USER, "anything")
    assert result.auth_code == 535, result.transcript


def test_concurrent_sessions_all_succeed(exim: EximDaemon) -> None:
    """8 SMTP sessions at once: Exim opens one auth connection per AUTH, all in parallel,
    with slow hashes (SHA512-CRYPT, bcrypt) mixed with CRAM-MD5 challenges."""
    cases = [
        (mech, user)
        for mech, user in GOOD_LOGINS
        if user in ("sha512user", "bcryptuser", "cramuser", "plainuser")
    ]
    cases = (cases * 2)[:8]
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        results = list(
            pool.map(lambda case: _auth(exim, case[0], case[1], USERS[case[1]].password), cases)
        )
    failures = [
        (case, r.transcript) for case, r in zip(cases, results, strict=True) if r.auth_code != 235
    ]
    assert not failures, failures


def test_plain_without_initial_response(exim: EximDaemon) -> None:
    """``AUTH PLAIN`` alone: Exim sends an empty ``resp=``, the server must answer CONT."""
    user = USERS["sha512user"]
    with SmtpDialogue("127.0.0.1", exim.config.port) as smtp:
        assert smtp.command("EHLO client.test").code == 250, smtp.dump()
        challenge = smtp.command("AUTH PLAIN")
        assert challenge.code == 334, smtp.dump()
        assert challenge.lines[0].strip() == "334", "PLAIN's first challenge must be empty"
        done = smtp.command(plain_response(user.name, user.password), shown="<credentials>")
        assert done.code == 235, smtp.dump()


def test_plain_without_initial_response_wrong_password(exim: EximDaemon) -> None:
    with SmtpDialogue("127.0.0.1", exim.config.port) as smtp:
        smtp.command("EHLO client.test")
        assert smtp.command("AUTH PLAIN").code == 334, smtp.dump()
        done = smtp.command(plain_response("plainuser", "wrong"), shown="<credentials>")
        assert done.code == 535, smtp.dump()


def test_login_with_initial_response(exim: EximDaemon) -> None:
    """``AUTH LOGIN <b64 user>`` (RFC 4954 initial response): only the password is asked."""
    user = USERS["plainuser"]
    with SmtpDialogue("127.0.0.1", exim.config.port) as smtp:
        smtp.command("EHLO client.test")
        prompt = smtp.command(f"AUTH LOGIN {b64(user.name)}")
        assert prompt.code == 334, smtp.dump()
        done = smtp.command(b64(user.password), shown="<password>")
        assert done.code == 235, smtp.dump()


def test_uppercase_login_is_normalised_in_set_id(exim: EximDaemon) -> None:
    """The OK's ``user=`` (lowercased) becomes $auth1 / $authenticated_id in Exim's log."""
    user = USERS["plainuser"]
    result = run_swaks(
        server=exim.server, auth="PLAIN", user="PlainUser", password=user.password, stop_after=None
    )
    assert result.auth_code == 235, result.transcript
    assert result.returncode == 0, result.transcript
    assert "A=auth_plain:plainuser " in exim.config.mainlog()


# ---- Exim driven without its daemon: -bs with a "remote" client address, -bh ----------


@pytest.fixture(scope="module")
def lan_only_exim(auth_server: AuthServer, interop_dir: Path, tls_files: TlsFiles) -> EximConfig:
    """A config that offers AUTH only to 192.168.0.0/24 (the client IP is faked by -oMa)."""
    require_binary("exim")
    require_binary("socat")
    base = runtime_dir(interop_dir, f"exim-lan-{auth_server.kind}")
    return write_exim_config(
        base,
        auth_socket=auth_server.socket_path,
        port=free_tcp_port(),
        tls=tls_files,
        auth_advertise_hosts="192.168.0.0/24",
    )


def test_bs_from_lan_address_authenticates(lan_only_exim: EximConfig) -> None:
    """No TLS and a non-local rip: Exim does not send ``secured``; compat mode still says OK."""
    user = USERS["sha512user"]
    pipe = exim_pipe_command(lan_only_exim, client_ip="192.168.0.10")
    result = run_swaks(pipe=pipe, auth="PLAIN", user=user.name, password=user.password)
    assert result.auth_code == 235, result.transcript


def test_bs_starttls_from_lan_address_authenticates(lan_only_exim: EximConfig) -> None:
    user = USERS["bcryptuser"]
    pipe = exim_pipe_command(lan_only_exim, client_ip="192.168.0.10", tls=True)
    result = run_swaks(pipe=pipe, auth="LOGIN", user=user.name, password=user.password, tls=True)
    assert result.auth_code == 235, result.transcript
    assert "<~  235" in result.transcript


def test_bs_from_other_network_is_not_offered_auth(lan_only_exim: EximConfig) -> None:
    user = USERS["plainuser"]
    pipe = exim_pipe_command(lan_only_exim, client_ip="10.9.9.9")
    result = run_swaks(pipe=pipe, auth="PLAIN", user=user.name, password=user.password)
    assert "did not advertise authentication" in result.transcript, result.transcript
    assert result.auth_code is None
    assert result.returncode == SWAKS_AUTH_FAILED


@pytest.mark.parametrize(("password", "code"), [("plainpass", 235), ("wrong", 535)])
def test_bh_session_really_calls_the_auth_server(
    lan_only_exim: EximConfig, password: str, code: int
) -> None:
    pipe = exim_pipe_command(lan_only_exim, test_host="192.168.0.10")
    result = run_swaks(pipe=pipe, auth="PLAIN", user="plainuser", password=password)
    assert result.auth_code == code, result.transcript


def test_auth_server_unreachable_gets_435(interop_dir: Path, tls_files: TlsFiles) -> None:
    """No server on the socket at all: Exim answers a temporary 435 (the fixtures' 4xx path)."""
    require_binary("exim")
    base = runtime_dir(interop_dir, "exim-nosocket")
    config = write_exim_config(
        base, auth_socket=base / "no-such-socket", port=free_tcp_port(), tls=tls_files
    )
    result = run_swaks(
        pipe=exim_pipe_command(config), auth="PLAIN", user="plainuser", password="plainpass"
    )
    assert result.auth_code == 435, result.transcript
