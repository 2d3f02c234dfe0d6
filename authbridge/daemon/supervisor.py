"""Several serving processes behind one supervisor that accepts and hands connections out.

One Python event loop uses one core. With ``workers = N`` the supervisor binds (or adopts
from systemd) the listening sockets, starts N ordinary ``authbridge serve`` processes,
and is the only process waiting on those sockets: it accepts each burst of connections
and passes every one to the least busy worker over that worker's own socketpair (see
:mod:`authbridge.daemon.balance`), so a new connection wakes one worker, not all. Once handed
over, a connection is the worker's alone; the supervisor stays out of its traffic.

The supervisor speaks sd_notify to its workers as systemd speaks it to a service: each
worker gets ``NOTIFY_SOCKET`` pointing at the supervisor and ``WATCHDOG_USEC``, so the
worker code is the single-process code, and the kernel's ``SCM_CREDENTIALS`` tell which
worker sent what. From there the supervisor

- reports READY to systemd once every worker is serving, and fails the start (exit 1) if
  a worker exits before that, so a bad store is still a clean start-up error;
- replaces a worker that exits, or that stops sending its keep-alive (a stuck event loop),
  after a pause that grows while replacements keep failing;
- forwards SIGHUP (reload) and SIGUSR2 (cache flush), and on SIGTERM closes the sockets
  first and then lets every worker drain;
- serves ``/metrics`` for all of them from prometheus-client's multiprocess files.

None of its own loops may end it: an unexpected exception in one (a notification, a
signal to forward, a health check, a worker slot's bookkeeping) is logged by type and
place, counted (``authbridge_internal_errors_total{where="worker"}``), and the loop
goes on; the workers never notice.

Each worker keeps its own auth cache, per-IP penalty and failure-delay queue. An
attacker's connections are spread over the workers, so the penalty counts per worker,
unless ``[penalty] backend = "redis"`` shares it (checks.shared).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from authbridge.config import Config
from authbridge.daemon import systemd
from authbridge.daemon.balance import Board, Dispatcher, Outlet, channel_pair
from authbridge.daemon.listeners import Listener
from authbridge.observability.contained import Streak, report
from authbridge.observability.logs import get_logger

log = get_logger("authbridge.supervisor")

#: Set in a worker's environment: its slot number (0 .. workers-1).
WORKER_ENV = "AUTHBRIDGE_WORKER"
#: Set in a worker's environment: the descriptor of its end of the handoff channel.
HANDOFF_FD_ENV = "AUTHBRIDGE_HANDOFF_FD"
#: Set in a worker's environment: the supervisor's pid (the worker exits if it changes).
WORKER_PARENT_ENV = "AUTHBRIDGE_SUPERVISOR_PID"
#: Set in a worker's environment: the shared file of finished connections (see balance).
BOARD_ENV = "AUTHBRIDGE_BOARD"

FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGUSR2)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: How long workers get to drain on shutdown before they are killed.
STOP_TIMEOUT = 15.0
#: How long a reload may take before the supervisor reports ready anyway.
RELOAD_TIMEOUT = 60.0
#: A worker that ran this long before exiting resets the replacement back-off.
STABLE_AFTER = 10.0
MAX_BACKOFF = 30.0
_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid

#: Variables a worker must not inherit: they describe the supervisor's own situation.
_NOT_INHERITED = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "PROMETHEUS_MULTIPROC_DIR",
)


@dataclass
class Worker:
    slot: int
    process: trio.Process | None = None
    ready: bool = False
    reloading: bool = False
    last_ping: float = 0.0
    #: The supervisor's end of the running worker's handoff channel.
    outlet: Outlet | None = None


class Supervisor:
    def __init__(
        self,
        argv: Sequence[str],
        config: Config,
        listeners: list[Listener],
        python: str = sys.executable,
    ) -> None:
        self.command = [python, "-m", "authbridge", *argv]
        self.config = config
        self.listeners = listeners
        self.notifier = systemd.Notifier()
        self.workers = [Worker(slot) for slot in range(config.server.workers)]
        self.state_dir = tempfile.mkdtemp(
            prefix="authbridge-", dir=os.environ.get("RUNTIME_DIRECTORY") or None
        )
        self.metrics_dir = os.path.join(self.state_dir, "metrics")
        os.mkdir(self.metrics_dir, 0o700)
        self.notify_path = os.path.join(self.state_dir, "notify")
        self.board_path = os.path.join(self.state_dir, "board")
        self.board = Board.create(self.board_path, config.server.workers)
        self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._notify_sock.bind(self.notify_path)
        self._notify_sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.metrics = None
        self.http = None
        #: ``count(where)`` for contained exceptions (a no-op without metrics).
        self.count_internal_error: Callable[[str], None] | None = None
        if config.metrics.listen:
            from authbridge.observability.metrics import MetricsHTTP, SupervisorMetrics

            self.metrics = SupervisorMetrics(self.metrics_dir)
            self.count_internal_error = self.metrics.internal_error
            self.http = MetricsHTTP(self.metrics, config.metrics.listen, self.any_ready)
            self.metrics.watch_workers(
                "starting", lambda: sum(1 for w in self.workers if w.process and not w.ready)
            )
            self.metrics.watch_workers("ready", lambda: sum(1 for w in self.workers if w.ready))
        self.serving = False
        self.stopping = False
        self.failure: str | None = None
        self._stop = trio.Event()
        self._changed = trio.Event()
        self.dispatcher = Dispatcher(
            self.board, self.outlets, lambda: self._changed, self.count_internal_error
        )
        self._accepting = trio.CancelScope()
        self._accept_stopped = trio.Event()

    # ------------------------------------------------------------------ queries

    def any_ready(self) -> bool:
        """Healthy while at least one worker serves (a replacement may be starting)."""
        return self.serving and not self.stopping and any(w.ready for w in self.workers)

    def outlets(self) -> list[Outlet]:
        """Where new connections may go: the workers that serve now."""
        if self.stopping:
            return []
        return [w.outlet for w in self.workers if w.ready and w.outlet is not None]

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None]

    def _by_pid(self, pid: int) -> Worker | None:
        for worker in self.workers:
            if worker.process is not None and worker.process.pid == pid:
                return worker
        return None

    def _worker_env(self, worker: Worker, handoff_fd: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env["NOTIFY_SOCKET"] = self.notify_path
        env["WATCHDOG_USEC"] = str(int(self.config.server.worker_watchdog * 1_000_000))
        env[WORKER_ENV] = str(worker.slot)
        env[WORKER_PARENT_ENV] = str(os.getpid())
        env[HANDOFF_FD_ENV] = str(handoff_fd)
        env[BOARD_ENV] = self.board_path
        if self.metrics is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        return env

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _contained(self, exc: BaseException, event: str, **context: Any) -> None:
        report("worker", exc, event, self.count_internal_error, **context)

    def _streak(self, event: str) -> Streak:
        return Streak("worker", event, self.count_internal_error)

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 if the start failed."""
        if self.http is not None:
            self.http.start()
            log.info("metrics listening", address=self.http.bound)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals)
                nursery.start_soon(self._notifications)
                for worker in self.workers:
                    nursery.start_soon(self._keep, worker)
                nursery.start_soon(self._startup)
                await self._stop.wait()
                await self._shutdown()
                nursery.cancel_scope.cancel()
        finally:
            if self.http is not None:
                self.http.stop()
            self._notify_sock.close()
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.failure is not None:
            return 1
        log.info("stopped")
        return 0

    async def _startup(self) -> None:
        while not all(w.ready for w in self.workers):
            if self.failure is not None or self.stopping:
                return
            await self._changed.wait()
        self.serving = True
        labels = ", ".join(listener.label for listener in self.listeners)
        log.info("all workers serving", workers=len(self.workers), pids=self.worker_pids())
        self.notifier.ready(f"serving on {labels} with {len(self.workers)} workers")
        interval = self.notifier.watchdog_interval()
        async with trio.open_nursery() as nursery:
            if interval:
                nursery.start_soon(self._ping_systemd, interval)
            nursery.start_soon(self._watch_workers)
            nursery.start_soon(self._accept)

    async def _accept(self) -> None:
        """Accept on every listener and hand the connections out, until shutdown."""
        try:
            with self._accepting:
                async with trio.open_nursery() as nursery:
                    for index, listener in enumerate(self.listeners):
                        nursery.start_soon(self.dispatcher.serve, index, listener)
                        log.info("listener bound", listener=listener.label)
        finally:
            self._accept_stopped.set()

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("cannot start", error=reason)  # on stderr: no plain copy beside it
        self._stop.set()

    async def _keep(self, worker: Worker) -> None:
        """Run one worker slot: start it, and replace it whenever it goes away."""
        backoff = 0.5
        while not self.stopping:
            try:
                next_backoff = await self._keep_once(worker, backoff)
            except Exception as exc:
                self._contained(
                    exc, "keeping a worker failed; starting it again", worker=worker.slot
                )
                await self._reap(worker)
                await trio.sleep(backoff)
                next_backoff = min(MAX_BACKOFF, backoff * 2)
            if next_backoff is None:
                return
            backoff = next_backoff

    async def _keep_once(self, worker: Worker, backoff: float) -> float | None:
        """Start the slot's worker and wait for it to go; the next back-off, or None to stop."""
        ours, theirs = channel_pair()
        self.board.reset(worker.slot)
        try:
            process = await trio.lowlevel.open_process(
                self.command,
                env=self._worker_env(worker, theirs.fileno()),
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            if not self.serving:
                self._fail(f"cannot start worker {worker.slot}: {exc}")
                return None
            log.error("cannot start a worker", worker=worker.slot, error=str(exc))
            await trio.sleep(backoff)
            return min(MAX_BACKOFF, backoff * 2)
        except BaseException:
            ours.close()
            raise
        finally:
            # The worker holds its end alone: when it dies, the kernel closes whatever
            # connections were still queued to it, so their clients see the close.
            theirs.close()
        worker.outlet = Outlet(worker.slot, ours)
        worker.process, worker.ready, worker.reloading = process, False, False
        worker.last_ping = trio.current_time()
        started = trio.current_time()
        log.info("worker started", worker=worker.slot, worker_pid=process.pid)
        self._changed_now()
        try:
            status = await process.wait()
        finally:
            worker.process, worker.ready, worker.outlet = None, False, None
            ours.close()
        # The worker is gone whatever happens next: a failure in this bookkeeping must
        # not keep its slot from being filled again.
        try:
            self._forget(process.pid)
        except Exception as exc:
            self._contained(exc, "dropping a worker's live gauges failed", worker=worker.slot)
        self._changed_now()
        if self.stopping:
            return None
        if not self.serving:
            self._fail(f"worker {worker.slot} exited with status {status} before serving")
            return None
        if trio.current_time() - started > STABLE_AFTER:
            backoff = 0.5
        # A SIGTERM sent to the whole group (systemd's default KillMode) reaches the
        # workers too: give our own signal handler the chance to see it first.
        await trio.sleep(backoff)
        if self.stopping:
            return None
        if self.metrics is not None:
            self.metrics.worker_restarts.inc()
        log.error(
            "worker exited; starting a replacement",
            worker=worker.slot,
            worker_pid=process.pid,
            status=status,
        )
        return min(MAX_BACKOFF, backoff * 2)

    async def _reap(self, worker: Worker) -> None:
        """After a failure in :meth:`_keep_once`: no process left unwatched in the slot."""
        process = worker.process
        worker.process, worker.ready = None, False
        if worker.outlet is not None:
            worker.outlet.channel.close()
            worker.outlet = None
        if process is not None and process.returncode is None:
            with contextlib.suppress(OSError):
                process.kill()
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()
        self._changed_now()

    def _forget(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
        if self.metrics is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    async def _notifications(self) -> None:
        sock = trio.socket.from_stdlib_socket(self._notify_sock)
        ancillary = socket.CMSG_SPACE(_CREDENTIALS.size)
        streak = self._streak("reading a worker notification failed; skipped")
        while True:
            try:
                data, ancdata, _flags, _address = await sock.recvmsg(4096, ancillary)
                pid = _sender_pid(ancdata)
                worker = self._by_pid(pid) if pid is not None else None
                if worker is None:
                    continue  # not one of ours: ignore
                for field in data.decode("utf-8", "replace").split("\n"):
                    self._note(worker, field)
            except Exception as exc:
                streak.failed(exc)
                await trio.sleep(0.1)  # a socket that keeps failing must not spin
            else:
                streak.ok()

    def _note(self, worker: Worker, field: str) -> None:
        now = trio.current_time()
        worker.last_ping = now
        if field == "READY=1":
            worker.ready, worker.reloading = True, False
            self._changed_now()
        elif field == "RELOADING=1":
            worker.reloading = True
        elif field == "STOPPING=1":
            worker.ready = False
            self._changed_now()

    async def _watch_workers(self) -> None:
        """Kill a worker whose keep-alives stopped; :meth:`_keep` replaces it."""
        limit = self.config.server.worker_watchdog
        streak = self._streak("checking on the workers failed; checking again")
        while True:
            await trio.sleep(min(1.0, limit / 4))
            try:
                self._check_workers(limit)
            except Exception as exc:
                streak.failed(exc)
            else:
                streak.ok()

    def _check_workers(self, limit: float) -> None:
        now = trio.current_time()
        for worker in self.workers:
            process = worker.process
            if process is None or not worker.ready or self.stopping:
                continue
            if now - worker.last_ping > limit:
                log.error(
                    "worker stopped answering; killing it",
                    worker=worker.slot,
                    worker_pid=process.pid,
                    silent_seconds=round(now - worker.last_ping, 1),
                )
                worker.ready = False
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    async def _ping_systemd(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(*STOP_SIGNALS, *FORWARDED_SIGNALS) as signals:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, (*STOP_SIGNALS, *FORWARDED_SIGNALS))
            async for signum in signals:
                name = signal.Signals(signum).name
                log.info("signal received", signal=name)
                if signum in STOP_SIGNALS:
                    self._stop.set()
                    return
                try:
                    self._forward(signum)
                    if signum == signal.SIGHUP:
                        await self._reloaded()
                except Exception as exc:
                    self._contained(exc, "forwarding a signal failed", signal=name)

    def _forward(self, signum: int) -> None:
        """Send ``signum`` to every worker; one that cannot get it does not stop the rest."""
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                if signum == signal.SIGHUP:
                    worker.reloading = True
                process.send_signal(signum)
            except ProcessLookupError:
                worker.reloading = False  # it just exited; _keep replaces it
            except Exception as exc:
                worker.reloading = False
                self._contained(
                    exc,
                    "forwarding a signal to a worker failed",
                    signal=signal.Signals(signum).name,
                    worker=worker.slot,
                )

    async def _reloaded(self) -> None:
        """Tell systemd the reload is over once every worker has answered it."""
        self.notifier.reloading("reloading")
        with trio.move_on_after(RELOAD_TIMEOUT):
            while any(w.reloading and w.process is not None for w in self.workers):
                await self._changed.wait()
        self.notifier.ready("reloaded")

    async def _shutdown(self) -> None:
        self.stopping = True
        self.notifier.stopping()
        log.info("shutting down", workers=self.worker_pids())
        # No new connections from here on; the workers finish what they hold.
        self._accepting.cancel()
        if self.serving:  # the accept loops leave the sockets before they are closed
            with trio.move_on_after(1):
                await self._accept_stopped.wait()
        for listener in self.listeners:
            try:
                listener.remove()
                listener.sock.close()
            except Exception as exc:  # the workers must still be told to stop
                self._contained(exc, "closing a listener failed", listener=listener.label)
        self._forward(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT):
            while any(w.process is not None for w in self.workers):
                await self._changed.wait()
        for worker in self.workers:
            if worker.process is not None:
                log.error("worker did not stop in time; killing it", worker_pid=worker.process.pid)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()


def worker_handoff(slot: int) -> Handoff | None:
    """In a worker: its end of the supervisor's handoff channel and its board slot."""
    fd = os.environ.pop(HANDOFF_FD_ENV, None)
    path = os.environ.get(BOARD_ENV)
    if fd is None or path is None:
        return None
    os.set_inheritable(int(fd), False)
    return Handoff(socket.socket(fileno=int(fd)), Board(path), slot)


@dataclass
class Handoff:
    """A worker's side of the handoff: the channel it receives connections on, and the
    board slot where it counts the ones it has finished."""

    channel: socket.socket
    board: Board
    slot: int

    def finished(self) -> None:
        self.board.slots[self.slot] += 1


async def watch_supervisor(interval: float = 1.0) -> None:
    """In a worker: drain and exit (as on SIGTERM) once the supervisor is gone.

    Polling the parent pid is used instead of ``PR_SET_PDEATHSIG``, which fires when the
    *thread* that started us ends, and trio starts processes from short-lived threads.
    """
    parent = int(os.environ.get(WORKER_PARENT_ENV, "0"))
    while True:
        if parent and os.getppid() != parent:
            log.error("the supervisor is gone; stopping")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        await trio.sleep(interval)


def _sender_pid(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        credentials = level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        if credentials and len(data) >= _CREDENTIALS.size:
            pid, _uid, _gid = _CREDENTIALS.unpack_from(data)
            return int(pid)
    return None
