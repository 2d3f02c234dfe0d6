"""User stores: where usernames, password hashes and extra fields come from."""

from __future__ import annotations

from pathlib import Path

from authbridge.passdb.base import Passdb, PassdbEntry, StoreFormatError, StoreUnavailable
from authbridge.passdb.exim_file import EximFileStore
from authbridge.passdb.passwd_file import PasswdFileStore

FileStore = PasswdFileStore | EximFileStore


def open_file_store(kind: str, path: str, default_scheme: str = "CRYPT") -> FileStore:
    """The in-memory store for a configured file (not loaded yet)."""
    if kind == "exim-file":
        return EximFileStore(Path(path))
    return PasswdFileStore(Path(path), default_scheme)


__all__ = [
    "EximFileStore",
    "FileStore",
    "Passdb",
    "PassdbEntry",
    "PasswdFileStore",
    "StoreFormatError",
    "StoreUnavailable",
    "open_file_store",
]
