"""The sql store: Dovecot's sql passdb on SQLite (embedded) or PostgreSQL (shared).

One ``password_query`` per lookup, with every request value bound as a parameter
(see :mod:`authbridge.passdb.sql_query`). The row's ``password`` column is the stored
password; every other non-NULL column is an extra field named after the column, as in
Dovecot. Database drivers block, so each query runs in a worker thread and the event
loop waits at most ``timeout`` seconds for it; anything that goes wrong on the
database side (down, refusing, slow, a broken query) is :class:`StoreUnavailable`,
which the authenticator answers with an internal failure. So is an exception nobody
expected, from the driver or in reading the row: that request gets a temporary
failure, the exception is logged by type and place only and counted
(``authbridge_internal_errors_total{where="store"}``), and the pool serves on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import trio

from authbridge.config import StoreConfig
from authbridge.observability.contained import report
from authbridge.observability.logs import get_stdlib_logger
from authbridge.passdb.app_passwords import AppPasswordSource
from authbridge.passdb.base import PassdbEntry
from authbridge.passdb.rewrite import CHANGED, WRITTEN, PasswordChange
from authbridge.passdb.sql_errors import SqlConfigError, SqlStoreError
from authbridge.passdb.sql_query import (
    UPDATE_NAMES,
    Paramstyle,
    PreparedQuery,
    QueryError,
    RequestContext,
    prepare,
)
from authbridge.schemes import StoredPassword, parse_stored

log = get_stdlib_logger(__name__)

__all__ = [
    "QueryError",
    "SqlConfigError",
    "SqlStore",
    "SqlStoreError",
    "open_sql_store",
]

#: ``observe(store_name, result, seconds)``; result is "found", "not_found" or "error"
#: (the signature of ``authbridge.observability.metrics.Metrics.observe_lookup``).
Observer = Callable[[str, str, float], None]

Row = tuple[Sequence[str], Sequence[Any]]


class Backend(Protocol):
    """The driver-specific half: one query, the column names and at most two rows."""

    paramstyle: Paramstyle
    description: str

    def close(self) -> None: ...


class ThreadBackend(Backend, Protocol):
    """A blocking driver: ``query`` runs in a worker thread."""

    def query(
        self, sql: str, params: tuple[str, ...], deadline: float
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Raises SqlStoreError."""
        ...


