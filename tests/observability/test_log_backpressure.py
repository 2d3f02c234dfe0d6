"""A log stream nobody reads does not stall serving: lines are dropped and counted.

A real ``authbridge serve`` whose stdout and stderr are one pipe that this test never
reads. Once the pipe (64 KiB) and the daemon's bounded queue (1 MiB) are full, the log
writer thread waits in ``write`` for ever; logins must still be answered, each batch of
them within a deadline, and ``authbridge_log_lines_dropped_total`` must grow. Debug level
(the protocol trace) makes each login write several lines, so the bound is reached fast.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.observability import logs
from tests.observability.helpers import scrape
from tests.support import free_tcp_port, runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer

USER, PASSWORD = "joe", "Pipe-t3st-secret"
#: Logins sent together on one connection, then all answered before the next lot.
LOT = 250
#: Seconds one lot may take; a stalled event loop would never answer it.
LOT_DEADLINE = 15.0


class PipedServer(AuthbridgeServer):
    """``authbridge serve`` with stdout and stderr the write end of an unread pipe."""

    def start(self) -> PipedServer:
        read_end, write_end = os.pipe()
        self.pipe_read_end = read_end
        env = dict(os.environ)
        repo_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(write_end)
        return self

    def stderr_text(self) -> str:
        return "(the log is a pipe this test does not read)"


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def piped(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[PipedServer, int]]:
    base = runtime_dir(tmp_path_factory, "authbridge-pipe")
    users = base / "users.passwd"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    users.chmod(0o644)
    port = free_tcp_port()
    server = PipedServer(
        users,
        base / "auth-client",
        extra_args=[
            "--dovecot-compat",
            "--failure-delay",
            "0",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--workers",
            str(request.param),
            "--metrics-listen",
            f"127.0.0.1:{port}",
        ],
    )
    server.start()
    try:
        wait_for_value(lambda: _ready(port), bool, 30, "/metrics of the piped daemon")
        yield server, port
    finally:
        try:
            server.stop(timeout=20)
        finally:
            os.close(server.pipe_read_end)


def _ready(port: int) -> bool:
    try:
        return scrape(port).value("authbridge_ready") == 1
    except (OSError, KeyError, ValueError):
        return False


def _dropped(port: int) -> float:
    return scrape(port).value("authbridge_log_lines_dropped_total")


def _login_lot(sock: socket.socket, first: int) -> None:
    resp = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    lines = "".join(
        f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\trip=198.51.100.7\tresp={resp}\n"
        for n in range(first, first + LOT)
    )
    sock.sendall(lines.encode())
    deadline = time.monotonic() + LOT_DEADLINE
    data = b""
    while data.count(b"\n") < LOT:
        left = deadline - time.monotonic()
        answered = data.count(b"\n")
        assert left > 0, f"the daemon stalled: {answered} of {LOT} answers"
        sock.settimeout(left)
        chunk = sock.recv(65536)
        assert chunk, "the daemon closed the connection"
        data += chunk
    assert data.count(b"OK\t") == LOT, data[:200]


def test_an_unread_log_pipe_does_not_stall_logins(piped: tuple[PipedServer, int]) -> None:
    server, port = piped
    assert _dropped(port) == 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(LOT_DEADLINE)
        sock.connect(str(server.socket_path))
        sock.sendall(b"VERSION\t1\t2\nCPID\t1\n")
        greeting = b""
        while b"DONE\n" not in greeting:
            greeting += sock.recv(65536)
        # Enough debug lines to fill the pipe and the queue several times over.
        needed = 4 * (logs.MAX_QUEUED + 65536) // 700 + LOT
        first = 1
        while first < needed:
            _login_lot(sock, first)
            first += LOT
        # The counter moves at the end of a batch (a worker) or at the scrape.
        dropped = wait_for_value(lambda: _dropped(port), bool, 10, "dropped log lines")
        _login_lot(sock, first)  # still serving with the stream blocked
    assert dropped > 0
    assert wait_for_value(lambda: _dropped(port), lambda v: v > dropped, 10, "more drops")
