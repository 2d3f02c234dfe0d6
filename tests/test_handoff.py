"""The supervisor's handoff (authbridge.daemon.balance) and a worker's receive path, in one process.

Real listening sockets, real ``SOCK_SEQPACKET`` socketpairs and real ``SCM_RIGHTS``: the
"workers" here are the far ends of the pairs, read with the worker's own code.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from authbridge.daemon.balance import Board, Dispatcher, Outlet, channel_pair
from authbridge.daemon.listeners import (
    HANDOFF_SPACE,
    HandoffClosed,
    Listener,
    bind_unix,
    receive_connections,
    take_handed,
)


class Pool:
    """A dispatcher with ``n`` workers; ``ends[i]`` is worker i's end of its channel."""

    def __init__(self, tmp: Path, n: int) -> None:
        self.board = Board.create(str(tmp / "board"), n)
        self.outlets: list[Outlet] = []
        self.ends: list[socket.socket] = []
        for slot in range(n):
            ours, theirs = channel_pair()
            theirs.setblocking(False)
            self.outlets.append(Outlet(slot, ours))
            self.ends.append(theirs)
        self.live = list(self.outlets)
        self.errors: list[str] = []
        self.changed = trio.Event()
        self.dispatcher = Dispatcher(
            self.board, lambda: self.live, lambda: self.changed, self.errors.append
        )

    def received(self, slot: int) -> list[socket.socket]:
        out: list[socket.socket] = []
        try:
            while True:
                out += take_handed(self.ends[slot], HANDOFF_SPACE)
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        for outlet in self.outlets:
            outlet.channel.close()
        for end in self.ends:
            end.close()


@pytest.fixture
def pool2(tmp_path: Path) -> Iterator[Pool]:
    pool = Pool(tmp_path, 2)
    yield pool
    pool.close()


