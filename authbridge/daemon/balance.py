"""Spread connections over the workers: the supervisor accepts, the least busy worker serves.

With ``workers = N`` only the supervisor waits on the listening sockets, so a new
connection wakes one process (the supervisor) and then the one worker it is handed to,
never all of them. The supervisor accepts until the socket would block, decides the TCP
allow-list there (it has the peer address), and passes the accepted descriptors to a
worker over that worker's own ``SOCK_SEQPACKET`` socketpair with ``SCM_RIGHTS``: one
message per worker per burst, two bytes per descriptor: the index of the listener it
came from and its address family (so the worker need not ask the kernel).

"Least busy" is connections handed to a worker minus connections it has finished. The
supervisor counts what it hands out; each worker counts what it finishes in its slot of
a small shared file (:class:`Board`, one 64-bit counter per slot), a plain memory write
with no system call and no message back. Ties go round-robin.

Nothing is lost silently: a descriptor the kernel could not queue to one worker (its
queue full, or the worker gone) is offered to the next; one no live worker takes is
closed, so the client sees the connection end at once. Descriptors queued to a worker
that dies are closed by the kernel with the worker's end of the pair (the supervisor
keeps no copy of it), and the next connection goes to a live worker.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio

from authbridge.daemon.listeners import CAPACITY_PAUSE, Listener
from authbridge.observability.contained import Counter, Streak, report
from authbridge.observability.logs import get_logger

log = get_logger("authbridge.balance")

SLOT = 8
#: Connections accepted per wake-up before they are handed out (a burst goes in rounds).
BATCH = 128
#: At most this many descriptors per message (the kernel's SCM_MAX_FD is 253).
MAX_FDS = 250
#: How long a burst waits for a worker whose queue is full before it is offered elsewhere
#: again; after :data:`GIVE_UP` in all, the connections left are closed.
FULL_WAIT = 0.05
GIVE_UP = 5.0


class Board:
    """Connections each worker has finished, one monotonic 64-bit counter per slot."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self.slots = memoryview(self._map).cast("q")

    @staticmethod
    def create(path: str, workers: int) -> Board:
        with open(path, "wb") as board:
            board.write(bytes(SLOT * workers))
        return Board(path)

    def done(self, slot: int) -> int:
        return int(self.slots[slot])

    def reset(self, slot: int) -> None:
        """Before a worker starts in ``slot``: it counts from zero."""
        self.slots[slot] = 0


@dataclass
class Outlet:
    """The supervisor's end of one worker's handoff channel."""

    slot: int
    channel: socket.socket
    #: Connections handed to this worker (compared with the board's ``done``).
    handed: int = 0


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A handoff channel: the supervisor's end (non-blocking) and the worker's end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


