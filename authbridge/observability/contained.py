"""Report an unexpected exception that was kept where it happened, without its data.

A background layer (the metrics thread, a reload, an SQL lookup, the supervisor's
loops) that catches an exception it did not expect logs it here: one line with the
exception type and where it was raised, never its message (which may quote a client
line, a row, or a DSN with its password), and one increment of
``authbridge_internal_errors_total{where}``. The caller then goes on with its last
good state.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from authbridge.observability.logs import get_logger

log = get_logger("authbridge.contained")

#: ``count(where)``: ``Metrics.internal_error`` or any callable of that shape.
Counter = Callable[[str], None]

_PACKAGE = "authbridge"


def _short(filename: str, lineno: int | None) -> str:
    parts = PurePath(filename).parts
    if _PACKAGE in parts:
        index = len(parts) - 1 - parts[::-1].index(_PACKAGE)
        parts = parts[index:]
    else:
        parts = parts[-2:]
    return f"{'/'.join(parts)}:{lineno}"


def first_leaf(exc: BaseException) -> BaseException:
    """The first plain exception inside (possibly nested) exception groups.

    A nursery wraps what its tasks raise; the group's own traceback ends in trio.
    """
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def where_raised(exc: BaseException) -> dict[str, str]:
    """``error`` (the type name) and ``location`` (file:line where it was raised).

    An exception group is described by its first leaf. When the innermost frame is
    outside authbridge (a driver, the standard library), ``via`` adds the innermost
    authbridge frame, which is the one to read first.
    """
    exc = first_leaf(exc)
    fields = {"error": type(exc).__name__}
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        fields["location"] = "unknown"
        return fields
    innermost = frames[-1]
    fields["location"] = _short(innermost.filename, innermost.lineno)
    ours = [f for f in frames if _PACKAGE in PurePath(f.filename).parts]
    if ours and ours[-1] is not innermost:
        fields["via"] = _short(ours[-1].filename, ours[-1].lineno)
    return fields


def report(
    where: str,
    exc: BaseException,
    event: str,
    count: Counter | None = None,
    logger: Any = None,
    **context: Any,
) -> None:
    """Log ``exc`` once (type and location only) and count it under ``where``.

    ``context`` must hold only safe values (store names, worker slots, signal names).
    Neither the logging nor the counting may raise: this runs in the handlers that
    keep the daemon up.
    """
    # A broken log stream or metric must not undo the containment.
    with contextlib.suppress(Exception):
        (logger or log).error(event, where=where, **where_raised(exc), **context)
    if count is not None:
        with contextlib.suppress(Exception):
            count(where)


class Streak:
    """A loop that runs every second logs the first of identical failures in a row.

    Each failure is still counted; the log gets one line per new kind of failure
    (type and location) and one when the loop works again.
    """

    def __init__(self, where: str, event: str, count: Counter | None = None) -> None:
        self.where = where
        self.event = event
        self.count = count
        self._last: tuple[tuple[str, str], ...] | None = None
        self.repeats = 0

    def failed(self, exc: BaseException, **context: Any) -> None:
        fields = where_raised(exc)
        key = tuple(sorted(fields.items()))
        if key == self._last:
            self.repeats += 1
            if self.count is not None:
                with contextlib.suppress(Exception):
                    self.count(self.where)
            return
        self._last, self.repeats = key, 0
        report(self.where, exc, self.event, self.count, **context)

    def ok(self) -> None:
        if self._last is not None:
            with contextlib.suppress(Exception):
                log.info("working again", where=self.where, repeats=self.repeats)
            self._last, self.repeats = None, 0
