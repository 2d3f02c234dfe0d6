"""The per-process load loop: plain sockets and ``selectors``, no framework.

A worker process owns some connections. In *pipeline* mode each keeps ``depth``
requests in flight for the whole run; in *churn* mode each connection does the
handshake, one AUTH and a close, over and over (Exim's pattern). Latency is measured
here, client-side: from the write of the AUTH line (pipeline) or from connect (churn)
to the OK/FAIL line. Timestamps come from ``time.monotonic``, which is system-wide, so
the parent can start every worker at the same instant.
"""

from __future__ import annotations

import itertools
import os
import selectors
import socket
import time
from array import array
from dataclasses import dataclass, field
from typing import Literal

from authbridge.benchclient.workload import Attempt, cont_reply
from authbridge.core import wire

Mode = Literal["pipeline", "churn"]

HANDSHAKE = wire.join_line("VERSION", "1", "2")
#: How long to wait for answers still in flight once the run is over.
DRAIN_GRACE = 10.0
RECV_SIZE = 262144


class BenchError(Exception):
    """The server did not behave like an auth-client server (handshake, mechanism, ...)."""


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs; the attempts list is inherited through fork."""

    target: str
    mechanism: str
    mode: Mode
    connections: int
    depth: int
    duration: float
    warmup: float
    #: Stop after this many requests (this worker's share) instead of after ``duration``.
    requests: int | None
    timeout: float = 30.0


@dataclass
class WorkerResult:
    ok: int = 0
    fail: int = 0
    #: OK for a wrong password or FAIL for a right one.
    mismatched: int = 0
    errors: int = 0
    #: Completions inside the measurement window, and their latencies in seconds.
    measured: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    window_start: float = 0.0
    window_end: float = 0.0
    error_messages: list[str] = field(default_factory=list)


def open_socket(target: str, timeout: float) -> socket.socket:
    """Connect to ``/path/to/socket`` or ``host:port``."""
    if target.startswith("/") or ":" not in target:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[str, int] = target
    else:
        host, _, port = target.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        address = (host.strip("[]"), int(port))
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def handshake_bytes() -> bytes:
    return HANDSHAKE + wire.join_line("CPID", str(os.getpid()))


def check_handshake(lines: list[str], mechanism: str) -> None:
    """Raise BenchError unless the server's handshake offers ``mechanism``."""
    offered = [line.split("\t")[1].upper() for line in lines if line.startswith("MECH\t")]
    if not lines or not lines[0].startswith("VERSION\t1\t"):
        raise BenchError(f"not an auth-client server (first line {lines[:1]!r})")
    if mechanism not in offered:
        raise BenchError(f"server does not offer {mechanism} (it offers {', '.join(offered)})")


def blocking_handshake(target: str, mechanism: str, timeout: float) -> socket.socket:
    sock = open_socket(target, timeout)
    sock.sendall(handshake_bytes())
    buffer = wire.LineBuffer()
    lines: list[str] = []
    while not lines or lines[-1] != "DONE":
        data = sock.recv(RECV_SIZE)
        if not data:
            sock.close()
            raise BenchError("server closed the connection during the handshake")
        lines += buffer.feed(data)
    check_handshake(lines, mechanism)
    return sock


class _Pending:
    """One request in flight: when it was sent, what it carries, how many CONTs seen."""

    __slots__ = ("attempt", "started", "step")

    def __init__(self, started: float, attempt: Attempt) -> None:
        self.started = started
        self.attempt = attempt
        self.step = 0


class _Conn:
    __slots__ = ("buffer", "handshaken", "inflight", "next_id", "sock", "started")

    def __init__(self, sock: socket.socket, started: float, handshaken: bool) -> None:
        self.sock = sock
        self.buffer = wire.LineBuffer()
        self.inflight: dict[int, _Pending] = {}
        self.next_id = 1
        self.started = started
        self.handshaken = handshaken


