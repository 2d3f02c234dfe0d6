"""The files behind the stores, checked while serving: changed, gone, unreadable, back.

Once a second (like Dovecot) each file is looked at. A passwd-file or exim-file whose
signature changed is read again (quietly if it only holds passwords another process
rehashed, see ``rewrite.rehash_chain``); an SQLite database replaced by a rename (a new inode)
gets fresh connections. A file that disappears or can no longer be read is logged once
(error, naming store, path and why), counted as a failed reload and flagged in
``authbridge_store_unavailable{store}`` while the last good copy keeps serving; its
return is logged and the flag cleared. A version that does not parse is logged once
and not retried until the file changes again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from authbridge.observability.contained import report
from authbridge.observability.logs import get_logger
from authbridge.passdb.app_passwords import AppPasswordFile
from authbridge.passdb.base import (
    FileSignature,
    StoreFormatError,
    StoreUnavailable,
    file_signature,
    unreadable,
)
from authbridge.passdb.exim_file import EximFileStore
from authbridge.passdb.passwd_file import PasswdFileStore
from authbridge.passdb.rewrite import rehash_chain
from authbridge.passdb.sql_sqlite import SqliteBackend

log = get_logger("authbridge.serve")


class WatchMetrics(Protocol):
    """What the watcher moves (``authbridge.observability.metrics.Metrics`` fits)."""

    def reloaded(self, ok: bool) -> None: ...

    def store_unavailable(self, store: str, unavailable: bool) -> None: ...

    def internal_error(self, where: str) -> None: ...


@dataclass(frozen=True)
class WatchedFile:
    """One file a store serves from, and how to take a new version of it in."""

    store: str
    path: Path
    #: True if ``signature`` is the version in service.
    is_current: Callable[[FileSignature], bool]
    #: Take the file as it is now in; users loaded, or ``None`` (connections reopened).
    #: Raises StoreFormatError or StoreUnavailable and then leaves the old version.
    take: Callable[[], int | None]
    #: What serves while the file is gone, for the log line.
    meanwhile: str
    #: True if ``signature`` is the version in service with only rehashed passwords
    #: (written by another process serving the file): taken in without a log line,
    #: a counted reload or an emptied cache (a rehash changes no password).
    quiet: Callable[[FileSignature], bool] = lambda _signature: False


def watched_files(stores: Iterable[object]) -> Iterator[WatchedFile]:
    """The files of ``stores`` worth watching (PostgreSQL has none)."""
    for store in stores:
        if isinstance(store, PasswdFileStore | EximFileStore):
            yield WatchedFile(
                store.name,
                store.path,
                _same_as(store),
                store.load,
                "the last good copy keeps serving",
                _rehashed_from(store),
            )
            companion = store.app_passwords
            if isinstance(companion, AppPasswordFile) and companion.exists():
                # Watched once it exists: a revoke by the CLI takes effect without a
                # restart (and the cache is emptied, as for any reload).
                yield WatchedFile(
                    companion.name,
                    companion.path,
                    companion.is_current,
                    companion.load,
                    "the last good copy of the app passwords keeps serving",
                )
            continue
        backend = getattr(store, "backend", None)
        if isinstance(backend, SqliteBackend):
            yield WatchedFile(
                getattr(store, "name", backend.description),
                Path(backend.path),
                backend.is_current,
                _reopen(backend),
                "connections already open keep serving, new ones fail",
            )


def _same_as(store: PasswdFileStore | EximFileStore) -> Callable[[FileSignature], bool]:
    """The version in service, or one the store is writing and loading itself (a rehash:
    not an outside change, so no second load, no log line, no cache flush)."""
    return lambda signature: signature in (store.loaded_signature, store.own_write)


def _rehashed_from(store: PasswdFileStore | EximFileStore) -> Callable[[FileSignature], bool]:
    return lambda signature: rehash_chain(store.path, store.loaded_signature, signature)


def _reopen(backend: SqliteBackend) -> Callable[[], int | None]:
    def take() -> None:
        backend.reopen()

    return take


@dataclass
class _State:
    #: Why the file cannot be read, while it cannot (logged once).
    unavailable: str | None = None
    #: A version that did not load: not retried until the file changes again.
    failed: FileSignature | None = None


class StoreWatcher:
    """What the daemon knows about its store files between two checks."""

    def __init__(self, metrics: WatchMetrics, changed: Callable[[], object]) -> None:
        self.metrics = metrics
        #: Called after a new version went into service (the daemon empties its cache).
        self.changed = changed
        self._states: dict[str, _State] = {}

    async def check_all(self, stores: Iterable[object]) -> None:
        files = list(watched_files(stores))
        for name in set(self._states) - {w.store for w in files}:
            # A store the configuration no longer has (SIGHUP): forget it.
            if self._states.pop(name).unavailable is not None:
                self.metrics.store_unavailable(name, False)
        for watched in files:
            await self.check(watched)

    def unavailable(self, store: str) -> str | None:
        """Why ``store``'s file cannot be read now, as last checked (``None``: it can)."""
        state = self._states.get(store)
        return None if state is None else state.unavailable

    async def check(self, watched: WatchedFile) -> None:
        state = self._states.setdefault(watched.store, _State())
        problem = unreadable(watched.path)
        signature = file_signature(watched.path) if problem is None else None
        if signature is None:
            self._gone(watched, state, problem or "No such file or directory")
            return
        if watched.is_current(signature) or signature == state.failed:
            self._back(watched, state)  # the same version returned (or still broken)
            return
        quiet = watched.quiet(signature)
        try:
            count = await trio.to_thread.run_sync(watched.take)
        except StoreFormatError as exc:
            self._back(watched, state)
            state.failed = signature
            log.error(
                "store reload failed; the last good copy keeps serving",
                store=watched.store,
                error=str(exc),
            )
            self.metrics.reloaded(False)
            return
        except StoreUnavailable as exc:
            # There but unreadable (a directory, a file that is not a database):
            # tried again each second, logged once.
            self._gone(watched, state, str(exc))
            return
        except Exception as exc:
            # take() swaps only a fully read version in, so the old one still serves.
            state.failed = signature
            report(
                "reload",
                exc,
                "store reload failed; the last good copy keeps serving",
                self.metrics.internal_error,
                store=watched.store,
            )
            self.metrics.reloaded(False)
            return
        self._back(watched, state)
        state.failed = None
        if quiet and watched.is_current(signature):
            # (If the load found a yet newer version, that is an outside change.)
            log.debug("store took in rehashed passwords", store=watched.store)
            return
        if count is None:
            log.info("store reopened", store=watched.store, path=str(watched.path))
        else:
            log.info("store reloaded", store=watched.store, users=count)
        self.changed()
        self.metrics.reloaded(True)

    def _gone(self, watched: WatchedFile, state: _State, why: str) -> None:
        if state.unavailable is not None:
            return
        state.unavailable = why
        log.error(
            f"store file unavailable; {watched.meanwhile}",
            store=watched.store,
            path=str(watched.path),
            error=why,
        )
        self.metrics.store_unavailable(watched.store, True)
        self.metrics.reloaded(False)

    def _back(self, watched: WatchedFile, state: _State) -> None:
        if state.unavailable is None:
            return
        state.unavailable = None
        log.info("store file available again", store=watched.store, path=str(watched.path))
        self.metrics.store_unavailable(watched.store, False)
