"""Real Postfix 3.7 smtpd (``smtpd_sasl_type = dovecot``) authenticating through the auth server.

Postfix differs from Exim in one way that matters to a server: each smtpd keeps ONE
auth connection open for all its SMTP sessions and numbers its requests 1, 2, 3, ...
on it, and it abandons a request (without telling the server) when the client cancels.
The fixture runs a single smtpd process so both are observable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.common import AUTHBRIDGE_ARGS, BROKEN_HASH_USER, USERS
from tests.interop.smtp_dialogue import SmtpDialogue, b64, plain_response
from tests.support import free_tcp_port, runtime_dir, wait_for_text
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.postfix import PostfixMaster, write_postfix_config
from tests.support.swaks import run_swaks
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

SWAKS_AUTH_FAILED = 28


@pytest.mark.parametrize(
    ("mech", "user"),
    [
        ("PLAIN", "plainuser"),
        ("PLAIN", "bcryptuser"),
        ("PLAIN", "alice@example.com"),
        ("LOGIN", "sha512user"),
        ("LOGIN", "quoteuser"),
        ("CRAM-MD5", "plainuser"),
        ("CRAM-MD5", "cramuser"),
    ],
)
def test_good_login_gets_235(postfix: PostfixMaster, mech: str, user: str) -> None:
    result = run_swaks(server=postfix.server, auth=mech, user=user, password=USERS[user].password)
    assert result.auth_code == 235, result.transcript
    assert result.returncode == 0


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_good_login_over_starttls_gets_235(postfix: PostfixMaster, mech: str) -> None:
    user = USERS["plainuser"]
    result = run_swaks(
        server=postfix.server, auth=mech, user=user.name, password=user.password, tls=True
    )
    assert result.auth_code == 235, result.transcript
    assert "<~  235" in result.transcript, "AUTH did not happen inside TLS"


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_wrong_password_gets_535(postfix: PostfixMaster, mech: str) -> None:
    result = run_swaks(server=postfix.server, auth=mech, user="plainuser", password="wrong")
    assert result.auth_code == 535, result.transcript
    assert result.returncode == SWAKS_AUTH_FAILED


def test_unknown_user_gets_535(postfix: PostfixMaster) -> None:
    result = run_swaks(server=postfix.server, auth="LOGIN", user="nosuchuser", password="x")
    assert result.auth_code == 535, result.transcript


def test_unusable_stored_hash_gets_535(postfix: PostfixMaster) -> None:
    result = run_swaks(server=postfix.server, auth="PLAIN", user=BROKEN_HASH_USER, password="x")
    assert result.auth_code == 535, result.transcript


def test_sasl_username_is_the_normalised_login(postfix: PostfixMaster) -> None:
    user = USERS["sha512user"]
    good = run_swaks(server=postfix.server, auth="PLAIN", user="SHA512User", password=user.password)
    assert good.auth_code == 235, good.transcript
    # smtpd logs no successful AUTH without a message, but a failed one names the user=
    # the auth server returned in its FAIL.
    log_before = len(postfix.config.maillog_text())
    failed = run_swaks(server=postfix.server, auth="PLAIN", user="SHA512User", password="wrong")
    assert failed.auth_code == 535, failed.transcript
    # postlogd writes asynchronously: wait for smtpd's line about the failure.
    new_log = wait_for_text(
        lambda: postfix.config.maillog_text()[log_before:], "SASL PLAIN authentication failed"
    )
    assert "sasl_username=sha512user" in new_log, new_log


def test_auth_connection_is_reused_across_smtp_sessions(postfix: PostfixMaster) -> None:
    """Five SMTP sessions, five AUTHs, one auth connection (same socket inode throughout)."""
    mechs = ["PLAIN", "LOGIN", "CRAM-MD5", "PLAIN", "LOGIN"]
    seen = []
    for mech in mechs:
        result = run_swaks(server=postfix.server, auth=mech, user="plainuser", password="plainpass")
        assert result.auth_code == 235, result.transcript
        seen.append(postfix.auth_connections())
    first = seen[0]
    assert len(first) == 1, f"expected one smtpd with an auth connection, got {first}"
    (inodes,) = first.values()
    assert len(inodes) == 1, f"smtpd holds several auth connections: {inodes}"
    assert all(snapshot == first for snapshot in seen), f"auth connection changed: {seen}"


def test_cancelled_login_then_plain_on_the_same_session(postfix: PostfixMaster) -> None:
    """``*`` aborts AUTH LOGIN (501); smtpd leaves that request pending on its auth
    connection and sends the next AUTH on the same connection, which must still succeed."""
    user = USERS["sha512user"]
    before = postfix.auth_connections()
    with SmtpDialogue("127.0.0.1", postfix.config.port) as smtp:
        assert smtp.command("EHLO client.test").code == 250, smtp.dump()
        assert smtp.command("AUTH LOGIN").code == 334, smtp.dump()
        assert smtp.command("*").code == 501, smtp.dump()
        during = postfix.auth_connections()
        done = smtp.command(
            f"AUTH PLAIN {plain_response(user.name, user.password)}", shown="AUTH PLAIN <creds>"
        )
        assert done.code == 235, smtp.dump()
    after = postfix.auth_connections()
    assert len(during) == 1, during
    assert after == during, "smtpd opened a new auth connection instead of multiplexing"
    if before:
        assert before == during


def test_cancelled_plain_then_good_login(postfix: PostfixMaster) -> None:
    """The same with PLAIN without initial response (an empty CONT from the server)."""
    user = USERS["bcryptuser"]
    with SmtpDialogue("127.0.0.1", postfix.config.port) as smtp:
        smtp.command("EHLO client.test")
        assert smtp.command("AUTH PLAIN").code == 334, smtp.dump()
        assert smtp.command("*").code == 501, smtp.dump()
        assert smtp.command("AUTH LOGIN").code == 334, smtp.dump()
        assert smtp.command(b64(user.name)).code == 334, smtp.dump()
        done = smtp.command(b64(user.password), shown="<password>")
        assert done.code == 235, smtp.dump()


@pytest.fixture
def authbridge_under_postfix(
    interop_dir: Path, users_file: Path, tls_files: TlsFiles
) -> Iterator[tuple[AuthbridgeServer, PostfixMaster]]:
    """A private authbridge and Postfix pair, so the test may restart the auth server."""
    base = runtime_dir(interop_dir, "restart")
    server = AuthbridgeServer(users_file, base / "auth-client", extra_args=AUTHBRIDGE_ARGS)
    with server:
        config = write_postfix_config(
            base / "postfix",
            auth_socket=server.socket_path,
            port=free_tcp_port(),
            tls=tls_files,
            smtpd_maxproc=1,
        )
        with PostfixMaster(config) as master:
            yield server, master


def test_smtpd_reconnects_after_authbridge_restart(
    authbridge_under_postfix: tuple[AuthbridgeServer, PostfixMaster],
) -> None:
    """Restarting authbridge under a running Postfix needs no Postfix restart: the same
    smtpd notices its connection is gone and opens a new one for the next session.
    (authbridge only: a stopped Dovecot's auth process keeps serving old connections.)"""
    server, postfix = authbridge_under_postfix
    user = USERS["plainuser"]
    first = run_swaks(server=postfix.server, auth="PLAIN", user=user.name, password=user.password)
    assert first.auth_code == 235, first.transcript
    before = postfix.auth_connections()
    assert len(before) == 1, before
    server.stop()
    server.start()
    again = run_swaks(server=postfix.server, auth="LOGIN", user=user.name, password=user.password)
    assert again.auth_code == 235, again.transcript
    after = postfix.auth_connections()
    assert after.keys() == before.keys(), "expected the same smtpd process"
    assert after != before, "expected a new auth connection after the restart"