def _pairs(n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``n`` connected pairs: the 'accepted' sides and the 'client' sides."""
    served, clients = [], []
    for _ in range(n):
        a, b = socket.socketpair()
        served.append(a)
        clients.append(b)
    return served, clients


def _closed(client: socket.socket) -> bool:
    """The client sees the connection end (EOF) without waiting."""
    client.settimeout(5)
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pick_takes_the_least_busy_and_takes_turns_on_a_tie(pool2: Pool) -> None:
    d, a, b = pool2.dispatcher, pool2.outlets[0], pool2.outlets[1]
    assert [d.pick(pool2.outlets).slot for _ in range(4)] == [0, 1, 0, 1]  # a tie: turns
    a.handed = 3
    assert {d.pick(pool2.outlets).slot for _ in range(4)} == {1}
    pool2.board.slots[0] = 3  # worker 0 finished all three
    b.handed = 1
    assert d.pick(pool2.outlets).slot == 0
    pool2.board.reset(0)
    assert pool2.board.done(0) == 0


async def test_a_burst_is_spread_and_each_fd_carries_its_listener(pool2: Pool) -> None:
    served, clients = _pairs(8)
    await pool2.dispatcher.hand_out(3, served)
    assert all(s.fileno() == -1 for s in served)  # the supervisor keeps no copy
    got = [pool2.received(0), pool2.received(1)]
    assert [len(g) for g in got] == [4, 4]
    assert [o.handed for o in pool2.outlets] == [4, 4]
    # Each handed socket is the accepted side of one client: prove it end to end.
    for sock in got[0] + got[1]:
        sock.sendall(b"%d\n" % sock.fileno())
    for client in clients:
        client.settimeout(5)
        assert client.recv(16).endswith(b"\n")
    for sock in got[0] + got[1] + clients:
        sock.close()


async def test_the_index_byte_comes_along(pool2: Pool) -> None:
    served, clients = _pairs(1)
    await pool2.dispatcher.hand_out(7, served)
    data, ancdata, _flags, _addr = pool2.ends[0].recvmsg(16, HANDOFF_SPACE)
    assert data == bytes((7, socket.AF_UNIX)) and ancdata
    fd = int.from_bytes(ancdata[0][2][:4], "little")
    os.close(fd)
    assert _closed(clients[0])


async def test_a_tcp_socket_arrives_as_one(pool2: Pool) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    await pool2.dispatcher.hand_out(1, [accepted])
    (got,) = pool2.received(0) + pool2.received(1)
    assert got.family == socket.AF_INET and got.type == socket.SOCK_STREAM
    assert got.getpeername() == client.getsockname()
    for sock in (got, client, server):
        sock.close()


async def test_a_gone_worker_is_skipped_and_no_worker_means_the_client_sees_a_close(
    pool2: Pool,
) -> None:
    pool2.ends[0].close()  # worker 0 died; its end is gone
    served, clients = _pairs(4)
    await pool2.dispatcher.hand_out(0, served)
    got = pool2.received(1)
    assert len(got) == 4  # all went to the live worker
    assert pool2.outlets[0].handed == 0
    pool2.ends[1].close()
    served, late = _pairs(2)
    await pool2.dispatcher.hand_out(0, served)  # nobody can take them
    assert all(_closed(c) for c in late)
    for sock in got + clients + late:
        sock.close()


async def test_connections_queued_to_a_worker_that_dies_are_closed(pool2: Pool) -> None:
    served, clients = _pairs(3)
    pool2.live = [pool2.outlets[0]]
    await pool2.dispatcher.hand_out(0, served)
    pool2.ends[0].close()  # the worker dies before it took them
    assert all(_closed(c) for c in clients)


async def test_a_full_queue_sends_the_connection_to_another_worker(pool2: Pool) -> None:
    pool2.live = [pool2.outlets[0]]
    kept: list[socket.socket] = []
    # Fill worker 0's queue (the kernel allows max_dgram_qlen messages).
    while True:
        served, clients = _pairs(1)
        kept += clients
        try:
            socket.send_fds(pool2.outlets[0].channel, [b"\0"], [served[0].fileno()])
        except BlockingIOError:
            served[0].close()
            break
        served[0].close()
    pool2.live = list(pool2.outlets)
    pool2.outlets[1].handed = 100  # busier on paper, but the only one with room
    served, clients = _pairs(1)
    await pool2.dispatcher.hand_out(0, served)
    got = pool2.received(1)
    assert len(got) == 1
    for sock in got + clients + kept + pool2.received(0):
        sock.close()


async def test_all_queues_full_then_closed_after_the_bound(
    pool2: Pool, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("authbridge.daemon.balance._send", lambda channel, tag, group: (0, "full"))
    served, clients = _pairs(2)
    started = trio.current_time()
    await pool2.dispatcher.hand_out(0, served)
    assert trio.current_time() - started >= 5.0
    assert all(_closed(c) for c in clients)


async def test_accept_loop_drains_applies_the_allow_list_and_contains_a_failure(
    tmp_path: Path, pool2: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "sock")
    listener = Listener(bind_unix(path), "unix:test")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool2.dispatcher.serve, 0, listener)
        clients = []
        for _ in range(6):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            clients.append(c)
        got: list[socket.socket] = []
        with trio.fail_after(10):
            while len(got) < 6:
                await trio.sleep(0.01)
                got += pool2.received(0) + pool2.received(1)
        # An exception in the handoff path: contained, counted as where="worker", the
        # connection closed, and the next one served.
        original = pool2.dispatcher.pick

        def broken(candidates: list[Outlet]) -> Outlet:
            pool2.dispatcher.pick = original  # type: ignore[method-assign]
            raise RuntimeError("boom")

        pool2.dispatcher.pick = broken  # type: ignore[method-assign]
        victim = socket.socket(socket.AF_UNIX)
        victim.connect(path)
        assert await trio.to_thread.run_sync(_closed, victim)
        assert pool2.errors == ["worker"]
        after = socket.socket(socket.AF_UNIX)
        after.connect(path)
        with trio.fail_after(10):
            while not (more := pool2.received(0) + pool2.received(1)):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    for sock in clients + got + more + [victim, after]:
        sock.close()
    listener.sock.close()


async def test_a_tcp_client_outside_the_allowed_networks_is_closed_at_accept(
    pool2: Pool,
) -> None:
    import ipaddress

    server = socket.socket(socket.AF_INET)
    server.bind(("127.0.0.1", 0))
    server.listen()
    listener = Listener(server, "tcp:test", allowed=(ipaddress.ip_network("192.0.2.0/24"),))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool2.dispatcher.serve, 0, listener)
        client = socket.create_connection(server.getsockname())
        assert await trio.to_thread.run_sync(_closed, client)
        nursery.cancel_scope.cancel()
    assert pool2.received(0) == pool2.received(1) == []
    client.close()
    server.close()


async def test_no_live_worker_leaves_connections_in_the_backlog(
    tmp_path: Path, pool2: Pool
) -> None:
    path = str(tmp_path / "sock")
    listener = Listener(bind_unix(path), "unix:test")
    pool2.live = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool2.dispatcher.serve, 0, listener)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        await trio.sleep(0.05)
        assert pool2.received(0) == pool2.received(1) == []  # queued, not closed
        pool2.live = [pool2.outlets[1]]
        pool2.changed.set()
        with trio.fail_after(10):
            while not (got := pool2.received(1)):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    for sock in [client, *got]:
        sock.close()
    listener.sock.close()


async def test_worker_receive_serves_each_handed_socket_and_ends_on_close(
    pool2: Pool,
) -> None:
    served, clients = _pairs(3)
    seen: list[int] = []

    async def handler(sock: socket.socket) -> None:
        seen.append(sock.fileno())
        sock.close()

    async with trio.open_nursery() as nursery:
        pool2.live = [pool2.outlets[0]]
        await pool2.dispatcher.hand_out(0, served)
        pool2.outlets[0].channel.close()  # then the supervisor goes away
        with trio.fail_after(10):
            await receive_connections(pool2.ends[0], handler, nursery)
    assert len(seen) == 3
    assert all(_closed(c) for c in clients)
    with pytest.raises(HandoffClosed):
        take_handed(pool2.ends[0], HANDOFF_SPACE)


async def test_worker_receive_contains_an_exception_and_goes_on(
    pool2: Pool, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    from authbridge.daemon import listeners

    real = listeners.take_handed
    calls = {"n": 0}

    def flaky(channel: socket.socket, space: int) -> list[socket.socket]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(channel, space)

    monkeypatch.setattr(listeners, "take_handed", flaky)
    errors: list[str] = []
    seen: list[socket.socket] = []

    async def handler(sock: socket.socket) -> None:
        seen.append(sock)

    served, clients = _pairs(1)
    pool2.live = [pool2.outlets[0]]
    await pool2.dispatcher.hand_out(0, served)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_connections, pool2.ends[0], handler, nursery, errors.append)
        with trio.fail_after(10):
            while not seen:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert errors == ["worker"]
    for sock in seen + clients:
        sock.close()