class Dispatcher:
    """The supervisor's accept loops and the choice of worker for each connection."""

    def __init__(
        self,
        board: Board,
        outlets: Callable[[], list[Outlet]],
        changed: Callable[[], trio.Event],
        count: Counter | None = None,
    ) -> None:
        self.board = board
        #: The outlets of the workers that serve now (ready, not stopping).
        self.outlets = outlets
        self.count = count
        #: The event set when the workers change next (an outlet may have appeared).
        self.changed = changed
        self._turn = 0
        #: One burst at a time waits for a full queue (trio lets one task wait per fd).
        self._waiting = trio.Lock()

    def busy(self, outlet: Outlet) -> int:
        return outlet.handed - self.board.done(outlet.slot)

    def pick(self, candidates: list[Outlet]) -> Outlet:
        """The least busy of ``candidates`` (not empty); ties go round-robin."""
        count = len(candidates)
        start = self._turn % count
        best = candidates[start]
        best_busy = self.busy(best)
        for step in range(1, count):
            outlet = candidates[(start + step) % count]
            busy = self.busy(outlet)
            if busy < best_busy:
                best, best_busy = outlet, busy
        self._turn = start + 1
        return best

    async def serve(self, index: int, listener: Listener) -> None:
        """Accept on ``listener`` while any worker serves, and hand the connections out."""
        sock = listener.sock
        sock.setblocking(False)
        fd = sock.fileno()
        streak = Streak("worker", "handing out a connection failed; it was closed", self.count)
        while True:
            while not self.outlets():
                await self.changed().wait()  # no worker to take a connection: let it queue
            await trio.lowlevel.wait_readable(fd)
            accepted: list[socket.socket] = []
            try:
                drained = await self._accept(listener, accepted)
                if accepted:
                    await self.hand_out(index, accepted)
            except Exception as exc:
                for client in accepted:
                    client.close()
                streak.failed(exc, listener=listener.label)
                await trio.sleep(CAPACITY_PAUSE)  # a loop that keeps failing must not spin
                continue
            streak.ok()
            if not drained:
                await trio.lowlevel.checkpoint()

    async def _accept(self, listener: Listener, accepted: list[socket.socket]) -> bool:
        """Accept up to :data:`BATCH` clients into ``accepted``; True if none is left."""
        while len(accepted) < BATCH:
            taken = await listener.accept_one()
            if taken is None:
                return True
            client, address = taken
            if listener.allowed and not _peer_allowed(listener, address, self.count):
                client.close()
                continue
            accepted.append(client)
        return False

    async def hand_out(self, index: int, clients: list[socket.socket]) -> None:
        """Pass ``clients`` (accepted on listener ``index``) to the least busy workers.

        All of them come from one listener, so they share its address family.

        The supervisor's copies are closed in every case: each client ends up with a
        worker, or closed.
        """
        try:
            await self._hand_out(index, clients)
        finally:
            for client in clients:
                client.close()

    async def _hand_out(self, index: int, clients: list[socket.socket]) -> None:
        left = clients
        tag = bytes((index, clients[0].family if clients else 0))
        full: set[int] = set()
        gone: set[int] = set()
        deadline = trio.current_time() + GIVE_UP
        stuck = False  # the last round placed nothing after a wait for room
        while left:
            live = [o for o in self.outlets() if o.slot not in gone]
            candidates = [o for o in live if o.slot not in full]
            if not candidates:
                if not live or trio.current_time() >= deadline:
                    log.error(
                        "no worker could take a connection; closed",
                        connections=len(left),
                        workers=len(live),
                    )
                    return
                # Every live worker's queue is full: wait (briefly) until one has room;
                # if room was promised and refused again, pause instead of spinning.
                if stuck:
                    await trio.sleep(FULL_WAIT)
                else:
                    async with self._waiting:
                        with trio.move_on_after(FULL_WAIT):
                            await _any_writable([o.channel for o in live])
                stuck = True
                full.clear()
                continue
            groups: dict[int, tuple[Outlet, list[socket.socket]]] = {}
            for client in left:
                outlet = self.pick(candidates)
                outlet.handed += 1
                groups.setdefault(outlet.slot, (outlet, []))[1].append(client)
            left = []
            for outlet, group in groups.values():
                sent, refused = _send(outlet.channel, tag, group)
                if sent:
                    stuck = False
                if sent < len(group):
                    outlet.handed -= len(group) - sent
                    left += group[sent:]
                    (full if refused == FULL else gone).add(outlet.slot)


FULL, GONE = "full", "gone"


def _send(channel: socket.socket, tag: bytes, group: list[socket.socket]) -> tuple[int, str]:
    """Send ``group`` down ``channel``: how many went, and why the rest did not."""
    sent = 0
    while sent < len(group):
        chunk = group[sent : sent + MAX_FDS]
        try:
            socket.send_fds(channel, [tag * len(chunk)], [c.fileno() for c in chunk])
        except BlockingIOError:
            return sent, FULL
        except OSError as exc:
            # ETOOMANYREFS: too many descriptors in flight for now, like a full queue.
            return sent, FULL if exc.errno == errno.ETOOMANYREFS else GONE
        sent += len(chunk)
    return sent, ""


async def _any_writable(channels: list[socket.socket]) -> None:
    """Return once one of ``channels`` can take a message."""
    async with trio.open_nursery() as nursery:

        async def wait(channel: socket.socket) -> None:
            await trio.lowlevel.wait_writable(channel)
            nursery.cancel_scope.cancel()

        for channel in channels:
            nursery.start_soon(wait, channel)


def _peer_allowed(listener: Listener, address: object, count: Counter | None) -> bool:
    """The TCP allow-list, decided at accept; anything unexpected refuses the client."""
    try:
        allowed = listener.peer_allowed(address)
    except Exception as exc:
        report("worker", exc, "checking a peer's address failed; connection closed", count)
        return False
    if not allowed:
        log.warning(
            "refused connection from a client outside tcp_allowed_networks",
            listener=listener.label,
        )
    return allowed