@runtime_checkable
class AsyncBackend(Backend, Protocol):
    """A driver that waits on the event loop itself."""

    async def aquery(
        self, sql: str, params: tuple[str, ...], deadline: float
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Raises SqlStoreError."""
        ...


def _field_value(value: Any) -> str | None:
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = str(value)
    # Dovecot takes sql values literally; the authenticator %-expands field values
    # (as passwd-file needs), so a literal % is escaped here.
    return text.replace("%", "%%")


def entry_from_row(
    user: str, columns: Sequence[str], row: Sequence[Any], default_scheme: str
) -> PassdbEntry:
    """Dovecot's reading of a result row: ``password`` plus extra fields by column name.

    NULL columns are left out; a boolean column is a bare key when true and left out
    when false (``nologin``, ``nopassword`` as SQL booleans).
    """
    password: StoredPassword | None = None
    fields: list[tuple[str, str | None]] = []
    for name, value in zip(columns, row, strict=True):
        key = name.lower()
        if value is None:
            continue
        if key in ("password", "password_noscheme"):
            text = bytes(value).decode() if isinstance(value, bytes | memoryview) else str(value)
            if key == "password_noscheme":
                # Never read for a {SCHEME} prefix: the value is all data.
                base = parse_stored("", default_scheme)
                password = StoredPassword(base.scheme, text, base.encoding)
            else:
                password = parse_stored(text, default_scheme)
            continue
        if isinstance(value, bool):
            if value:
                fields.append((key, None))
            continue
        fields.append((key, _field_value(value)))
    return PassdbEntry(user, password, tuple(fields))


def _password_column(columns: Sequence[str], row: Sequence[Any]) -> tuple[str, str] | None:
    """(column name, text) of the row's stored password, as entry_from_row reads it."""
    for name, value in zip(columns, row, strict=True):
        key = name.lower()
        if key in ("password", "password_noscheme") and value is not None:
            text = bytes(value).decode() if isinstance(value, bytes | memoryview) else str(value)
            return key, text
    return None


#: Stored values remembered from lookups for ``update_query`` (``%{old}``), per user.
SEEN_PASSWORDS = 10_000


def _storable(value: str) -> bool:
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from undecodable client bytes
        return False
    return True


class SqlStore:
    """A Passdb backed by one SQL database."""

    def __init__(
        self,
        backend: ThreadBackend | AsyncBackend,
        password_query: str,
        *,
        default_scheme: str = "MD5",
        timeout: float = 5.0,
        concurrency: int = 4,
        observe: Observer | None = None,
        update_query: str = "",
    ) -> None:
        self.backend = backend
        # Checked once: a runtime Protocol check per lookup is not free.
        self._async = backend if isinstance(backend, AsyncBackend) else None
        self.query: PreparedQuery = prepare(password_query, backend.paramstyle)
        #: ``[rehash]``'s write; ``None``: this store is not rehashed.
        self.update: PreparedQuery | None = (
            prepare(update_query, backend.paramstyle, UPDATE_NAMES, "update_query")
            if update_query
            else None
        )
        #: The stored value (column, text) each user's last lookup returned, for
        #: ``%{old}`` (kept only with an update_query).
        self._seen: dict[str, tuple[str, str]] = {}
        self.default_scheme = default_scheme
        self.timeout = timeout
        self.observe = observe
        # Threads abandoned after a timeout keep their slot until the driver returns,
        # so a hung database can never pile up more than ``concurrency`` threads.
        self._limiter = trio.CapacityLimiter(max(1, concurrency))
        self.errors = 0
        #: ``count("store")`` for each unexpected exception turned into an outage.
        self.on_internal_error: Callable[[str], None] | None = None
        #: The user's app passwords (``None``: the store has none configured).
        self.app_passwords: AppPasswordSource | None = None

    @property
    def name(self) -> str:
        return f"sql:{self.backend.description}"

    @property
    def can_rewrite(self) -> bool:
        """Whether ``[rehash]`` may write new hashes here (an update_query is set)."""
        return self.update is not None

    async def arewrite_passwords(self, changes: Sequence[PasswordChange]) -> dict[str, str]:
        """Run the update_query for each change whose verified value is still the one
        this store last read (``%{old}``: the database keeps a concurrent change).

        Raises SqlStoreError (a StoreError) when the database does not take it.
        """
        results: dict[str, str] = {}
        for change in changes:
            results[change.user] = await self._rewrite_one(change)
        return results

    async def _rewrite_one(self, change: PasswordChange) -> str:
        update = self.update
        seen = self._seen.get(change.user)
        if update is None or seen is None:
            return CHANGED
        column, old = seen
        if entry_from_row(change.user, [column], [old], self.default_scheme).password != (
            change.verified
        ):
            return CHANGED  # read again since, and different: not the value verified
        extra = {"password": change.new, "old": old}
        params = update.parameters(change.user, None, extra)
        deadline = time.monotonic() + 0.9 * self.timeout
        with trio.move_on_after(self.timeout) as scope:
            aexecute = getattr(self.backend, "aexecute", None)
            if aexecute is not None:
                changed: int = await aexecute(update.sql, params, deadline)
            else:
                changed = await trio.to_thread.run_sync(
                    self.backend.execute,  # type: ignore[union-attr]
                    update.sql,
                    params,
                    deadline,
                    limiter=self._limiter,
                )
        if scope.cancelled_caught:
            raise SqlStoreError(f"{self.name}: update_query: no answer within {self.timeout:g} s")
        if changed:
            self._seen.pop(change.user, None)
            return WRITTEN
        return CHANGED

    @property
    def uses_request(self) -> bool:
        """True if the query reads %s/%r/%l: its answers are client specific."""
        return self.query.uses_request

    async def lookup(self, user: str, info: RequestContext | None = None) -> PassdbEntry | None:
        """The entry for ``user``; raises SqlStoreError (a StoreUnavailable) on any failure."""
        started = time.monotonic()
        try:
            return await self._lookup(user, info, started)
        except SqlStoreError:
            raise
        except Exception as exc:
            self.errors += 1
            self._observe("error", started)
            report(
                "store",
                exc,
                "sql lookup failed unexpectedly; answered as a temporary failure",
                self.on_internal_error,
                store=self.name,
            )
            # Neither the message nor the row: a driver's text can quote either.
            raise SqlStoreError(f"{self.name}: internal error ({type(exc).__name__})") from None

    async def _lookup(
        self, user: str, info: RequestContext | None, started: float
    ) -> PassdbEntry | None:
        params = self.query.parameters(user, info)
        if not all(_storable(p) for p in params):
            # No database can hold such a name: unknown, without asking (and without
            # letting a client turn odd bytes into outage errors).
            self._observe("not_found", started)
            return None
        # The worker's own deadline comes a little earlier than the event loop's, so
        # the driver's error (more telling than "no answer") usually wins the race.
        deadline = started + 0.9 * self.timeout
        try:
            columns: list[str] = []
            rows: list[tuple[Any, ...]] = []
            with trio.move_on_after(self.timeout) as scope:
                if self._async is not None:
                    columns, rows = await self._async.aquery(self.query.sql, params, deadline)
                else:
                    columns, rows = await trio.to_thread.run_sync(
                        cast(ThreadBackend, self.backend).query,
                        self.query.sql,
                        params,
                        deadline,
                        limiter=self._limiter,
                        abandon_on_cancel=True,
                    )
            if scope.cancelled_caught:
                raise SqlStoreError(f"{self.name}: no answer within {self.timeout:g} s")
            if len(rows) > 1:
                raise SqlStoreError(f"{self.name}: password_query returned more than one row")
        except SqlStoreError as exc:
            self.errors += 1
            self._observe("error", started)
            # The authenticator logs the outage with the user; this is the detail.
            log.debug("sql store lookup failed", store=self.name, error=str(exc))
            raise
        if not rows:
            self._observe("not_found", started)
            return None
        entry = entry_from_row(user, columns, rows[0], self.default_scheme)
        if self.update is not None:
            seen = _password_column(columns, rows[0])
            if seen is not None:
                if len(self._seen) >= SEEN_PASSWORDS:
                    self._seen.clear()
                self._seen[user] = seen
        self._observe("found", started)
        return entry

    def _observe(self, result: str, started: float) -> None:
        if self.observe is not None:
            self.observe(self.name, result, time.monotonic() - started)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.backend.close, abandon_on_cancel=True)


