"""The trio shell around :class:`~authbridge.core.session.Session`.

One task per connection, on a non-blocking socket, reads and feeds the session. Checks
that nothing must wait for are answered inline; the others run as tasks, so replies go
out in whatever order checks finish (matched by id, as the protocol allows). Replies
are written straight to the socket, and only what it does not take at once waits in
the connection's outbox for a writer task, so no producer ever blocks on a slow
reader. A connection opens a nursery for such tasks the first time it needs one.
Delayed FAILs wait in one shared :class:`FailureDelayQueue` instead of one sleeping
task each.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import trio

from authbridge.checks.app_passwords import AppPasswordCheck, flush_last_used, flush_once
from authbridge.checks.authenticator import Authenticator
from authbridge.checks.authpolicy import AuthPolicy
from authbridge.checks.penalty import PenaltyTracker
from authbridge.checks.pipeline import CheckPipeline, Pending
from authbridge.checks.policy import PolicyGate
from authbridge.checks.rehash import Rehasher
from authbridge.checks.rehash_policy import RehashPolicy
from authbridge.config import Config, RehashSettings
from authbridge.core.mechanisms import resolve
from authbridge.core.session import (
    Check,
    Close,
    CredentialsFound,
    Finished,
    RequestInfo,
    Send,
    SendDelayed,
    Session,
    SessionSettings,
)
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.observability import contained, events
from authbridge.observability.after_batch import AfterBatch
from authbridge.observability.logs import get_logger
from authbridge.observability.metrics import Metrics

log = get_logger("authbridge.server")

#: What the daemon did about an exception hit while serving one client, per ``where``:
#: that client's bug costs that client only (see contained.report for the log line).
_CONSEQUENCE = {
    "connection": "internal error; connection closed",
    "check": "internal error while checking a credential; answered TEMPFAIL",
    "bookkeeping": "internal error in per-request bookkeeping; skipped",
}

#: A client that lets this much reply data pile up unread is disconnected.
MAX_OUTBOX = 1024 * 1024
#: At shutdown, seconds left to write the app passwords' pending last-used times.
SHUTDOWN_FLUSH = 2.0
#: Credential checks of one connection that run at the same time (the rest wait their
#: turn); MTAs have one request in flight per connection, attackers thousands.
CHECKS_PER_CONNECTION = 8
#: Cheap checks answered inline per batch of received lines; beyond it they become tasks
#: (and queue on the per-connection slots), so one big pipelined read cannot hog the loop.
INLINE_CHECKS_PER_READ = 16
#: Bytes taken per read. An MTA's AUTH line (150-300 bytes) fits many times over; a
#: client that pipelines thousands of lines is parsed in slices of a few dozen between
#: everyone else's steps (a 64 KiB read was 600-odd lines, 15-25 ms in one step). A
#: line up to the 16 KiB limit simply takes several reads.
READ_SIZE = 4096
#: Aborted requests whose events are written per scheduler turn (see _report_aborted).
ABORTED_EVENTS_PER_STEP = 64
#: A connection closing (protocol violation, shutdown) gets this long to send what was
#: queued before the close decision to a client that reads slowly.
CLOSE_FLUSH_TIMEOUT = 5.0
#: Connection cookies: random bytes each, and how many are drawn with one getrandom(2).
COOKIE_BYTES = 16
COOKIES_PER_DRAW = 256
#: The session's user name rules, the same for every connection.


class _Socket(Protocol):
    """What a connection needs of its socket: a standard or a trio socket."""

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class Spawner(Protocol):
    """Where a connection's tasks start: :class:`Connection` (or a trio nursery)."""

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any) -> None: ...


