"""SCRAM-SHA-1/256 driven by an independent SCRAM client (scramp), against real Dovecot
2.3 and against authbridge, over the auth-client socket: the same exchange must succeed
on both, from stored {SCRAM-*} keys made by doveadm and from {PLAIN}, and fail on both
for a wrong password.
"""

from __future__ import annotations

import base64
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from scramp import ScramClient, ScramException

from authbridge.core import wire
from tests.support import require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth

MECHS = ("plain", "scram-sha-1", "scram-sha-256")


def _doveadm_pw(scheme: str, password: str) -> str:
    out = subprocess.run(
        [require_binary("doveadm"), "pw", "-s", scheme, "-p", password],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = runtime_dir(tmp_path_factory, "scram")
    path = base / "users"
    path.write_text(
        f"sha1user:{_doveadm_pw('SCRAM-SHA-1', 'pässword one')}\n"
        f"sha256user:{_doveadm_pw('SCRAM-SHA-256', 'pässword two')}\n"
        "plainuser:{PLAIN}plain secret\n"
        f"cryptuser:{_doveadm_pw('SHA512-CRYPT', 'crypted')}\n"
    )
    return path


@pytest.fixture(scope="module", params=["dovecot", "authbridge"])
def server_socket(request: pytest.FixtureRequest, users: Path) -> Iterator[Path]:
    sock = users.parent / f"{request.param}.sock"
    if request.param == "dovecot":
        require_binary("dovecot")
        with DovecotAuth(users, sock, mechanisms=MECHS):
            yield sock
    else:
        with AuthbridgeServer(
            users, sock, mechanisms=MECHS, extra_args=["--dovecot-compat", "--failure-delay", "0"]
        ):
            yield sock


class _Conn:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.buf = wire.LineBuffer()
        self.pending: list[str] = []
        self.sock.sendall(b"VERSION\t1\t2\nCPID\t77\n")
        while self.line() != "DONE":
            pass

    def line(self) -> str:
        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "server closed the connection"
            self.pending.extend(self.buf.feed(data))
        return self.pending.pop(0)

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")


def _exchange(path: Path, mech: str, user: str, password: str) -> tuple[str, bool]:
    """Run one SCRAM exchange; returns (the server's final line, client verified server)."""
    client = ScramClient([mech], user, password)
    conn = _Conn(path)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    conn.send(f"AUTH\t1\t{mech}\tservice=smtp\tresp={first}")
    reply = conn.line()
    if not reply.startswith("CONT"):
        return reply, False
    client.set_server_first(base64.b64decode(reply.split("\t")[2]).decode())
    final = base64.b64encode(client.get_client_final().encode()).decode()
    conn.send(f"CONT\t1\t{final}")
    reply = conn.line()
    if not reply.startswith("CONT"):
        return reply, False
    try:
        client.set_server_final(base64.b64decode(reply.split("\t")[2]).decode())
        verified = True
    except ScramException:
        verified = False
    conn.send("CONT\t1\t")
    return conn.line(), verified


@pytest.mark.parametrize(
    ("mech", "user", "password"),
    [
        ("SCRAM-SHA-1", "sha1user", "pässword one"),
        ("SCRAM-SHA-256", "sha256user", "pässword two"),
        ("SCRAM-SHA-1", "plainuser", "plain secret"),
        ("SCRAM-SHA-256", "plainuser", "plain secret"),
    ],
)
def test_scram_succeeds_and_the_server_proves_itself(
    server_socket: Path, mech: str, user: str, password: str
) -> None:
    final, verified = _exchange(server_socket, mech, user, password)
    assert final == f"OK\t1\tuser={user}"
    assert verified


@pytest.mark.parametrize(
    ("mech", "user", "password"),
    [
        ("SCRAM-SHA-256", "sha256user", "wrong"),
        ("SCRAM-SHA-1", "sha256user", "pässword two"),  # SHA-256 keys cannot serve SHA-1
        ("SCRAM-SHA-256", "cryptuser", "crypted"),  # a crypt hash cannot serve SCRAM
        ("SCRAM-SHA-256", "nobody", "x"),
    ],
)
def test_scram_fails_where_dovecot_fails(
    server_socket: Path, mech: str, user: str, password: str
) -> None:
    final, _ = _exchange(server_socket, mech, user, password)
    assert final.startswith("FAIL\t1")
