"""Replies go out before their bookkeeping; the bookkeeping is never lost or late.

The metrics and the authentication event of a request are deferred to the end of the
scheduler batch (``authbridge.observability.after_batch``), so that clients served in the same batch
do not wait for each other's log lines. Checked as structure: what is already on the
client's socket when the bookkeeping runs, and what is already logged when an
in-process client has its reply. The latency effect is in ``benchmarks/flood.py``.
"""

from __future__ import annotations

import base64
import io
import socket

import pytest
import trio

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.checks.penalty import PenaltySettings
from authbridge.config import Config, PolicyConfig
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Verdict
from authbridge.daemon.server import AuthServer
from authbridge.observability import after_batch, logs
from authbridge.observability.after_batch import AfterBatch
from tests.support import root_logging_restored
from tests.support.memory_store import MemoryStore

HANDSHAKE = b"VERSION\t1\t2\nCPID\t1\n"
USERS = "joe:{PLAIN}right\nann:{PLAIN}other\n"


def _auth(n: int, user: str, password: str) -> bytes:
    resp = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\trip=192.0.2.7\tresp={resp}\n".encode()


def _server() -> AuthServer:
    config = Config(policy=PolicyConfig(failure_delay=0.0), penalty=PenaltySettings(enabled=False))
    return AuthServer(config, Authenticator([MemoryStore(USERS)], Hasher()))


def _peek(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    return ours, theirs


async def _wait_for(sock: socket.socket, needle: bytes) -> bytes:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    data = b""
    with trio.fail_after(10):
        while needle not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
    return data


async def test_replies_of_one_batch_are_all_out_before_any_bookkeeping() -> None:
    """Two clients whose requests arrive together: both OKs precede both events."""
    server = _server()
    a_ours, a_theirs = _pair()
    b_ours, b_theirs = _pair()
    seen_at_bookkeeping: list[tuple[str, bytes, bytes]] = []

    def record(info: RequestInfo, verdict: Verdict, duration: float) -> None:
        seen_at_bookkeeping.append((verdict.user or "", _peek(a_theirs), _peek(b_theirs)))

    server.on_finished.append(record)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_background)
        for ours in (a_ours, b_ours):
            nursery.start_soon(
                server.handle, trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            )
        a_theirs.sendall(HANDSHAKE)
        b_theirs.sendall(HANDSHAKE)
        await _wait_for(a_theirs, b"DONE\n")
        await _wait_for(b_theirs, b"DONE\n")
        await trio.testing.wait_all_tasks_blocked()
        # Both lines are written before the server runs again: one batch serves both.
        a_theirs.sendall(_auth(1, "joe", "right"))
        b_theirs.sendall(_auth(1, "ann", "other"))
        await _wait_for(a_theirs, b"OK\t1\t")
        await _wait_for(b_theirs, b"OK\t1\t")
        nursery.cancel_scope.cancel()
    assert sorted(user for user, _, _ in seen_at_bookkeeping) == ["ann", "joe"]
    for _, on_a, on_b in seen_at_bookkeeping:
        assert b"OK\t1\t" in on_a and b"OK\t1\t" in on_b


async def test_event_and_metric_are_there_when_the_client_has_its_reply() -> None:
    stream = io.StringIO()
    with root_logging_restored():
        logs.configure("json", "info", stream)
        server = _server()
        ours, theirs = _pair()
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run_background)
            nursery.start_soon(
                server.handle, trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            )
            theirs.sendall(HANDSHAKE + _auth(7, "joe", "right"))
            await _wait_for(theirs, b"OK\t7\t")
            # No checkpoint between the reply and these looks.
            logged = stream.getvalue()
            counted = server.metrics.registry.get_sample_value(
                "authbridge_authentications_total", {"mechanism": "PLAIN", "result": "ok"}
            )
            nursery.cancel_scope.cancel()
    assert '"event": "authentication"' in logged and '"request": 7' in logged, logged
    assert counted == 1


async def test_shutdown_runs_what_is_still_deferred() -> None:
    batch = AfterBatch()
    done: list[int] = []
    batch.install()
    batch.defer(done.append, 1)
    batch.defer(done.append, 2)
    assert done == []  # the batch is not over
    batch.uninstall()
    assert done == [1, 2]
    batch.defer(done.append, 3)  # not installed: at once
    assert done == [1, 2, 3]


async def test_deferred_calls_run_when_the_batch_ends() -> None:
    batch = AfterBatch()
    done: list[int] = []
    batch.install()
    try:
        batch.defer(done.append, 1)
        await trio.lowlevel.checkpoint()
        assert done == [1]
    finally:
        batch.uninstall()


def test_end_of_the_run_runs_what_is_still_deferred() -> None:
    batch = AfterBatch()
    done: list[int] = []

    async def main() -> None:
        batch.install()
        batch.defer(done.append, 1)

    trio.run(main)
    assert done == [1]


async def test_a_failing_call_is_logged_and_the_rest_still_run() -> None:
    stream = io.StringIO()
    done: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    with root_logging_restored():
        logs.configure("json", "info", stream)
        batch = AfterBatch()
        batch.install()
        batch.defer(broken)
        batch.defer(done.append, 1)
        batch.uninstall()
    assert done == [1]
    logged = stream.getvalue()
    assert logged.count("internal error in per-request bookkeeping") == 1
    assert "RuntimeError" in logged
    assert "boom" not in logged  # the message may quote client data: never logged


async def test_pending_calls_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(after_batch, "MAX_PENDING", 3)
    batch = AfterBatch()
    done: list[int] = []
    batch.install()
    try:
        batch.defer(done.append, 1)
        batch.defer(done.append, 2)
        assert done == []
        batch.defer(done.append, 3)
        assert done == [1, 2, 3]
    finally:
        batch.uninstall()