class Connection:
    """The I/O half of one client connection: a non-blocking socket and its session.

    The connection's own task reads; replies are written straight to the socket, and
    only what the socket does not take at once waits in the outbox for a writer task.
    Tasks of the connection (that writer, checks that must wait) run in a nursery the
    connection opens the first time it needs one: most connections never do.
    """

    def __init__(self, sock: _Socket, session: Session, cuid: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.cuid = cuid
        self.outbox = bytearray()
        #: While the replies to one read are being made: flush once, after all of them.
        self.holding = False
        self.closing = False
        self.gone = False
        self.tracing = False
        #: A writer task is sending the outbox: writing directly now would reorder replies.
        self.writing = False
        #: Set by the writer when it is done (only while a close waits for it).
        self.drained: trio.Event | None = None
        #: Checks running in their own task, and the ones waiting for one of them to
        #: finish (a queue, not parked tasks: an attacker's thousands of queued checks
        #: cost a few small objects each instead of a task, which keeps GC pauses short).
        self.checkers = 0
        self.queued: collections.deque[tuple[Check, float, Pending | None]] = collections.deque()
        #: The connection's nursery once opened, and the tasks asked for before that.
        self.nursery: trio.Nursery | None = None
        self.pending: list[tuple[Callable[..., Awaitable[object]], tuple[Any, ...]]] = []
        #: The read loop's cancel scope while it runs: wake() cancels it, so the reader
        #: notices a close, an abort or tasks to start without waiting for the client.
        self.scope: trio.CancelScope | None = None
        self.woken = False
        #: The reader is done: end of file, a broken socket, or the idle timeout.
        self.ended = False

    async def receive(self) -> bytes:
        """The next bytes from the client (empty at end of file).

        Wait until the socket is readable, then read once: trying the read first would,
        between an MTA's requests, always fail (a raised and caught BlockingIOError and
        a wasted system call per request). Waiting is also this loop's checkpoint.
        """
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                return os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                continue  # a spurious wake-up: wait again
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run a task of this connection (in its nursery, opened by the reader if need be)."""
        if self.nursery is not None:
            self.nursery.start_soon(async_fn, *args)
        else:
            self.pending.append((async_fn, args))
            self.wake()

    def wake(self) -> None:
        """Make the reader look at the connection's state now."""
        self.woken = True
        if self.scope is not None:
            self.scope.cancel()

    def push(self, data: bytes) -> None:
        if self.gone or self.closing:
            return
        if self.tracing:
            events.trace(self.cuid, "out", data)
        self.outbox += data
        if len(self.outbox) > MAX_OUTBOX:
            log.warning("client does not read its replies; disconnecting", cuid=self.cuid)
            self.gone = True
            self.wake()
        elif not self.holding:
            self.flush()

    def flush(self) -> None:
        """Send what is queued: one non-blocking write; a writer task for the rest."""
        if not self.outbox or self.writing or self.gone:
            return
        try:
            sent = os.write(self.fd, self.outbox)
        except BlockingIOError:
            sent = 0
        except OSError:  # the client is gone (EPIPE, ECONNRESET)
            self.gone = True
            self.wake()
            return
        if sent == len(self.outbox):
            self.outbox.clear()
            return
        del self.outbox[:sent]
        self.writing = True
        self.start_soon(self._write_rest)

    async def _write_rest(self) -> None:
        """Send the outbox as fast as the client reads it."""
        try:
            while self.outbox and not self.gone:
                await trio.lowlevel.wait_writable(self.fd)
                try:
                    sent = os.write(self.fd, self.outbox)
                except BlockingIOError:
                    continue
                except OSError:
                    self.gone = True
                    self.wake()
                    return
                del self.outbox[:sent]
        finally:
            self.writing = False
            if self.drained is not None:
                self.drained.set()

    def close_after_flush(self) -> None:
        self.closing = True
        self.wake()

    def abort(self) -> None:
        """End the connection now, dropping unsent replies (after an internal error)."""
        self.gone = True
        self.wake()


@dataclass(order=True)
class _Delayed:
    due: float
    seq: int
    conn: Connection = field(compare=False)
    data: bytes = field(compare=False)


class FailureDelayQueue:
    """Holds FAIL replies until their time, in one task for the whole server.

    That task is shared: an error while sending one connection's reply ends that
    connection (reported through ``on_error``), never the queue.
    """

    def __init__(
        self,
        clock: Callable[[], float] = trio.current_time,
        on_error: Callable[[BaseException, Connection], None] | None = None,
    ) -> None:
        self._heap: list[_Delayed] = []
        self._seq = itertools.count()
        self._changed = trio.Event()
        self._clock = clock
        self._on_error = on_error

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, conn: Connection, data: bytes, delay: float) -> None:
        heapq.heappush(self._heap, _Delayed(self._clock() + delay, next(self._seq), conn, data))
        self._changed.set()

    def flush_all(self) -> None:
        """Send everything now (shutdown)."""
        while self._heap:
            self._send(heapq.heappop(self._heap))

    def _send(self, item: _Delayed) -> None:
        try:
            item.conn.push(item.data)
        except Exception as exc:
            item.conn.abort()
            if self._on_error is not None:
                self._on_error(exc, item.conn)

    async def run(self) -> None:
        while True:
            if not self._heap:
                await self._changed.wait()
                self._changed = trio.Event()
                continue
            due = self._heap[0].due
            with trio.move_on_at(due):
                await self._changed.wait()
                self._changed = trio.Event()
                continue
            now = self._clock()
            while self._heap and self._heap[0].due <= now:
                self._send(heapq.heappop(self._heap))


