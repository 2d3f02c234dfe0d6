"""Item 7: connection and request limits of a real ``authbridge serve``.

Small limits are configured where waiting for the defaults would take minutes; the
defaults themselves are pinned separately. Every "closed" assertion reads until EOF or
reset: the server really let go of the connection, not merely logged that it would.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from pathlib import Path

import pytest

from authbridge.config import ServerConfig
from authbridge.core import wire
from tests.policy.authclient import AuthClient, ConnectionClosed, plain_resp
from tests.policy.conftest import StartBridge
from tests.policy.daemon import open_files_soft_limit, pid_of
from tests.policy.users import PASSWORDS
from tests.support import wait_for_text, wait_for_value
from tests.support.dovecot import doveadm_auth

NO_PENALTY = "[penalty]\nenabled = false\n"


def test_defaults() -> None:
    defaults = ServerConfig()
    assert defaults.max_connections >= 10_000
    # Postfix keeps its auth connection open between SMTP sessions for minutes.
    assert defaults.idle_timeout >= 360
    assert 0 < defaults.request_timeout <= 300
    assert defaults.max_requests_per_connection >= 1
    assert wire.MAX_LINE_LENGTH == 16384


def _raise_own_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"hard RLIMIT_NOFILE {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _connect(path: str, timeout: float = 10.0) -> socket.socket:
    """connect() a UNIX socket, retrying while the listen backlog is full."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(path)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                sock.close()
                raise TimeoutError(f"backlog of {path} stayed full for {timeout}s") from None
            time.sleep(0.001)
    sock.settimeout(timeout)
    return sock


