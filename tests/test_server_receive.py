"""Connection.receive: wait for readability, then one read; what each outcome becomes."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio
import trio.testing

from authbridge.core.session import Session, SessionSettings
from authbridge.daemon.server import READ_SIZE, Connection


def _connection() -> tuple[Connection, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    session = Session(SessionSettings(mechanisms=(), spid=1), cuid=1, cookie="0" * 32)
    return Connection(ours, session, 1), theirs


async def test_returns_what_arrived_at_most_a_read_at_a_time() -> None:
    conn, theirs = _connection()
    theirs.sendall(b"x" * (READ_SIZE + 10))
    assert await conn.receive() == b"x" * READ_SIZE
    assert await conn.receive() == b"x" * 10


async def test_waits_for_data_then_reads_it() -> None:
    conn, theirs = _connection()
    async with trio.open_nursery() as nursery:

        async def later() -> None:
            # Send only once receive() below is parked waiting for the socket.
            await trio.testing.wait_all_tasks_blocked()
            theirs.sendall(b"VERSION\t1\t2\n")

        nursery.start_soon(later)
        assert await conn.receive() == b"VERSION\t1\t2\n"


async def test_end_of_file_is_empty() -> None:
    conn, theirs = _connection()
    theirs.close()
    assert await conn.receive() == b""


async def test_a_spurious_wake_up_waits_again(monkeypatch: pytest.MonkeyPatch) -> None:
    conn, theirs = _connection()
    real_read = os.read
    calls = 0

    def read_once_too_early(fd: int, size: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BlockingIOError
        return real_read(fd, size)

    theirs.sendall(b"CPID\t7\n")
    monkeypatch.setattr(os, "read", read_once_too_early)
    assert await conn.receive() == b"CPID\t7\n"
    assert calls == 2


async def test_a_reset_connection_is_broken() -> None:
    conn, theirs = _connection()
    # SO_LINGER 0: close() resets instead of an orderly end of file (AF_UNIX ignores it,
    # so the reset is made on a TCP pair).
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.setblocking(False)
    conn.sock, conn.fd = accepted, accepted.fileno()
    client.sendall(b"x")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    listener.close()
    theirs.close()
    with pytest.raises(trio.BrokenResourceError):
        while await conn.receive():
            pass
