"""SQLite behind the sql store: an embedded file, opened read-only.

sqlite3 connections are cheap but not free, so a few are kept for reuse; each query
carries a deadline enforced with a progress handler, so a slow query is interrupted
inside SQLite rather than left running in an abandoned thread.

An open connection stays on the file it opened, even after that file is replaced by a
rename (``mv new.sqlite users.sqlite``): the daemon's watcher sees the new inode and
calls :meth:`SqliteBackend.reopen`, after which no connection to the old file is used.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any
from urllib.parse import quote

from authbridge.passdb.base import FileSignature
from authbridge.passdb.sql_errors import SqlDuplicate, SqlStoreError
from authbridge.passdb.sql_query import Paramstyle

#: SQLite calls the progress handler every this many virtual machine instructions.
_PROGRESS_STEPS = 1000


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


#: The extended result codes of a unique key refusing a row.
_DUPLICATE = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})


class SqliteBackend:
    paramstyle: Paramstyle = "qmark"

    def __init__(self, path: str, keep: int = 4, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.description = f"sqlite:{path}"
        self.keep = max(1, keep)
        self.busy_timeout = busy_timeout
        #: Idle connections with the generation they were opened in.
        self._idle: list[tuple[sqlite3.Connection, int]] = []
        self._generation = 0
        self._lock = threading.Lock()
        self._closed = False
        #: The inode the connections open (``None``: no file when last looked).
        self.opened_inode = _inode(path)

    def is_current(self, signature: FileSignature) -> bool:
        """True while the file at ``path`` is the one the connections have open.

        Only a new inode counts: a write in place (same inode, new mtime and size) is
        seen by every open connection through SQLite's own locking, so reopening then
        would only cost connections.
        """
        return signature[2] == self.opened_inode

    def reopen(self) -> None:
        """Use the file now at ``path`` from here on; connections to the old one close.

        The new file is opened and its schema read first: if that fails (not a
        database, unreadable) SqlStoreError is raised and the pool stays as it was.
        """
        inode = _inode(self.path)
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise SqlStoreError(f"{self.description}: {exc}") from None
        with self._lock:
            self._generation += 1
            stale, self._idle = self._idle, []
            if not self._closed:
                self._idle.append((conn, self._generation))
                conn = None
            self.opened_inode = inode
        for old, _ in stale:
            old.close()
        if conn is not None:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{quote(self.path)}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, check_same_thread=False)
        return conn

    def query(
        self, sql: str, params: tuple[str, ...], deadline: float, rows: int = 2
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock:
            conn, generation = self._idle.pop() if self._idle else (None, self._generation)
        try:
            if conn is None:
                conn = self._connect()
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
            cursor = conn.execute(sql, params)
            # The password query: more than one row is an error; never read them all.
            found = cursor.fetchmany(rows)
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
            keep = not self._closed and generation == self._generation
            if keep and len(self._idle) < self.keep:
                self._idle.append((conn, generation))
                conn = None
        if conn is not None:  # a full pool, closed, or opened on a replaced file
            conn.close()
        return columns, found

    def execute(self, sql: str, params: tuple[str, ...], deadline: float) -> int:
        """Run one writing statement (``[rehash]``'s update_query) and commit it; the rows
        it changed. A connection of its own, read-write, closed after: lookups stay on
        their read-only ones, and a write is rare."""
        uri = f"file:{quote(self.path)}?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=self.busy_timeout, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise SqlStoreError(f"{self.description}: {exc}") from None
        try:
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
            with conn:  # commits, or rolls back on an error
                changed = conn.execute(sql, params).rowcount
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorname in _DUPLICATE:
                raise SqlDuplicate(f"{self.description}: {exc}") from None
            raise SqlStoreError(f"{self.description}: {exc}") from None
        except sqlite3.Error as exc:
            raise SqlStoreError(f"{self.description}: {exc}") from None
        finally:
            conn.close()
        return max(0, changed)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()
