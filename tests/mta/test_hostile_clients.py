"""Issue 15's reproduction through the real Exim 4.96: one SMTP exchange must not kill us.

An unauthenticated client sends ``AUTH CRAM-MD5``, gets the 334 challenge and answers
with a digest holding a byte that is not UTF-8. That once raised inside authbridge, the
listener died with it, its socket file was removed and every later SMTP AUTH got
``435 Unable to authenticate at present``. Now Exim must answer 535 (a wrong digest),
and a good login right after, on the same authbridge process, must get 235.

The Exim config is the one ``authbridge emit-exim-config --standalone`` writes, with
``--allow-auth-without-tls`` so a plain connection is offered AUTH (the default offers
it after STARTTLS, which any client can start, so this changes nothing for the attack).
The hostile client speaks raw SMTP over a socket (swaks cannot send raw bytes); the good
login is swaks.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mta.conftest import emit
from tests.mta.exim_helpers import exim_check, exim_owned_dirs
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import EximConfig, EximDaemon
from tests.support.swaks import run_swaks
from tests.support.tls import TlsFiles, make_self_signed

pytestmark = pytest.mark.interop

USER = "cramuser@example.org"
PASSWORD = "cram-secret"
#: The issue's payload: a valid user, and a digest with 0xAE where a hex digit belongs.
HOSTILE_ANSWER = USER.encode() + b" 0123456789abcdef012\xae456789abcdef0123"
TIMEOUT = 20.0


@dataclass(frozen=True)
class Setup:
    bridge: AuthbridgeServer
    exim: EximDaemon
    port: int


def _start(base: Path, extra_args: tuple[str, ...]) -> tuple[AuthbridgeServer, Path]:
    users = base / "users.passwd"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    users.chmod(0o644)
    auth_dir = base / "auth"
    auth_dir.mkdir(exist_ok=True)
    auth_dir.chmod(0o755)
    socket_path = auth_dir / "auth-client"
    bridge = AuthbridgeServer(
        users, socket_path, extra_args=("--failure-delay", "0", *extra_args)
    ).start()
    return bridge, socket_path


def _emit(base: Path, socket_path: Path, tls: TlsFiles, port: int) -> Path:
    spool, logs = base / "spool", base / "log"
    exim_owned_dirs(spool, logs)
    conf = base / "exim.conf"
    result = emit(
        "emit-exim-config", "--standalone", str(conf),
        "--socket", str(socket_path),
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--networks", "127.0.0.0/8", "--domains", "example.org",
        "--hostname", "mx.example.org",
        "--spool-dir", str(spool), "--log-file-path", f"{logs}/%slog",
        "--pid-file", str(base / "exim.pid"), "--listen", f"127.0.0.1:{port}",
        "--allow-auth-without-tls",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    exim_check(conf)
    return conf


@pytest.fixture(scope="module", params=["default", "dovecot-compat"])
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    require_binary("exim")
    require_binary("swaks")
    require_binary("openssl")
    mode = request.param
    # Directly under /tmp, not under pytest's base: another pytest session starting
    # meanwhile resets /tmp/pytest-of-root to 0700, and Exim's unprivileged children
    # then cannot reach the auth socket (435), which is not what this test is about.
    base = runtime_dir(None, f"authbridge-hostile-{mode}")
    extra = ("--dovecot-compat",) if mode == "dovecot-compat" else ()
    bridge, socket_path = _start(base, extra)
    try:
        port = free_tcp_port()
        conf = _emit(base, socket_path, make_self_signed(base / "tls"), port)
        config = EximConfig(conf, base, base / "log", port, socket_path)
        with EximDaemon(config) as exim:
            yield Setup(bridge, exim, port)
    finally:
        bridge.stop()
        shutil.rmtree(base, ignore_errors=True)


class SmtpLines:
    """A raw SMTP client: whole reply lines, bytes on the wire exactly as given."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""

    def reply(self) -> tuple[int, list[bytes]]:
        """The next (possibly multi-line) reply: its code and its lines."""
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buffer:
                data = self.sock.recv(4096)
                assert data, f"Exim hung up; so far: {lines}"
                self.buffer += data
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def command(self, line: bytes) -> tuple[int, list[bytes]]:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def _hostile_cram_md5(port: int) -> tuple[int, bytes]:
    """The attack; Exim's reply code and line to the hostile digest."""
    client = SmtpLines(port)
    try:
        assert client.reply()[0] == 220
        code, ehlo = client.command(b"EHLO attacker.test")
        assert code == 250
        assert any(line[4:].startswith(b"AUTH") and b"CRAM-MD5" in line for line in ehlo), ehlo
        code, challenge = client.command(b"AUTH CRAM-MD5")
        assert code == 334, challenge
        assert base64.b64decode(challenge[0][4:]).startswith(b"<")
        code, answer = client.command(base64.b64encode(HOSTILE_ANSWER))
        client.command(b"QUIT")
        return code, answer[-1]
    finally:
        client.close()


def _good_login(port: int) -> int | None:
    result = run_swaks(server=f"127.0.0.1:{port}", auth="CRAM-MD5", user=USER, password=PASSWORD)
    assert result.auth_code is not None, result.transcript
    return result.auth_code


def test_a_digest_with_a_byte_that_is_not_utf8_is_refused_and_the_daemon_lives_on(
    setup: Setup,
) -> None:
    assert _good_login(setup.port) == 235  # the setup works before the attack
    code, line = _hostile_cram_md5(setup.port)
    # 535: a wrong digest is the client's fault (435 would mean we could not check it).
    assert code == 535, line
    # Same authbridge process, same socket: still there, still answering.
    proc = setup.bridge.proc
    assert proc is not None and proc.poll() is None, setup.bridge.stderr_text()
    assert os.path.exists(setup.bridge.socket_path)
    assert _good_login(setup.port) == 235
    log = setup.bridge.stderr_text()
    assert "Traceback" not in log
    assert "internal error" not in log


def test_a_burst_of_hostile_exchanges_does_not_wear_the_daemon_down(setup: Setup) -> None:
    """The issue's restart loop, driven repeatedly: every attempt is a plain 535."""
    for _ in range(5):
        assert _hostile_cram_md5(setup.port)[0] == 535
    assert _good_login(setup.port) == 235
    proc = setup.bridge.proc
    assert proc is not None and proc.poll() is None
