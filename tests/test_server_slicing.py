"""One client's pipelined burst, or its hang-up, is worked through in slices.

An attacker can write thousands of AUTH lines at once. If one step of its connection's
task parsed all that the socket holds (hundreds of lines per 64 KiB read), every other
client would wait for the whole slice: tens of milliseconds per read. The server bounds
the bytes it takes per read, so each step handles a bounded number of lines. Checked
here as structure (lines parsed per task step, counted by a trio instrument), not as a
timing; the latency effect is in ``benchmarks/flood.py``. The same holds for a client
that hangs up with thousands of requests pending: one event each, a slice per step.
"""

from __future__ import annotations

import base64
import io
import socket

import trio

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.checks.penalty import PenaltySettings
from authbridge.config import Config, PolicyConfig
from authbridge.daemon.server import ABORTED_EVENTS_PER_STEP, AuthServer
from authbridge.observability import logs
from tests.support import root_logging_restored
from tests.support.memory_store import MemoryStore

BURST = 3000
USERS = "joe:{PLAIN}right\n"
#: Lines one step of a connection's task may parse: a read is at most 4 KiB, and the
#: burst's lines are about 85 bytes (48 a read); 64 KiB reads gave 700-900.
MAX_LINES_PER_STEP = 64


class _LinesPerStep(trio.abc.Instrument):
    """The most lines any single task step added to the server's sessions."""

    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.before = 0
        self.most = 0

    def _total(self) -> int:
        return sum(conn.session.lines_received for conn in self.server.connections)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.before = self._total()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.most = max(self.most, self._total() - self.before)


def _auth_line(n: int, password: str) -> bytes:
    resp = base64.b64encode(f"\0joe\0{password}".encode()).decode()
    return f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\trip=192.0.2.7\tresp={resp}\n".encode()


async def test_pipelined_burst_is_parsed_a_slice_per_step() -> None:
    config = Config(policy=PolicyConfig(failure_delay=0.0), penalty=PenaltySettings(enabled=False))
    server = AuthServer(config, Authenticator([MemoryStore(USERS)], Hasher()))
    instrument = _LinesPerStep(server)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    burst = b"VERSION\t1\t2\nCPID\t1\n" + b"".join(
        _auth_line(n, f"guess-{n}") for n in range(1, BURST + 1)
    )
    replies = bytearray()

    def client() -> None:
        theirs.sendall(burst)
        while replies.count(b"\nFAIL\t") < BURST:
            data = theirs.recv(65536)
            if not data:
                return
            replies.extend(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run_background)
        nursery.start_soon(server.handle, trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        trio.lowlevel.add_instrument(instrument)
        try:
            await trio.to_thread.run_sync(client)
        finally:
            trio.lowlevel.remove_instrument(instrument)
        theirs.close()
        nursery.cancel_scope.cancel()
    assert replies.count(b"\nFAIL\t") == BURST
    assert 0 < instrument.most <= MAX_LINES_PER_STEP, instrument.most


class _EventsPerStep(trio.abc.Instrument):
    """The most log lines written to ``stream`` at once: in one task step, or at the end
    of one scheduler batch (where the lines of the batch are written in one go)."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream
        self.before = 0
        self.most = 0

    def _mark(self) -> None:
        now = self.stream.getvalue().count("\n")
        self.most = max(self.most, now - self.before)
        self.before = now

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._mark()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self._mark()

    def before_io_wait(self, timeout: float) -> None:
        self._mark()


async def test_hanging_up_with_thousands_pending_is_reported_in_slices() -> None:
    """Every abandoned request gets its event and its count, a slice per step."""
    pending = 1000
    stream = io.StringIO()
    with root_logging_restored():
        logs.configure("json", "info", stream)
        server = AuthServer(Config(), Authenticator([MemoryStore(USERS)], Hasher()))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        # PLAIN without an initial response: each request waits for its CONT.
        theirs.sendall(
            b"VERSION\t1\t2\nCPID\t1\n"
            + b"".join(f"AUTH\t{n}\tPLAIN\tservice=smtp\n".encode() for n in range(1, pending + 1))
        )
        instrument = _EventsPerStep(stream)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run_background)
            nursery.start_soon(
                server.handle, trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            )
            with trio.fail_after(10):
                while sum(c.session.in_flight for c in server.connections) < pending:
                    await trio.sleep(0.01)
            trio.lowlevel.add_instrument(instrument)
            theirs.close()
            with trio.fail_after(10):
                while stream.getvalue().count('"result": "aborted"') < pending:
                    await trio.sleep(0.01)
            trio.lowlevel.remove_instrument(instrument)
            nursery.cancel_scope.cancel()
        aborted = server.metrics.registry.get_sample_value(
            "authbridge_authentications_total", {"mechanism": "PLAIN", "result": "aborted"}
        )
        assert aborted == pending
        assert stream.getvalue().count('"reason": "client_disconnected"') == pending
        assert 0 < instrument.most <= ABORTED_EVENTS_PER_STEP + 1, instrument.most
