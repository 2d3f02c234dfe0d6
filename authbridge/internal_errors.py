"""The connection side of error containment: what one client's bug may cost.

A bug hit by one client ends that client's connection (or answers its request with
TEMPFAIL, or skips its bookkeeping), never the daemon, and is visible: one log line and
one count in ``authbridge_internal_errors_total``. The line is made by
:func:`authbridge.contained.report`: the exception type and where it was raised, never
its message, which can quote client data (a ``UnicodeEncodeError`` quotes the offending
character) and client data can be a password.
"""

from __future__ import annotations

from typing import Any

from authbridge import contained
from authbridge.logs import get_logger
from authbridge.metrics import Metrics

log = get_logger("authbridge.server")

#: What the daemon did about it, per ``where``.
_CONSEQUENCE = {
    "connection": "internal error; connection closed",
    "check": "internal error while checking a credential; answered TEMPFAIL",
    "bookkeeping": "internal error in per-request bookkeeping; skipped",
}


def first_leaf(exc: BaseException) -> BaseException:
    """The first plain exception inside (possibly nested) exception groups.

    A nursery wraps what its tasks raise; the group's own traceback ends in trio.
    """
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def report(exc: BaseException, where: str, metrics: Metrics | None, **context: Any) -> None:
    """Count and log one contained exception; never raises.

    ``context`` holds identifiers only (``cuid``, ``request``), never client text.
    """
    count = None if metrics is None else metrics.internal_errors.labels(where=where).inc
    contained.report(
        where,
        first_leaf(exc),
        _CONSEQUENCE.get(where, "internal error contained"),
        lambda _where: count() if count is not None else None,
        logger=log,
        **context,
    )
