"""The thin connection shell: direct writes, the writer only on EAGAIN, the raw accept loop."""

from __future__ import annotations

import ipaddress
import socket
import tempfile
from pathlib import Path

import trio
import trio.testing

from authbridge.core.session import Session, SessionSettings
from authbridge.daemon.listeners import Listener, accept_connections, unix_listener
from authbridge.daemon.server import MAX_OUTBOX, Connection


def _connection(sndbuf: int | None = None) -> tuple[Connection, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    session = Session(SessionSettings(mechanisms=(), spid=1), cuid=1, cookie="0" * 32)
    return Connection(ours, session, 1), theirs


async def test_a_reply_the_socket_takes_is_written_at_once_without_a_task() -> None:
    conn, theirs = _connection()
    conn.push(b"OK\t1\n")
    assert not conn.outbox and not conn.writing and not conn.pending
    assert theirs.recv(100) == b"OK\t1\n"


async def test_what_the_socket_does_not_take_goes_out_in_order_through_a_writer() -> None:
    conn, theirs = _connection(sndbuf=4096)
    lines = [f"OK\t{n}\tuser=someone\n".encode() for n in range(20000)]
    for line in lines:
        conn.push(line)  # before any nursery: the writer is pending, the reader woken
    assert conn.writing and conn.woken and len(conn.pending) == 1
    assert conn.outbox  # the rest waits, nothing is lost
    received = bytearray()
    async with trio.open_nursery() as nursery:
        conn.nursery = nursery
        for async_fn, args in conn.pending:
            nursery.start_soon(async_fn, *args)
        conn.pending.clear()
        conn.push(b"OK\tlast\n")  # queued behind the writer, never written ahead of it
        theirs.setblocking(False)
        with trio.fail_after(10):
            while not received.endswith(b"OK\tlast\n"):
                await trio.lowlevel.wait_readable(theirs)
                received += theirs.recv(1 << 16)
    assert bytes(received) == b"".join(lines) + b"OK\tlast\n"
    assert not conn.writing and not conn.outbox and not conn.gone


async def test_a_client_that_does_not_read_is_dropped_beyond_the_outbox_limit() -> None:
    conn, _theirs = _connection(sndbuf=4096)
    conn.holding = True  # as while one read's replies are made: nothing written yet
    chunk = b"x" * 65536
    while not conn.gone:
        conn.push(chunk)
    assert len(conn.outbox) > MAX_OUTBOX and conn.woken
    conn.push(b"more")  # ignored once gone
    assert len(conn.outbox) <= MAX_OUTBOX + len(chunk)


async def test_the_accept_loop_takes_a_whole_burst_per_wake_up() -> None:
    with tempfile.TemporaryDirectory(prefix="ab-shell-") as directory:
        path = str(Path(directory) / "auth-client")
        listener = unix_listener(path, 0o600, None, None)
        clients = []
        for _ in range(20):  # all waiting in the backlog before the loop starts
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)
            clients.append(client)
        accepted: list[socket.socket] = []

        async def handler(sock: socket.socket, address: object) -> None:
            assert not sock.getblocking()
            accepted.append(sock)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_connections, listener, handler, nursery)
                await trio.testing.wait_all_tasks_blocked()
                assert len(accepted) == 20
                nursery.cancel_scope.cancel()
        finally:
            for sock in accepted + clients:
                sock.close()
            listener.remove()
            listener.sock.close()


def test_tcp_allow_list_judges_the_address_accept_returned() -> None:
    listener = Listener(
        socket.socket(), "tcp:test", allowed=(ipaddress.ip_network("192.0.2.0/24"),)
    )
    try:
        assert listener.peer_allowed(("192.0.2.7", 40000))
        assert not listener.peer_allowed(("127.0.0.1", 40000))
        assert not listener.peer_allowed(("::1", 40000, 0, 0))
        assert not listener.peer_allowed("")  # not an IP address: refused, no exception
        with socket.socket() as other:
            assert Listener(other, "unix:x").peer_allowed("")  # no list: everyone
    finally:
        listener.sock.close()


async def test_connections_share_one_settings_object_and_a_reload_replaces_it() -> None:
    from dataclasses import replace

    from authbridge.checks.authenticator import Authenticator
    from authbridge.checks.hashing import Hasher
    from authbridge.config import Config
    from authbridge.daemon.server import AuthServer

    server = AuthServer(Config(), Authenticator([], Hasher()))
    first = server.settings
    handshakes: list[bytes] = []
    sessions: list[Session] = []
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            ours.setblocking(False)
            nursery.start_soon(server.serve_socket, ours)
            with trio.fail_after(10):
                await trio.lowlevel.wait_readable(theirs)
            handshakes.append(theirs.recv(4096))
            new = [c.session for c in server.connections]
            sessions.extend(n for n in new if all(n is not s for s in sessions))
            theirs.close()
    assert len(sessions) == 2
    assert sessions[0].settings is sessions[1].settings is first
    # Each connection still has its own id and cookie in the shared handshake head.
    cuids = [line for h in handshakes for line in h.split(b"\n") if line.startswith(b"CUID")]
    cookies = {line for h in handshakes for line in h.split(b"\n") if line.startswith(b"COOKIE")}
    assert cuids == [b"CUID\t1", b"CUID\t2"] and len(cookies) == 2
    assert handshakes[0].split(b"CUID")[0] == handshakes[1].split(b"CUID")[0]

    reloaded = Config()
    reloaded = replace(reloaded, server=replace(reloaded.server, request_timeout=7.0))
    server.apply_config(reloaded)
    assert server.settings is not first and server.settings.request_timeout == 7.0
