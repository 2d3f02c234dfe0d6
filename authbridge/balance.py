"""Spread connections over the workers: the least busy one takes the next.

All workers wait in ``accept`` on the same socket and the kernel wakes them all; the one
already running usually wins, so a burst of connections (eight Postfix smtpd processes
connecting at start, say) can all land on one worker while the other idles. Each
worker publishes its open connections in a small shared file (one 32-bit slot per
worker), and before accepting, a worker that holds more than the least busy live one
gives it a moment to take the connection first. The wait is bounded: a busy or stuck
peer only delays an accept by :data:`MAX_WAIT`, never stops it, and a board that cannot
be read (an unexpected exception) means accepting at once, logged and counted.
"""

from __future__ import annotations

import mmap
import os
import socket
from collections.abc import Callable
from typing import Any

import trio

from authbridge.contained import Streak
from authbridge.listeners import CAPACITY_ERRNOS, CAPACITY_PAUSE, GONE_ERRNOS, Handler, Listener
from authbridge.logs import get_logger

log = get_logger("authbridge.balance")

#: A slot with no live worker behind it (never the least busy).
ABSENT = 2**31 - 1
#: Connections a worker may hold above the least busy one and still accept at once.
SLACK = 1
POLL = 0.001
MAX_WAIT = 0.010
SLOT = 4


def create_board(path: str, workers: int) -> None:
    """The supervisor's part: a file of ``workers`` slots, all :data:`ABSENT`."""
    with open(path, "wb") as board:
        board.write(ABSENT.to_bytes(SLOT, "little") * workers)


def mark_absent(path: str, slot: int) -> None:
    """The supervisor's part when a worker is gone: others stop waiting for it."""
    with open(path, "r+b") as board:
        board.seek(slot * SLOT)
        board.write(ABSENT.to_bytes(SLOT, "little"))


class Balance:
    """A worker's view of the board: its own slot and the others'."""

    def __init__(self, path: str, slot: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self._slots = memoryview(self._map).cast("i")
        self.slot = slot
        #: Connections accepted here and not yet closed (counted from the accept, so a
        #: burst sees its own earlier accepts before their handlers have even started).
        self.open = 0
        #: ``count(where)`` for contained exceptions; the daemon sets it to its metrics'.
        self.on_internal_error: Callable[[str], None] | None = None
        self._streak: Streak | None = None
        self.publish()

    def publish(self) -> int:
        self._slots[self.slot] = self.open
        return self.open

    def least_busy_other(self) -> int:
        slots = self._slots
        return min(
            (slots[i] for i in range(len(slots)) if i != self.slot),
            default=ABSENT,
        )

    async def my_turn(self) -> None:
        """Return when this worker should accept the next connection."""
        waited = 0.0
        while self._should_wait() and waited < MAX_WAIT:
            await trio.sleep(POLL)
            waited += POLL

    def _should_wait(self) -> bool:
        """True while a less busy worker should take the next connection; False if unsure."""
        try:
            wait = self.publish() > self.least_busy_other() + SLACK
        except Exception as exc:
            if self._streak is None:
                self._streak = Streak(
                    "worker",
                    "connection balancing failed; accepting at once",
                    self.on_internal_error,
                )
            self._streak.failed(exc, slot=self.slot)
            return False
        if self._streak is not None:
            self._streak.ok()
            self._streak = None
        return wait

    async def serve(self, listener: Listener, handler: Handler, nursery: trio.Nursery) -> None:
        """Accept on ``listener``, taking turns with the other workers."""

        async def counted(sock: socket.socket, address: Any) -> None:
            try:
                await handler(sock, address)
            finally:
                self.open -= 1
                self.publish()

        sock = listener.sock
        sock.setblocking(False)
        fd = sock.fileno()
        while True:
            await self.my_turn()
            await trio.lowlevel.wait_readable(fd)
            try:
                client, address = sock.accept()
            except BlockingIOError:
                continue  # another worker took it
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    continue
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                log.error("accept failed; retrying", error=os.strerror(exc.errno))
                await trio.sleep(CAPACITY_PAUSE)
                continue
            client.setblocking(False)
            self.open += 1
            self.publish()
            nursery.start_soon(counted, client, address)
