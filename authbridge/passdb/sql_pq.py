"""PostgreSQL for trio: libpq (``psycopg.pq``) in non-blocking mode, awaited on its socket.

A lookup is one prepared statement sent on a pooled connection; the event loop waits
for the socket to become readable instead of a thread waiting in ``recv()``. That
keeps a lookup at a few tens of microseconds of Python: a thread hand-off and a
blocking driver per lookup cost several times more under the GIL. Only connecting
(which may resolve a host name) runs in a worker thread, bounded by the timeout.

A connection that fails, times out or is cancelled mid-query is closed, never reused,
so a query can never answer for another; the next lookup connects afresh, which is
also how the pool comes back after the database restarts.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import trio
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from authbridge.passdb.sql_errors import SqlConfigError, SqlDuplicate, SqlStoreError
from authbridge.passdb.sql_query import Paramstyle

_STATEMENT = b"authbridge_password_query"
_BOOL_OID = 16


#: The SQLSTATE of a unique key refusing a row.
_UNIQUE_VIOLATION = b"23505"


class PqError(Exception):
    """One failed step on one connection (the message is libpq's, first line)."""

    def __init__(self, message: str, sqlstate: bytes | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def describe(dsn: str) -> str:
    """``postgresql:host:port/dbname`` for names and logs: never the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql:<unparsable dsn>"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port")
    where = f"{host}:{port}" if port else str(host)
    return f"postgresql:{where}/{parts.get('dbname') or parts.get('user') or ''}"


def _message(raw: bytes | None, default: str) -> str:
    text = (raw or b"").decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else default


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Conn:
    """One non-blocking libpq connection with the password query prepared on it."""

    def __init__(self, pgconn: pq.abc.PGconn) -> None:
        self.pg = pgconn
        self.prepared = False

    def close(self) -> None:
        self.pg.finish()

    async def _flush(self) -> None:
        while self.pg.flush() == 1:
            await trio.lowlevel.wait_writable(self.pg.socket)

    async def _result(self) -> pq.abc.PGresult:
        """The one result of the command just sent (later ones are drained)."""
        pg = self.pg
        await self._flush()
        result: pq.abc.PGresult | None = None
        while True:
            while pg.is_busy():
                await trio.lowlevel.wait_readable(pg.socket)
                pg.consume_input()
            res = pg.get_result()
            if res is None:
                break
            if result is None:
                result = res
        if result is None or pg.status != pq.ConnStatus.OK:
            raise PqError(_message(pg.error_message, "connection lost"))
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
            raise PqError(_message(result.error_message, str(result.status)), sqlstate)
        return result

    async def query(
        self, sql: bytes, params: list[bytes | None]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        if not self.prepared:
            self.pg.send_prepare(_STATEMENT, sql)
            await self._result()
            self.prepared = True
        self.pg.send_query_prepared(_STATEMENT, params)
        res = await self._result()
        columns = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
        bools = [res.ftype(i) == _BOOL_OID for i in range(res.nfields)]
        rows: list[tuple[Any, ...]] = []
        for r in range(min(res.ntuples, 2)):
            row: list[Any] = []
            for c in range(res.nfields):
                value = res.get_value(r, c)
                if value is None:
                    row.append(None)
                elif bools[c]:
                    row.append(value == b"t")
                else:
                    row.append(value.decode("utf-8", "replace"))
            rows.append(tuple(row))
        if res.ntuples > 2:
            rows.append(())  # the count is all that matters past two
        return columns, rows


async def _execute(conn: _Conn, sql: bytes, params: list[bytes | None]) -> int:
    """One writing statement, unprepared (the prepared one is the password query); the
    rows it changed."""
    conn.pg.send_query_params(sql, params)
    res = await conn._result()
    tuples = res.command_tuples
    return 0 if tuples is None else int(tuples)


class PqBackend:
    """A small trio pool of libpq connections (at most ``pool_size`` at a time)."""

    paramstyle: Paramstyle = "numeric"

    def __init__(self, dsn: str, pool_size: int = 4, timeout: float = 5.0) -> None:
        self.description = describe(dsn)
        self.timeout = timeout
        try:
            # statement_timeout: the server cancels a slow query itself; libpq's own
            # connect_timeout bounds a connect in whole seconds (at least 2).
            options = conninfo_to_dict(dsn).get("options") or ""
            options = f"{options} -c statement_timeout={max(1, int(timeout * 1000))}".strip()
            # client_encoding: parameters go out and values come back as UTF-8 whatever
            # the database's own encoding.
            self._conninfo = make_conninfo(
                dsn,
                connect_timeout=max(2, math.ceil(timeout)),
                options=options,
                client_encoding="UTF8",
            ).encode()
        except psycopg.Error:
            # psycopg's message quotes the text around the fault, which may be the password.
            raise SqlConfigError(
                "postgresql store: the dsn does not parse (not shown: it may hold a password)"
            ) from None
        self._slots = trio.Semaphore(max(1, pool_size))
        self._connect_limiter = trio.CapacityLimiter(max(1, pool_size))
        self._idle: list[_Conn] = []
        self._closed = False

    def _connect_blocking(self) -> pq.abc.PGconn:
        pg = pq.PGconn.connect(self._conninfo)
        if pg.status != pq.ConnStatus.OK:
            message = _message(pg.error_message, "cannot connect")
            pg.finish()
            raise PqError(message)
        pg.nonblocking = 1
        return pg

    async def _connect(self) -> _Conn:
        # An abandoned connect (timeout) keeps its token until libpq gives up, so a
        # database that swallows packets cannot pile up threads.
        pg = await trio.to_thread.run_sync(
            self._connect_blocking, abandon_on_cancel=True, limiter=self._connect_limiter
        )
        return _Conn(pg)

    async def aquery(
        self, sql: str, params: tuple[str, ...], deadline: float
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        encoded: list[bytes | None] = [p.encode() for p in params]
        query = sql.encode()
        async with self._slots:
            # Idle connections may have died with a restarted server: each is tried
            # once (a dead one fails at once), then a fresh one is made.
            while True:
                fresh = not self._idle
                try:
                    conn = self._idle.pop() if self._idle else await self._connect()
                except (PqError, psycopg.Error) as exc:
                    raise SqlStoreError(f"{self.description}: {exc}") from None
                try:
                    answer = await conn.query(query, encoded)
                except (PqError, psycopg.Error) as exc:
                    dead = conn.pg.status != pq.ConnStatus.OK
                    conn.close()
                    if dead and not fresh and time.monotonic() < deadline:
                        continue
                    raise SqlStoreError(f"{self.description}: {_first_line(exc)}") from None
                except BaseException:
                    conn.close()  # cancelled mid-query: its answer would be out of step
                    raise
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)
                return answer

    async def aquery_rows(
        self, sql: str, params: tuple[str, ...], deadline: float, rows: int
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Up to ``rows`` rows of a query other than the password query (unprepared: a
        connection's one prepared statement is the password query)."""
        encoded: list[bytes | None] = [p.encode() for p in params]
        async with self._borrowed() as conn:
            try:
                conn.pg.send_query_params(sql.encode(), encoded)
                res = await conn._result()
            except (PqError, psycopg.Error) as exc:
                raise SqlStoreError(f"{self.description}: {_first_line(exc)}") from None
        columns = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
        found: list[tuple[Any, ...]] = []
        for r in range(min(res.ntuples, rows)):
            values = (res.get_value(r, c) for c in range(res.nfields))
            found.append(tuple(None if v is None else v.decode("utf-8", "replace") for v in values))
        return columns, found

    async def aexecute(self, sql: str, params: tuple[str, ...], deadline: float) -> int:
        """Run one writing statement (``[rehash]``'s update_query); the rows it changed."""
        encoded: list[bytes | None] = [p.encode() for p in params]
        async with self._borrowed() as conn:
            try:
                return await _execute(conn, sql.encode(), encoded)
            except (PqError, psycopg.Error) as exc:
                if isinstance(exc, PqError) and exc.sqlstate == _UNIQUE_VIOLATION:
                    raise SqlDuplicate(f"{self.description}: {_first_line(exc)}") from None
                raise SqlStoreError(f"{self.description}: {_first_line(exc)}") from None

    @contextlib.asynccontextmanager
    async def _borrowed(self) -> AsyncIterator[_Conn]:
        """A pooled connection for one unprepared statement: closed if the statement
        fails or is cancelled (its answer would be out of step), else given back."""
        async with self._slots:
            try:
                conn = self._idle.pop() if self._idle else await self._connect()
            except (PqError, psycopg.Error) as exc:
                raise SqlStoreError(f"{self.description}: {exc}") from None
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
