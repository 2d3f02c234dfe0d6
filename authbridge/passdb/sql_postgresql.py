"""PostgreSQL behind the sql store: psycopg 3 with a psycopg_pool connection pool.

Several authbridge instances share one database, so each keeps a small pool. The pool
is opened at the first lookup, in the background: a database that is down when the
daemon starts (or drops away later) only turns lookups into outages until it returns,
and the pool reconnects by itself. Every wait is bounded by the store's timeout: the
wait for a connection, the connect itself (``connect_timeout``) and the query
(``statement_timeout``, so the server cancels a slow query and frees the connection).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from authbridge.passdb.sql_query import Paramstyle


# The pool logs every checkout and return at INFO; only its warnings (failed connects)
# belong in authbridge's log.
_pool_log = logging.getLogger("psycopg.pool")
if _pool_log.level == logging.NOTSET:
    _pool_log.setLevel(logging.WARNING)


def describe(dsn: str) -> str:
    """``postgresql:host/dbname`` for names and logs: the conninfo minus any password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql:<unparsable dsn>"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port")
    where = f"{host}:{port}" if port else str(host)
    return f"postgresql:{where}/{parts.get('dbname') or parts.get('user') or ''}"


class PostgresBackend:
    paramstyle: Paramstyle = "format"

    def __init__(self, dsn: str, pool_size: int = 4, timeout: float = 5.0) -> None:
        self.description = describe(dsn)
        self.timeout = timeout
        self.pool_size = max(1, pool_size)
        self._dsn = dsn
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        ms = max(1, int(self.timeout * 1000))
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{ms}ms",))

    def _ensure_pool(self) -> ConnectionPool:
        with self._lock:
            if self._closed:
                raise PoolTimeout("store closed")
            if self._pool is None:
                pool = ConnectionPool(
                    self._dsn,
                    kwargs={
                        "autocommit": True,
                        # libpq's own bound on a connect attempt (whole seconds, min 2).
                        "connect_timeout": max(2, math.ceil(self.timeout)),
                    },
                    min_size=self.pool_size,
                    max_size=self.pool_size,
                    open=False,
                    configure=self._configure,
                    timeout=self.timeout,
                    # Give up a failing reconnect soon; the pool then grows again on
                    # demand, so recovery after a long outage is prompt.
                    reconnect_timeout=max(10.0, 2 * self.timeout),
                    name=self.description,
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    def query(
        self, sql: str, params: tuple[str, ...], deadline: float
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        from authbridge.passdb.sql import SqlStoreError

        # A connection that died with the server (restart) fails at once; try the
        # next one, as long as there is time and until every pooled one was tried.
        for _attempt in range(self.pool_size + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                pool = self._ensure_pool()
                conn = pool.getconn(timeout=remaining)
            except PoolTimeout:
                raise SqlStoreError(
                    f"{self.description}: no database connection within {self.timeout:g} s"
                ) from None
            try:
                with conn.cursor() as cursor:
                    cursor.execute(sql.encode(), params)
                    rows = cursor.fetchmany(2)
                    columns = [d.name for d in cursor.description or ()]
            except psycopg.Error as exc:
                broken = conn.broken
                pool.putconn(conn)
                if broken:
                    continue
                raise SqlStoreError(f"{self.description}: {_first_line(exc)}") from None
            except BaseException:
                pool.putconn(conn)
                raise
            pool.putconn(conn)
            return columns, rows
        raise SqlStoreError(f"{self.description}: connection lost and no answer in time")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=2.0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