class AuthServer:
    """Everything shared by the connections of one server process."""

    def __init__(
        self, config: Config, authenticator: Authenticator, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.authenticator = authenticator
        self.mechanisms = resolve(list(config.server.mechanisms))
        self.policy = PolicyGate(config.policy)
        self.penalty = PenaltyTracker(config.penalty)
        self._wire_fleet(self.penalty)
        #: Every rule from a credential to its verdict (policy and penalty included).
        self.checks = CheckPipeline(
            authenticator, self.policy, self.penalty, on_penalty=self.metrics.penalties.inc
        )
        self.spid = os.getpid()
        #: What every connection's session shares (rebuilt by apply_config).
        self.settings = self._session_settings(config)
        self._cuids = itertools.count(1)
        self._cookie_pool = b""
        self._cookie_at = 0
        self.delay_queue = FailureDelayQueue(on_error=self._delayed_reply_failed)
        self.connections: set[Connection] = set()
        self._checks_in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        #: Where work that outlives a connection runs (set by run_background).
        self._background: trio.Nursery | None = None
        self.on_finished: list[Callable[[RequestInfo, Verdict, float], None]] = [
            self.metrics.finished
        ]
        #: Metrics and the authentication event of each request, after the replies of
        #: the scheduler batch went out (while run_background runs; inline otherwise).
        self.after_batch = AfterBatch(on_error=self._bookkeeping_failed)
        self.metrics.prime(m.name for m in self.mechanisms)
        self.metrics.watch(self.metrics.delayed_failures, lambda: len(self.delay_queue))
        self.metrics.watch(self.metrics.connections_active, lambda: len(self.connections))
        self.metrics.watch(self.metrics.hash_queue, lambda: authenticator.hasher.queued)
        #: ``[rehash]``: the queue and its task (made when first enabled, kept after).
        self.rehasher: Rehasher | None = None
        self._rehash_settings: RehashSettings | None = None
        self._configure_rehash(config)
        self._configure_auth_policy(config)
        self._configure_app_passwords(config)
        self._configure_oauth(config)

    def _configure_oauth(self, config: Config) -> None:
        """``[oauth]`` on, off or changed: a new validator (keys fetched anew, its own
        connection pool); the old one stops and closes its pool."""
        settings = config.oauth
        current = self.checks.oauth
        if current is not None and current.settings == settings:
            return
        validator = None
        if settings.enabled:
            from authbridge.checks.oauth import TokenValidator  # only with [oauth]

            validator = TokenValidator(settings)
        self.checks.oauth = validator
        if self._background is not None:
            if current is not None:
                self._background.start_soon(current.aclose)
            if validator is not None:
                self._background.start_soon(validator.run)

    def _configure_auth_policy(self, config: Config) -> None:
        """``[auth_policy]`` on, off or changed: a new client (and connection pool); the
        old one sends the reports it has queued, then closes."""
        settings = config.auth_policy
        current = self.checks.authpolicy
        if current is not None and current.settings == settings:
            return
        client = AuthPolicy(settings, self.metrics) if settings.enabled else None
        self.checks.authpolicy = client
        if current is not None:
            current.close()
        if client is not None and self._background is not None:
            self._background.start_soon(client.run)

    def _configure_app_passwords(self, config: Config) -> None:
        """App passwords on while any store has them (the pipeline's check holds the
        settings of ``[app_passwords]``), off (``None``) otherwise."""
        if not config.has_app_passwords:
            self.checks.app_passwords = None
            return
        self.checks.app_passwords = AppPasswordCheck(
            config.app_passwords, self.metrics.app_password_login
        )

    def _configure_rehash(self, config: Config) -> None:
        """Turn rehash on, off or to new settings (the queue and its task stay)."""
        settings = config.rehash
        if not settings.enabled:
            self.checks.rehash = None
            return
        if settings != self._rehash_settings or self.rehasher is None:
            policy = RehashPolicy(settings, (m.name for m in self.mechanisms))
            if self.rehasher is None:
                self.rehasher = Rehasher(policy, settings.queue_size, self.metrics.rehashed)
                if self._background is not None:
                    self._background.start_soon(self.rehasher.run)
            else:
                self.rehasher.policy = policy
            self._rehash_settings = settings
        self.checks.rehash = self.rehasher

    def _wire_fleet(self, penalty: PenaltyTracker) -> None:
        """Point the spraying defence and the shared state at the metrics."""
        fleet = penalty.fleet
        if fleet is None:
            return
        fleet.on_spray = self.metrics.sprayed
        fleet.on_shared = self.metrics.shared_read
        if fleet.shared is not None:
            fleet.shared.on_error = self.metrics.shared_error
            fleet.shared.on_state = self.metrics.shared_up
            self.metrics.shared_up(True)

    def _session_settings(self, config: Config) -> SessionSettings:
        return SessionSettings(
            mechanisms=self.mechanisms,
            spid=self.spid,
            request_timeout=config.server.request_timeout,
            max_requests=config.server.max_requests_per_connection,
            usernames=config.usernames,
            tempfail_disconnects=config.policy.tempfail_disconnects,
            protocol_24=config.policy.protocol_24,
        )

    def apply_config(self, config: Config) -> None:
        """Swap in a reloaded config (policy, delays, timeouts) for new requests."""
        self.config = config
        self.settings = self._session_settings(config)
        self.policy = PolicyGate(config.policy)
        if config.penalty != self.penalty.settings:
            old = self.penalty.fleet
            self.penalty = PenaltyTracker(config.penalty)
            self._wire_fleet(self.penalty)
            if old is not None and old.shared is not None:
                old.shared.close()
            shared = self.penalty.fleet.shared if self.penalty.fleet is not None else None
            if shared is not None and self._background is not None:
                self._background.start_soon(shared.run)
        self.checks.policy, self.checks.penalty = self.policy, self.penalty
        self._configure_rehash(config)
        self._configure_auth_policy(config)
        self._configure_app_passwords(config)
        self._configure_oauth(config)

    # ------------------------------------------------------------------ contained errors

    def _internal_error(self, exc: BaseException, where: str, **context: Any) -> None:
        """Count and log one exception a client's work hit (type and place, no data).

        ``context`` holds identifiers only (``cuid``, ``request``), never client text.
        """
        contained.report(
            where, exc, _CONSEQUENCE[where], self.metrics.internal_error, logger=log, **context
        )

    def _delayed_reply_failed(self, exc: BaseException, conn: Connection) -> None:
        self._internal_error(exc, "connection", cuid=conn.cuid)

    def _bookkeeping_failed(self, exc: BaseException) -> None:
        self._internal_error(exc, "bookkeeping")

    # ------------------------------------------------------------------ lifecycle

    async def run_background(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Server-wide tasks: the failure delay queue, the request expiry sweep and the
        rehash queue."""
        self.after_batch.install()
        try:
            async with trio.open_nursery() as nursery:
                self._background = nursery
                nursery.start_soon(self.delay_queue.run)
                nursery.start_soon(self._sweep)
                if self.rehasher is not None:
                    nursery.start_soon(self.rehasher.run)
                fleet = self.penalty.fleet
                if fleet is not None and fleet.shared is not None:
                    nursery.start_soon(fleet.shared.run)
                if self.checks.authpolicy is not None:
                    nursery.start_soon(self.checks.authpolicy.run)
                if self.checks.oauth is not None:
                    nursery.start_soon(self.checks.oauth.run)
                # Last-used times of app passwords (a no-op round without any).
                nursery.start_soon(flush_last_used, lambda: self.authenticator.stores)
                task_status.started()
        finally:
            self._background = None
            self.after_batch.uninstall()
            # The last-used times noted since the last round, written before the exit.
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_FLUSH):
                await flush_once(self.authenticator.stores)

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(5)
            now = trio.current_time()
            for conn in list(self.connections):
                try:
                    expired = conn.session.expire(now)
                except Exception as exc:
                    # This task serves every connection: one broken session ends
                    # its own connection, not the sweep.
                    conn.abort()
                    self._internal_error(exc, "connection", cuid=conn.cuid)
                    continue
                if expired:
                    log.info(
                        "requests abandoned by the client expired",
                        cuid=conn.cuid,
                        requests=len(expired),
                    )
                    await self._report_aborted(conn.cuid, expired, "expired")

    def _report_aborted_now(self, cuid: int, infos: list[RequestInfo], why: str) -> None:
        for info in infos:
            try:
                self.metrics.aborted(info)
                events.authentication_aborted(cuid, info, why)
            except Exception as exc:
                self._internal_error(exc, "bookkeeping", cuid=cuid, request=info.id)

    async def _report_aborted(self, cuid: int, infos: list[RequestInfo], why: str) -> None:
        """Metrics and one event per aborted request, a slice per scheduler turn.

        Shielded: a shutdown still writes every event, only without holding the loop.
        """
        with trio.CancelScope(shield=True):
            for start in range(0, len(infos), ABORTED_EVENTS_PER_STEP):
                if start:
                    await trio.lowlevel.checkpoint()
                chunk = infos[start : start + ABORTED_EVENTS_PER_STEP]
                self._report_aborted_now(cuid, chunk, why)

    async def drain(self, timeout: float) -> None:
        """Wait for running checks to finish (shutdown), then release delayed FAILs."""
        with trio.move_on_after(timeout):
            await self._idle.wait()
        self.delay_queue.flush_all()
        for conn in list(self.connections):
            conn.close_after_flush()

    # ------------------------------------------------------------------ connections

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one client on a trio socket stream (tests, embedding); see serve_socket."""
        await self.serve_socket(stream.socket)

    async def serve_socket(self, sock: _Socket) -> None:
        """Serve one client on a non-blocking socket until it or we hang up, then close
        the socket; never raises (but Cancelled).

        Connections run in a nursery shared with the listener: an exception escaping
        here would end the whole server. Whatever one connection's work raises ends
        that connection (the client sees the socket close) and is reported once.
        """
        cuid = 0
        try:
            if len(self.connections) >= self.config.server.max_connections:
                log.warning(
                    "connection limit reached; refusing a new connection",
                    limit=self.config.server.max_connections,
                )
                return
            cuid = next(self._cuids)
            await self._serve(sock, cuid)
        except* Exception as group:
            self._internal_error(group, "connection", cuid=cuid)
        finally:
            sock.close()

    def _cookie(self) -> str:
        """A fresh connection cookie: 16 random bytes from a pool refilled 256 at a time."""
        start = self._cookie_at
        if start >= len(self._cookie_pool):
            self._cookie_pool = os.urandom(COOKIE_BYTES * COOKIES_PER_DRAW)
            start = 0
        self._cookie_at = start + COOKIE_BYTES
        return self._cookie_pool[start : start + COOKIE_BYTES].hex()

    async def _serve(self, sock: _Socket, cuid: int) -> None:
        conn = Connection(sock, Session(self.settings, cuid, self._cookie()), cuid)
        conn.tracing = self.config.log.level == "debug"
        self.connections.add(conn)
        self.metrics.connections.inc()
        why = "client_disconnected"
        try:
            conn.push(conn.session.handshake())
            await self._read_loop(conn)
            if conn.pending:
                # A task to run (a check that must wait, a writer for a slow reader):
                # from now on the connection has a nursery, cancelled when it ends.
                async with trio.open_nursery() as nursery:
                    conn.nursery = nursery
                    for async_fn, args in conn.pending:
                        nursery.start_soon(async_fn, *args)
                    conn.pending.clear()
                    if not (conn.gone or conn.closing or conn.ended):
                        await self._read_loop(conn)
                    if conn.closing and conn.writing and not conn.gone:
                        # What was queued before the close decision goes out first;
                        # a bounded time for it.
                        conn.drained = trio.Event()
                        with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
                            await conn.drained.wait()
                    nursery.cancel_scope.cancel()
        except* Exception:
            why = "internal_error"  # the requests it had pending were not the client's fault
            raise
        finally:
            self.connections.discard(conn)
            conn.gone = True
            self._after_connection(conn, why)

    def _after_connection(self, conn: Connection, why: str) -> None:
        """Account for the requests a closed connection left pending (``why`` it closed)."""
        cuid = conn.cuid
        try:
            pending = conn.session.abandon_all()
        except Exception as exc:
            self._internal_error(exc, "bookkeeping", cuid=cuid)
            return
        if len(pending) <= ABORTED_EVENTS_PER_STEP or self._background is None:
            self._report_aborted_now(cuid, pending, why)
        else:
            # An attacker that hangs up with thousands of requests pending must
            # not stall everyone else while their events are written.
            self._background.start_soon(self._report_aborted, cuid, pending, why)
        try:
            if conn.tracing:
                events.trace_closed(cuid)
        except Exception as exc:
            self._internal_error(exc, "bookkeeping", cuid=cuid)
        if pending and why == "client_disconnected":
            log.info("client disconnected with requests pending", cuid=cuid, pending=len(pending))

    async def _read_loop(self, conn: Connection) -> None:
        """Read and answer until the connection ends (``conn.ended``), is closing or
        gone, or has tasks to start (``conn.pending``: the caller opens a nursery)."""
        idle_timeout = self.config.server.idle_timeout
        deadline = trio.current_time() + idle_timeout
        deadline_slack = idle_timeout / 100
        # The connection itself starts the tasks of its checks (Spawner).
        tasks = cast(trio.Nursery, conn)
        try:
            while not (conn.gone or conn.closing or conn.pending):
                # One cancel scope for many reads: progress moves its deadline instead
                # of paying for a new scope per read; a new one only after it expired
                # or conn.wake() cancelled it.
                with trio.CancelScope(deadline=deadline) as scope:
                    conn.scope = scope
                    while not (conn.gone or conn.closing or conn.pending):
                        try:
                            data = await conn.receive()
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            conn.ended = True
                            return
                        if not data:
                            conn.ended = True
                            return
                        if conn.tracing:
                            events.trace(conn.cuid, "in", data)
                        lines_before = conn.session.lines_received
                        conn.holding = True
                        try:
                            now = trio.current_time()
                            actions = conn.session.receive(data, now)
                            self._dispatch(conn, actions, tasks, now)
                        finally:
                            conn.holding = False
                        conn.flush()
                        if conn.session.lines_received != lines_before:
                            # Only complete lines count as activity: trickled bytes do
                            # not. Moving a deadline re-sorts trio's deadline heap, so it
                            # is moved a hundredth of the timeout further than needed,
                            # and only when needed: never less idle time than configured.
                            renewed = trio.current_time() + idle_timeout
                            if renewed > deadline:
                                deadline = scope.deadline = renewed + deadline_slack
                conn.scope = None
                if conn.woken:
                    conn.woken = False  # the loop's condition says what to do
                elif scope.cancelled_caught:
                    if conn.session.in_flight == 0:
                        log.info("closing idle connection", cuid=conn.cuid)
                        conn.ended = True
                        return
                    deadline = trio.current_time() + idle_timeout
        finally:
            conn.scope = None

    def _dispatch(
        self,
        conn: Connection,
        actions: list[Any],
        nursery: trio.Nursery,
        now: float,
        closes: list[Close] | None = None,
    ) -> None:
        """Carry out a session's actions; ``now`` is when they were decided.

        A close comes last, after every other action of the read that caused it
        (``closes`` collects them, also from checks completed inline on the way): a
        check answered inline can release the close of a violation that a later line
        made, while replies to lines before that one are still in ``actions``.
        """
        outermost = closes is None
        pending_closes: list[Close] = [] if closes is None else closes
        inline_budget = INLINE_CHECKS_PER_READ
        for action in actions:
            if isinstance(action, Send):
                conn.push(action.data)
            elif isinstance(action, SendDelayed):
                # Through the queue even with no delay: like Dovecot's failure queue,
                # a FAIL goes out after the rest of the read is handled, so a violation
                # later in the same read closes the connection without it. (A bare
                # server, without run_background, has no queue task: it sends at once.)
                delay = self.policy.failure_delay(action.info)
                if delay > 0 or self._background is not None:
                    self.delay_queue.add(conn, action.data, delay)
                else:
                    conn.push(action.data)
            elif isinstance(action, Check):
                # The pipeline answers at once when nothing must wait; otherwise the
                # rest of the check (never its first half again) runs in a task.
                pending = None
                if inline_budget > 0:
                    result = self._run_check(conn, action, now)
                    if not isinstance(result, Pending):
                        inline_budget -= 1
                        self._complete(conn, action, result, nursery, now, pending_closes)
                        continue
                    pending = result
                self._checks_in_flight += 1
                self._idle = trio.Event() if self._checks_in_flight == 1 else self._idle
                if conn.checkers < CHECKS_PER_CONNECTION:
                    conn.checkers += 1
                    nursery.start_soon(self._checker, conn, action, nursery, now, pending)
                else:
                    conn.queued.append((action, now, pending))
            elif isinstance(action, Finished):
                self._finished(conn, action.info, action.verdict, 0.0)
            elif isinstance(action, Close):
                pending_closes.append(action)
        if outermost:
            for close in pending_closes:
                self._close(conn, close)

    def _close(self, conn: Connection, action: Close) -> None:
        if action.violation:
            self.metrics.protocol_errors.inc()
            log.warning("protocol violation, closing", cuid=conn.cuid, reason=action.reason)
        else:
            log.info("closing connection", cuid=conn.cuid, reason=action.reason)
        conn.close_after_flush()

    async def _checker(
        self,
        conn: Connection,
        action: Check,
        nursery: trio.Nursery,
        started: float,
        pending: Pending | None = None,
    ) -> None:
        """Run ``action``, then the connection's queued checks, one after the other.

        A connection gets a few of these at once, the rest of its checks wait in its
        queue (in order): one client pipelining thousands of requests cannot crowd out
        the others.
        """
        item: tuple[Check, float, Pending | None] | None = (action, started, pending)
        try:
            while item is not None:
                action, started, pending = item
                try:
                    verdict: Verdict | CredentialsFound | Pending
                    if pending is None:
                        verdict = self.checks.run(action.info, action.credential, started)
                    else:
                        verdict = pending
                    if isinstance(verdict, Pending):
                        verdict = await verdict.wait()
                except Exception as exc:
                    verdict = self._check_failed(exc, conn, action)
                item = None
                self._check_done(1)
                self._complete(conn, action, verdict, nursery, started)
                if conn.queued:
                    item = conn.queued.popleft()
                    # Let everyone else run before the next queued check of this client.
                    await trio.lowlevel.checkpoint()
        finally:
            conn.checkers -= 1
            if item is not None:
                self._check_done(1)  # cancelled: the current check never finished
            if conn.checkers == 0 and conn.queued:
                self._check_done(len(conn.queued))
                conn.queued.clear()

    def _check_done(self, count: int) -> None:
        self._checks_in_flight -= count
        if self._checks_in_flight == 0:
            self._idle.set()

    def _complete(
        self,
        conn: Connection,
        action: Check,
        verdict: Verdict | CredentialsFound,
        nursery: trio.Nursery,
        started: float,
        closes: list[Close] | None = None,
    ) -> None:
        now = trio.current_time()
        actions = conn.session.complete(action.ticket, action.info.id, verdict, now)
        for item in actions:
            if isinstance(item, Finished):
                self._finished(conn, item.info, item.verdict, now - started)
        rest = [a for a in actions if not isinstance(a, Finished)]
        self._dispatch(conn, rest, nursery, now, closes)

    def _check_failed(self, exc: BaseException, conn: Connection, action: Check) -> Verdict:
        """A check that raised is an internal failure of that request only: TEMPFAIL."""
        self._internal_error(exc, "check", cuid=conn.cuid, request=action.info.id)
        return Verdict(Outcome.TEMPFAIL, None, Reason.STORE_ERROR)

    def _run_check(
        self, conn: Connection, action: Check, now: float
    ) -> Verdict | CredentialsFound | Pending:
        """:meth:`CheckPipeline.run`, with an exception answered as the check task would."""
        try:
            return self.checks.run(action.info, action.credential, now)
        except Exception as exc:
            return self._check_failed(exc, conn, action)

    def _finished(
        self, conn: Connection, info: RequestInfo, verdict: Verdict, duration: float
    ) -> None:
        # CRAM-MD5 digests and SCRAM proofs are compared by the mechanism, after the
        # lookup: their penalty is recorded now.
        self.checks.finished(info, verdict)
        self.after_batch.defer(self._account, conn.cuid, info, verdict, duration)

    def _account(self, cuid: int, info: RequestInfo, verdict: Verdict, duration: float) -> None:
        """Metrics and the authentication event of one finished request.

        Each part on its own: a failing metric must not lose the event, nor the reverse.
        """
        for callback in self.on_finished:
            try:
                callback(info, verdict, duration)
            except Exception as exc:
                self._internal_error(exc, "bookkeeping", cuid=cuid, request=info.id)
        try:
            events.authentication_finished(cuid, info, verdict, duration)
        except Exception as exc:
            self._internal_error(exc, "bookkeeping", cuid=cuid, request=info.id)
