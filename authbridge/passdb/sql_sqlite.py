"""SQLite behind the sql store: an embedded file, opened read-only.

sqlite3 connections are cheap but not free, so a few are kept for reuse; each query
carries a deadline enforced with a progress handler, so a slow query is interrupted
inside SQLite rather than left running in an abandoned thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any
from urllib.parse import quote

from authbridge.passdb.sql_query import Paramstyle

#: SQLite calls the progress handler every this many virtual machine instructions.
_PROGRESS_STEPS = 1000


class SqliteBackend:
    paramstyle: Paramstyle = "qmark"

    def __init__(self, path: str, keep: int = 4, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.description = f"sqlite:{path}"
        self.keep = max(1, keep)
        self.busy_timeout = busy_timeout
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{quote(self.path)}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, check_same_thread=False)
        return conn

    def query(
        self, sql: str, params: tuple[str, ...], deadline: float
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        from authbridge.passdb.sql import SqlStoreError

        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = self._connect()
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
            cursor = conn.execute(sql, params)
            rows = cursor.fetchmany(2)  # more than one row is an error; never read them all
            columns = [d[0] for d in cursor.description or ()]
            cursor.close()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise SqlStoreError(f"{self.description}: {exc}") from None
        except BaseException:
            # Unexpected (the store contains and counts it): never pool a connection
            # left in an unknown state.
            if conn is not None:
                conn.close()
            raise
        with self._lock:
            if self._closed or len(self._idle) >= self.keep:
                conn.close()
            else:
                self._idle.append(conn)
        return columns, rows

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