def make_backend(config: StoreConfig) -> ThreadBackend | AsyncBackend:
    if config.driver == "sqlite":
        from authbridge.passdb.sql_sqlite import SqliteBackend

        return SqliteBackend(config.dsn, config.pool_size, config.timeout)
    if config.driver == "postgresql":
        from authbridge.passdb.drivers import postgresql_driver_problem

        problem = postgresql_driver_problem()
        if problem is not None:
            raise SqlConfigError(f"postgresql store: {problem}")
        from authbridge.passdb.sql_pq import PqBackend

        return PqBackend(config.dsn, config.pool_size, config.timeout)
    raise SqlConfigError(f"unknown sql driver {config.driver!r}")


def open_sql_store(config: StoreConfig, observe: Observer | None = None) -> SqlStore:
    """Build the store without touching the database (it may be down at start).

    Raises :class:`SqlConfigError` for a query that cannot be bound.
    """
    backend = make_backend(config)
    try:
        return SqlStore(
            backend,
            config.password_query,
            default_scheme=config.default_scheme,
            timeout=config.timeout,
            concurrency=config.pool_size,
            observe=observe,
            update_query=config.update_query,
        )
    except QueryError as exc:
        backend.close()
        raise SqlConfigError(f"{config.driver} store: {exc}") from None
