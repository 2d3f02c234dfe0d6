"""App passwords of an sql store: a table beside the users (deploy/sql/*.sql).

Four configurable queries (``config.APP_PASSWORD_QUERIES`` are the defaults), each
turned into a parameterised statement like the password query: the lookup (the
daemon, and ``app-password list``), insert and delete (``app-password add`` and
``revoke``), and the last-used update (the daemon, at most once per ``used_interval``
per app password, from a background task). The lookup's columns are read by name:
``label``, ``password``, ``service`` (NULL or '' = any, else comma separated),
``expires_at`` and ``last_used`` (Unix seconds or NULL).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import trio

from authbridge.passdb.app_passwords import (
    MAX_PER_USER,
    AppPassword,
    DuplicateLabel,
    parse_services,
)
from authbridge.passdb.sql import SqlStore
from authbridge.passdb.sql_errors import SqlDuplicate, SqlStoreError
from authbridge.passdb.sql_query import PreparedQuery, RequestContext, prepare
from authbridge.schemes import SchemeError, parse_stored

#: Variables the app password queries bind besides the user's (``%w``: the hash).
NAMES = frozenset(
    {"user", "username", "domain", "service", "rip", "lip"}
    | {"password", "label", "scope", "expires", "time"}
)


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


class SqlAppPasswords:
    """The app password queries of one sql store, run on its connections."""

    def __init__(
        self, store: SqlStore, queries: Sequence[tuple[str, str]], interval: float = 3600.0
    ) -> None:
        self.store = store
        style = store.backend.paramstyle
        prepared = {key: prepare(sql, style, NAMES, key) for key, sql in queries}
        self.lookup_query: PreparedQuery = prepared["app_password_query"]
        self.insert_query: PreparedQuery = prepared["app_password_insert_query"]
        self.delete_query: PreparedQuery = prepared["app_password_delete_query"]
        self.used_query: PreparedQuery = prepared["app_password_used_query"]
        self.interval = interval
        self._pending: dict[tuple[str, str], float] = {}
        self._written: dict[tuple[str, str], float] = {}

    @property
    def name(self) -> str:
        return f"app-passwords:{self.store.name}"

    async def lookup(
        self, user: str, info: RequestContext | None = None
    ) -> tuple[AppPassword, ...]:
        """``user``'s app passwords; SqlStoreError (a StoreUnavailable) on any failure.
        A row whose hash does not parse is left out (``list`` shows it as unusable)."""
        columns, rows = await self._rows(self.lookup_query.parameters(user, info))
        names = [c.lower() for c in columns]
        found = []
        for row in rows:
            values = dict(zip(names, row, strict=True))
            try:
                stored = parse_stored(str(values.get("password") or ""), "CRYPT")
                entry = AppPassword(
                    user,
                    str(values.get("label") or ""),
                    stored,
                    parse_services(str(values.get("service") or "")),
                    _number(values.get("expires_at")),
                    _number(values.get("last_used")),
                )
            except (SchemeError, ValueError):
                continue
            found.append(entry)
        return tuple(found)

    async def _rows(self, params: tuple[str, ...]) -> tuple[list[str], list[tuple[Any, ...]]]:
        store = self.store
        backend: Any = store.backend
        deadline = time.monotonic() + 0.9 * store.timeout
        sql = self.lookup_query.sql
        with trio.move_on_after(store.timeout) as scope:
            if hasattr(backend, "aquery_rows"):
                return await backend.aquery_rows(sql, params, deadline, MAX_PER_USER)  # type: ignore[no-any-return]
            return await trio.to_thread.run_sync(
                backend.query, sql, params, deadline, MAX_PER_USER, abandon_on_cancel=True
            )
        assert scope.cancelled_caught
        raise SqlStoreError(f"{self.name}: no answer within {store.timeout:g} s")

    async def _execute(self, query: PreparedQuery, user: str, extra: dict[str, str]) -> int:
        """Run a writing statement; the rows it changed (SqlStoreError on failure)."""
        store = self.store
        backend: Any = store.backend
        params = query.parameters(user, None, extra)
        deadline = time.monotonic() + 0.9 * store.timeout
        with trio.move_on_after(store.timeout) as scope:
            if hasattr(backend, "aexecute"):
                return int(await backend.aexecute(query.sql, params, deadline))
            return int(await trio.to_thread.run_sync(backend.execute, query.sql, params, deadline))
        assert scope.cancelled_caught
        raise SqlStoreError(f"{self.name}: no answer within {store.timeout:g} s")

    async def add(self, entry: AppPassword, value: str, now: float) -> None:
        """Insert ``entry``; DuplicateLabel if the unique (username, label) key refuses it
        (another ``add`` of the same label won the race since the CLI looked)."""
        extra = {
            "password": value,
            "label": entry.label,
            "scope": ",".join(entry.services),
            "expires": "" if entry.expires is None else str(int(entry.expires)),
            "time": str(int(now)),
        }
        try:
            await self._execute(self.insert_query, entry.user, extra)
        except SqlDuplicate:
            raise DuplicateLabel(
                f"user {entry.user!r} already has an app password {entry.label!r}"
            ) from None

    async def revoke(self, user: str, label: str) -> bool:
        return await self._execute(self.delete_query, user, {"label": label}) > 0

    def used(self, user: str, label: str, now: float) -> None:
        """A login with this app password (cheap: written later by :meth:`aflush`)."""
        key = (user, label)
        written = self._written.get(key)
        if written is None or now - written >= self.interval:
            self._pending[key] = now

    def has_pending(self) -> bool:
        return bool(self._pending)

    async def aflush(self) -> int:
        """Write the pending last-used times (SqlStoreError: the rest waits an interval)."""
        pending, self._pending = self._pending, {}
        # Counted as written even if the update fails (the database is down): tried
        # again an interval later, not every round.
        self._written.update(pending)
        for (user, label), when in pending.items():
            extra = {"label": label, "time": str(int(when))}
            await self._execute(self.used_query, user, extra)
        return len(pending)
