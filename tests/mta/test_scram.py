"""SCRAM-SHA-1/256 through the emitted Exim and Postfix configs to authbridge.

swaks cannot speak SCRAM, so the client is Python's own smtplib (STARTTLS, AUTH
continuations) driving an RFC 5802 client exchange written here; the server side is the
real Exim / Postfix relaying to ``authbridge serve``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mta.conftest import USERS, emit
from tests.mta.exim_helpers import exim_check, exim_owned_dirs
from tests.mta.postfix_helpers import emit_postfix, wait_for_banner
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import EximConfig, EximDaemon
from tests.support.postfix import PostfixMaster
from tests.support.tls import TlsFiles

MECHANISMS = ("plain", "scram-sha-1", "scram-sha-256")


class ScramClient:
    """The client half of RFC 5802, as an ``smtplib.SMTP.auth`` auth object."""

    def __init__(self, hash_name: str, user: str, password: str) -> None:
        self.hash_name = hash_name
        self.user = user.replace("=", "=3D").replace(",", "=2C")
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = f"n={self.user},r={self.nonce}"
        self.server_signature: bytes | None = None
        self.verified = False

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash_name).digest()

    def __call__(self, challenge: bytes | None = None) -> str:
        if challenge is None:
            return "n,," + self.client_first_bare
        text = challenge.decode()
        if self.server_signature is None:
            return self._client_final(text)
        fields = dict(item.split("=", 1) for item in text.split(","))
        self.verified = hmac.compare_digest(base64.b64decode(fields["v"]), self.server_signature)
        return ""

    def _client_final(self, server_first: str) -> str:
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        assert fields["r"].startswith(self.nonce), "server nonce must extend ours"
        salted = hashlib.pbkdf2_hmac(
            self.hash_name, self.password, base64.b64decode(fields["s"]), int(fields["i"])
        )
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}"


@pytest.fixture(scope="module")
def scram_socket(tmp_path_factory: pytest.TempPathFactory, users_file: Path) -> Iterator[Path]:
    base = runtime_dir(tmp_path_factory, "scram-auth")
    socket_path = base / "auth-client"
    args = ("--dovecot-compat", "--failure-delay", "0")
    with AuthbridgeServer(users_file, socket_path, mechanisms=MECHANISMS, extra_args=args):
        yield socket_path


@pytest.fixture(scope="module")
def exim_server(
    tmp_path_factory: pytest.TempPathFactory, scram_socket: Path, tls_files: TlsFiles
) -> Iterator[tuple[str, int]]:
    require_binary("exim")
    base = runtime_dir(tmp_path_factory, "scram-exim")
    exim_owned_dirs(base / "spool", base / "log")
    port = free_tcp_port()
    conf = base / "exim.conf"
    result = emit(
        "emit-exim-config", "--standalone", str(conf), "--socket", str(scram_socket),
        "--mechanisms", ",".join(MECHANISMS),
        "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key),
        "--spool-dir", str(base / "spool"), "--log-file-path", f"{base}/log/%slog",
        "--pid-file", str(base / "exim.pid"), "--listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    exim_check(conf)
    with EximDaemon(EximConfig(conf, base, base / "log", port, scram_socket)):
        yield ("127.0.0.1", port)


@pytest.fixture(scope="module")
def postfix_server(
    tmp_path_factory: pytest.TempPathFactory, scram_socket: Path, tls_files: TlsFiles
) -> Iterator[tuple[str, int]]:
    port = free_tcp_port()
    emitted = emit_postfix(
        runtime_dir(tmp_path_factory, "scram-postfix"), scram_socket, tls_files, port,
        "--socket", str(scram_socket), "--mechanisms", ",".join(MECHANISMS),
    )  # fmt: skip
    with PostfixMaster(emitted.config) as master:
        wait_for_banner(master)
        yield ("127.0.0.1", port)


def _login(
    server: tuple[str, int], tls: TlsFiles, mechanism: str, user: str, password: str
) -> ScramClient:
    client = ScramClient(mechanism.removeprefix("SCRAM-").replace("-", "").lower(), user, password)
    with smtplib.SMTP(*server, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("auth"), "AUTH must wait for STARTTLS"
        smtp.starttls(context=ssl.create_default_context(cafile=str(tls.cert)))
        smtp.ehlo("client.test")
        offered = smtp.esmtp_features["auth"].upper().split()
        assert mechanism in offered, offered
        smtp.auth(mechanism, client)
    return client


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize("mta", ["exim", "postfix"])
def test_scram_through_the_mta(
    request: pytest.FixtureRequest, tls_files: TlsFiles, mta: str, mechanism: str
) -> None:
    server = request.getfixturevalue(f"{mta}_server")
    user = "carol@example.org"
    client = _login(server, tls_files, mechanism, user, USERS[user])
    assert client.verified  # the server proved it knows the password too


@pytest.mark.parametrize("mta", ["exim", "postfix"])
def test_scram_wrong_password_is_refused(
    request: pytest.FixtureRequest, tls_files: TlsFiles, mta: str
) -> None:
    server = request.getfixturevalue(f"{mta}_server")
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        _login(server, tls_files, "SCRAM-SHA-256", "alice", "not-alices-password")
    assert refused.value.smtp_code == 535
