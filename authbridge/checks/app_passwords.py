"""App passwords on the login path: what the pipeline asks when they are on.

The check pipeline holds one :class:`AppPasswordCheck` while any store has app
passwords (or ``require_app_password_for`` is set), ``None`` otherwise: then the
feature costs the pipeline one attribute check per PLAIN/LOGIN request. The rules
themselves (try the user's app passwords after the main password failed or was
refused) are steps of the pipeline's generator, so slow hashes are verified by the
Hasher off the event loop like any other; this module holds the settings, the
counting, and the background task that writes last-used times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import trio

from authbridge.config import AppPasswordSettings
from authbridge.observability.logs import get_logger

log = get_logger("authbridge.app_passwords")

#: The closed set of ``result`` values of ``authbridge_app_password_logins_total``:
#: ``ok`` an app password logged in; ``failed`` the user has usable app passwords and
#: none matched; ``main_password_refused`` the main password was right, but the
#: service requires an app password.
RESULTS = ("ok", "failed", "main_password_refused")
#: Seconds between two looks for last-used times to write.
FLUSH_EVERY = 30.0


class AppPasswordCheck:
    """The settings the pipeline reads, and the counter it moves."""

    def __init__(
        self,
        settings: AppPasswordSettings,
        on_result: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.require_for = frozenset(settings.require_app_password_for)
        self.on_result = on_result
        #: Wall-clock time: expiry times are Unix times.
        self.clock = clock

    def count(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)


async def flush_last_used(stores: Callable[[], Iterable[Any]], every: float = FLUSH_EVERY) -> None:
    """Write the stores' pending last-used times every ``every`` seconds, until cancelled
    (off the login path: a login only notes the time in memory)."""
    while True:
        await trio.sleep(every)
        await flush_once(stores())


async def flush_once(stores: Iterable[Any]) -> None:
    """One round of :func:`flush_last_used` (a failure is logged and tried again later)."""
    for store in stores:
        source = getattr(store, "app_passwords", None)
        if source is None or not source.has_pending():
            continue
        try:
            aflush = getattr(source, "aflush", None)
            if aflush is not None:
                await aflush()
            else:
                await trio.to_thread.run_sync(source.flush)
        except Exception as exc:  # never takes the daemon down; retried next round
            why = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
            log.warning("app password last-used times not written", store=source.name, error=why)
