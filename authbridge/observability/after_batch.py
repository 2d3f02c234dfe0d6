"""Per-request bookkeeping done after the replies of a scheduler batch have gone out.

A reply is ready as soon as its verdict is known; the authentication event and the
metric updates that go with it cost about as much CPU again. Done inline, every client
whose request became ready in the same batch waited for the bookkeeping of all those
served before it, which is what a short machine stall turns into a tail of slow
logins. Deferred here, it runs once the batch is over: trio calls the instrument after
the batch and before it waits for I/O again. Nothing a client does in response to a
reply can be seen before that (an in-process peer runs only after that wait), so the
event and the counters are still complete by the time anyone can look.

The end of a batch is also when the log lines the batch produced are written, all in
one go (:func:`authbridge.observability.logs.end_batch`), and when other per-batch work registered
with :func:`at_batch_end` runs (a worker's counters reaching the shared files).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

import trio

from authbridge.observability import contained, logs

#: Beyond this many pending items the queue runs at once: bounded memory whatever a
#: batch holds (a batch normally completes a few dozen requests at most).
MAX_PENDING = 4096

#: Bound methods called at the end of every scheduler batch (weakly held: an object
#: that is gone drops out). See :func:`at_batch_end`.
_batch_end: list[weakref.WeakMethod[Callable[[], None]]] = []


def at_batch_end(method: Callable[[], None]) -> None:
    """Call the bound ``method`` at the end of every batch (where an AfterBatch is installed).

    It must be cheap when there is nothing to do: it runs before every wait for I/O.
    """
    _batch_end.append(weakref.WeakMethod(method))


def _run_batch_end() -> None:
    for ref in list(_batch_end):
        method = ref()
        if method is None:
            _batch_end.remove(ref)
        else:
            method()


class AfterBatch(trio.abc.Instrument):
    """Runs deferred calls at the end of each scheduler batch (or at once if not installed)."""

    def __init__(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._installed = False
        #: Told about an exception a deferred call raised (counted and logged there);
        #: without it the type and location are logged here. Never the message.
        self._on_error = on_error

    def defer(self, fn: Callable[..., None], *args: Any) -> None:
        self._pending.append((fn, args))
        if not self._installed or len(self._pending) >= MAX_PENDING:
            self.run_pending()

    def run_pending(self) -> None:
        """Everything deferred so far, in order; an error in one does not lose the rest."""
        while self._pending:
            pending, self._pending = self._pending, []
            for fn, args in pending:
                try:
                    fn(*args)
                except Exception as exc:
                    self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        # Runs inside trio's instrument hooks: raising here would get this instrument
        # removed (and the bookkeeping of every later request silently lost).
        try:
            if self._on_error is not None:
                self._on_error(exc)
            else:
                contained.report(
                    "bookkeeping", exc, "internal error in per-request bookkeeping; skipped"
                )
        except Exception:  # reporting must never raise in an instrument hook
            pass

    def end_of_batch(self) -> None:
        """The deferred calls, then the batch's log lines and the registered batch work."""
        if self._pending:
            self.run_pending()
        try:
            logs.end_batch()
            if _batch_end:
                _run_batch_end()
        except Exception as exc:
            self._failed(exc)

    def install(self) -> None:
        """Hook into the current trio run (from inside it)."""
        trio.lowlevel.add_instrument(self)
        if not self._installed:
            logs.begin_batching()
        self._installed = True

    def uninstall(self) -> None:
        """Unhook and run what is still pending (shutdown)."""
        with contextlib.suppress(KeyError):  # already gone
            trio.lowlevel.remove_instrument(self)
        self._finish()

    def _finish(self) -> None:
        was_installed, self._installed = self._installed, False
        self.run_pending()
        if was_installed:
            logs.stop_batching()
        self.end_of_batch()

    # trio.abc.Instrument hooks
    def before_io_wait(self, timeout: float) -> None:
        self.end_of_batch()

    def after_run(self) -> None:
        self._finish()