def test_ten_thousand_idle_connections_do_not_lock_out_a_new_client(
    bridge: StartBridge,
) -> None:
    held = 10_000
    server = bridge("many", f"[policy]\nfailure_delay = 0\n{NO_PENALTY}")
    assert open_files_soft_limit(pid_of(server)) >= held + 100
    _raise_own_fd_limit(held + 500)
    sockets: list[socket.socket] = []
    try:
        for _ in range(held):
            sockets.append(_connect(str(server.socket_path)))
        # Every held connection got its handshake: the server accepted them all.
        for sock in sockets[:: held // 50]:
            assert sock.recv(4096).startswith(b"VERSION\t1\t2\n")
        started = time.monotonic()
        proc = doveadm_auth(
            server.socket_path, "plainuser", PASSWORDS["plainuser"], "secured", "rip=192.0.2.9"
        )
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert elapsed < 5, f"a fresh AUTH took {elapsed:.1f}s with {held} connections held"
        # ... and the last held connection still works, too.
        sockets[-1].sendall(f"VERSION\t1\t2\nCPID\t{held}\n".encode())
        resp = plain_resp("plainuser", PASSWORDS["plainuser"])
        sockets[-1].sendall(f"AUTH\t1\tPLAIN\tservice=smtp\tsecured\tresp={resp}\n".encode())
        data = b""
        while b"OK\t1\t" not in data:
            chunk = sockets[-1].recv(4096)
            assert chunk, data
            data += chunk
    finally:
        for sock in sockets:
            sock.close()


def test_max_connections_refuses_only_beyond_the_limit(bridge: StartBridge) -> None:
    server = bridge("maxconn", "[server]\nmax_connections = 20\n")
    clients = [AuthClient(server.socket_path) for _ in range(20)]
    try:
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.settimeout(5)
        extra.connect(str(server.socket_path))
        with contextlib.suppress(ConnectionResetError):
            assert extra.recv(4096) == b"", "the 21st connection was served"
        extra.close()
        clients.pop().close()
        # The server frees the slot once it has seen that close: from then on a new
        # client is served (earlier attempts may still be refused, and are retried).
        again = wait_for_value(
            lambda: _handshake_or_none(server.socket_path),
            lambda client: client is not None,
            what="a new connection served once a slot was freed",
        )
        assert again is not None
        with again:
            assert again.handshake[0] == "VERSION\t1\t2"
    finally:
        for client in clients:
            client.close()


def _handshake_or_none(path: Path) -> AuthClient | None:
    """A connected client that got the handshake, or None if the server closed on it."""
    try:
        return AuthClient(path)
    except ConnectionClosed:
        return None


def test_line_limit(bridge: StartBridge) -> None:
    server = bridge("lines", f"[policy]\nfailure_delay = 0\n{NO_PENALTY}")
    resp = plain_resp("plainuser", PASSWORDS["plainuser"])
    head = "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tsession="
    tail = f"\tresp={resp}"
    with AuthClient(server.socket_path) as client:
        # The longest line allowed: 16383 bytes plus its LF.
        line = head + "x" * (wire.MAX_LINE_LENGTH - 1 - len(head) - len(tail)) + tail
        assert len(line) == wire.MAX_LINE_LENGTH - 1
        client.send(line + "\n")
        assert client.reply(1).startswith("OK\t1\t")
    with AuthClient(server.socket_path) as client:
        client.send("AUTH\t1\tPLAIN\tservice=smtp\tsession=" + "y" * wire.MAX_LINE_LENGTH)
        assert client.closed_within(5), "a 16 KiB line without LF did not close the connection"


def test_idle_connection_is_closed_but_not_while_a_request_waits(bridge: StartBridge) -> None:
    server = bridge("idle", "[server]\nidle_timeout = 1.0\n[policy]\nfailure_delay = 0\n")
    with AuthClient(server.socket_path) as idle, AuthClient(server.socket_path) as busy:
        busy.send("AUTH\t1\tLOGIN\tservice=smtp\tsecured\n")
        assert busy.read_line().startswith("CONT\t1\t")
        assert idle.closed_within(5)
        # The LOGIN exchange has been waiting for 1+ s: still open, still answered.
        busy.send("CONT\t1\t" + wire.b64encode(b"plainuser") + "\n")
        assert busy.read_line().startswith("CONT\t1\t")
        busy.send("CONT\t1\t" + wire.b64encode(PASSWORDS["plainuser"].encode()) + "\n")
        assert busy.reply(1).startswith("OK\t1\t")


def test_trickling_client_cannot_outlive_the_idle_timeout(bridge: StartBridge) -> None:
    """One byte at a time, never a full line: not activity, or it holds a slot for ever."""
    server = bridge("trickle", "[server]\nidle_timeout = 1.0\n")
    with AuthClient(server.socket_path) as client:
        partial = b"AUTH\t1\tPLAIN\tservice=smtp\tsession=" + b"z" * 200
        deadline = time.monotonic() + 4
        closed = False
        for byte in partial:
            if time.monotonic() > deadline:
                break
            try:
                client.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if client.closed_within(0.3):
                closed = True
                break
        assert closed, "a client trickling a partial line kept its connection past idle_timeout"


def test_request_timeout_forgets_an_abandoned_request(bridge: StartBridge) -> None:
    server = bridge("reqtimeout", "[server]\nrequest_timeout = 1.0\n")
    with AuthClient(server.socket_path) as client:
        client.send("AUTH\t7\tLOGIN\tservice=smtp\tsecured\n")
        assert client.read_line().startswith("CONT\t7\t")
        # The expiry sweep runs every 5 s; once it logs the expiry the id is unknown.
        wait_for_text(server.stderr_text, "requests abandoned by the client expired", timeout=15)
        client.send("CONT\t7\t" + wire.b64encode(b"plainuser") + "\n")
        assert client.read_line() == "FAIL\t7\treason=Authentication request timed out"


def test_too_many_checks_in_flight_close_the_connection(bridge: StartBridge) -> None:
    """Slow (bcrypt) checks stay in flight; one more than the limit closes the connection."""
    server = bridge("inflight", f"[server]\nmax_requests_per_connection = 20\n{NO_PENALTY}")
    resp = plain_resp("bcryptuser", "wrong")
    with AuthClient(server.socket_path) as client:
        client.send(
            "".join(f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\tresp={resp}\n" for n in range(1, 60))
        )
        assert client.closed_within(30)
    with AuthClient(server.socket_path) as other:
        assert other.plain(1, "plainuser", PASSWORDS["plainuser"], "secured").startswith("OK")


def test_requests_waiting_for_a_continuation_count_against_the_limit(
    bridge: StartBridge,
) -> None:
    """CRAM-MD5 without initial response leaves a request waiting for CONT: it is in flight.

    Without this, one connection can hold any number of requests (memory) for the
    request timeout, whatever max_requests_per_connection says.
    """
    server = bridge("inflight-cont", "[server]\nmax_requests_per_connection = 20\n")
    with AuthClient(server.socket_path) as client:
        client.send("".join(f"AUTH\t{n}\tCRAM-MD5\tservice=smtp\n" for n in range(1, 200)))
        assert client.closed_within(3), "199 requests in flight on one connection, limit 20"


def test_client_that_never_reads_is_disconnected(bridge: StartBridge) -> None:
    """Delayed FAILs pile up unread; past the outbox bound the server really hangs up.

    An attacker sends 1,000 failing requests whose FAIL replies are ~2 KB each (the
    name it typed is echoed in ``user=``), then neither reads nor writes. When the delay
    queue releases the FAILs the server gives up on the client; it must then close the
    connection at once, not keep it (and the replies it holds) until the idle timeout.
    """
    server = bridge("noread", "[policy]\nfailure_delay = 1.0\n[penalty]\nenabled = false\n")
    client = AuthClient(server.socket_path)
    resp = plain_resp("!" * 2000, "wrong")
    client.send(
        "".join(f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\tresp={resp}\n" for n in range(1, 1001))
    )
    wait_for_text(server.stderr_text, "does not read its replies", timeout=20)
    assert client.closed_within(3), "the server said it disconnects the client but did not"
    client.close()
    with AuthClient(server.socket_path) as other:
        assert other.plain(1, "plainuser", PASSWORDS["plainuser"], "secured").startswith("OK")


def test_open_files_limit_is_raised_at_start(bridge: StartBridge) -> None:
    server = bridge("rlimit", "")
    limit = open_files_soft_limit(pid_of(server))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert limit >= min(10_000, hard)