class Worker:
    """Runs one plan share in this process; call :meth:`run` with the common start time."""

    def __init__(self, plan: Plan, attempts: list[Attempt], index: int, connections: int) -> None:
        self.plan = plan
        self.attempts = attempts
        # each worker starts at a different place in the same shuffled cycle
        offset = (index * 7919) % len(attempts)
        self._next_attempt = itertools.cycle(attempts[offset:] + attempts[:offset]).__next__
        self.connections = connections
        self.selector = selectors.DefaultSelector()
        self.result = WorkerResult()
        self.issued = 0
        self.stopping = False
        self.window_start = 0.0
        self.window_end = 0.0
        self.last_done = 0.0
        self.conns: list[_Conn] = []

    # -- set-up ---------------------------------------------------------------------

    def connect_all(self) -> None:
        """Pipeline mode opens and handshakes every connection before the clock starts."""
        if self.plan.mode != "pipeline":
            return
        for _ in range(self.connections):
            sock = blocking_handshake(self.plan.target, self.plan.mechanism, self.plan.timeout)
            conn = _Conn(sock, 0.0, True)
            self.conns.append(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    # -- helpers --------------------------------------------------------------------

    def _may_issue(self, now: float) -> bool:
        if self.stopping:
            return False
        limit = self.plan.requests
        if limit is not None:
            if self.issued >= limit:
                self.stopping = True
                return False
        elif now >= self.window_end:
            self.stopping = True
            return False
        return True

    def _auth_line(self, conn: _Conn, now: float) -> bytes:
        attempt = self._next_attempt()
        rid = conn.next_id
        conn.next_id += 1
        conn.inflight[rid] = _Pending(now, attempt)
        if self.plan.mode == "pipeline":  # churn counts its connections instead
            self.issued += 1
        return b"AUTH\t%d" % rid + attempt.tail

    def _record(self, started: float, now: float, ok: bool, attempt: Attempt) -> None:
        """Count one answer, if it came inside the measured window (warm-up is not)."""
        self.last_done = now
        if self.plan.requests is None and not self.window_start <= now < self.window_end:
            return
        result = self.result
        if ok:
            result.ok += 1
        else:
            result.fail += 1
        if ok != attempt.expect_ok:
            result.mismatched += 1
        result.measured += 1
        result.latencies.append(now - started)

    def _error(self, conn: _Conn, message: str) -> None:
        self.result.errors += 1 + len(conn.inflight)
        if len(self.result.error_messages) < 5:
            self.result.error_messages.append(message)
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self.selector.unregister(conn.sock)
        conn.sock.close()
        conn.inflight.clear()
        if conn in self.conns:
            self.conns.remove(conn)

    # -- churn ----------------------------------------------------------------------

    def _open_churn(self, now: float) -> None:
        try:
            sock = open_socket(self.plan.target, self.plan.timeout)
            sock.sendall(handshake_bytes())
        except OSError as exc:
            self.result.errors += 1
            if len(self.result.error_messages) < 5:
                self.result.error_messages.append(f"connect: {exc}")
            return
        conn = _Conn(sock, now, False)
        self.issued += 1
        self.conns.append(conn)
        self.selector.register(sock, selectors.EVENT_READ, conn)

    # -- the loop -------------------------------------------------------------------

    def run(self, start_at: float) -> WorkerResult:
        plan = self.plan
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic()
        self.window_start = now + (0.0 if plan.requests is not None else plan.warmup)
        self.window_end = self.window_start + plan.duration
        if plan.mode == "pipeline":
            for conn in list(self.conns):
                first = b"".join(
                    self._auth_line(conn, now) for _ in range(plan.depth) if self._may_issue(now)
                )
                if first:
                    conn.sock.sendall(first)
        else:
            for _ in range(self.connections):
                if self._may_issue(now):
                    self._open_churn(now)
        hard_stop = float("inf")
        mechanism = plan.mechanism
        churn = plan.mode == "churn"
        while self.conns or (churn and not self.stopping):
            now = time.monotonic()
            if self.stopping and hard_stop == float("inf"):
                hard_stop = now + DRAIN_GRACE
            if plan.requests is None and not self.stopping:
                self._may_issue(now)
            if now >= hard_stop:
                for conn in list(self.conns):
                    self._error(conn, "no answer before the drain deadline")
                break
            if churn and not self.stopping:
                while len(self.conns) < self.connections and self._may_issue(now):
                    self._open_churn(now)
            events = self.selector.select(timeout=0.2)
            for key, _ in events:
                conn = key.data
                try:
                    data = conn.sock.recv(RECV_SIZE)
                except OSError as exc:
                    self._error(conn, f"recv: {exc}")
                    continue
                if not data:
                    self._error(conn, "server closed the connection")
                    continue
                now = time.monotonic()
                out: list[bytes] = []
                close = False
                for line in conn.buffer.feed(data):
                    if not conn.handshaken:
                        # churn: skip the handshake lines, answer DONE with our AUTH
                        if line == "DONE":
                            conn.handshaken = True
                            out.append(self._auth_line(conn, conn.started))
                        continue
                    parts = line.split("\t", 2)
                    command = parts[0]
                    if command not in ("OK", "FAIL", "CONT") or len(parts) < 2:
                        continue
                    rid = int(parts[1])
                    entry = conn.inflight.get(rid)
                    if entry is None:
                        continue
                    if command == "CONT":
                        challenge = parts[2] if len(parts) > 2 else ""
                        reply = cont_reply(mechanism, entry.attempt, entry.step, challenge)
                        entry.step += 1
                        out.append(b"CONT\t%d\t%s\n" % (rid, reply))
                        continue
                    del conn.inflight[rid]
                    self._record(entry.started, now, command == "OK", entry.attempt)
                    if churn:
                        close = True
                    elif self._may_issue(now):
                        out.append(self._auth_line(conn, now))
                if close:
                    self._drop(conn)
                    continue
                if out:
                    try:
                        conn.sock.sendall(b"".join(out))
                    except OSError as exc:
                        self._error(conn, f"send: {exc}")
            if not churn and self.stopping and not any(c.inflight for c in self.conns):
                break
        for conn in list(self.conns):
            self._drop(conn)
        self.result.window_start = self.window_start
        self.result.window_end = self.window_end if self.plan.requests is None else self.last_done
        return self.result
