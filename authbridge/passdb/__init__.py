"""User stores: where usernames, password hashes and extra fields come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from authbridge.config import AppPasswordSettings, StoreConfig
from authbridge.passdb.app_passwords import AppPasswordFile
from authbridge.passdb.base import Passdb, PassdbEntry, StoreFormatError, StoreUnavailable
from authbridge.passdb.exim_file import EximFileStore
from authbridge.passdb.passwd_file import PasswdFileStore

FileStore = PasswdFileStore | EximFileStore


def open_file_store(kind: str, path: str, default_scheme: str = "CRYPT") -> FileStore:
    """The in-memory store for a configured file (not loaded yet)."""
    if kind == "exim-file":
        return EximFileStore(Path(path))
    return PasswdFileStore(Path(path), default_scheme)


def attach_app_passwords(store: Any, config: StoreConfig, settings: AppPasswordSettings) -> None:
    """Give ``store`` the app passwords ``config`` names (a file store's companion file
    is loaded now: StoreFormatError names its bad line)."""
    if config.app_password_file:
        source = AppPasswordFile(
            Path(config.app_password_file), config.default_scheme, settings.used_interval
        )
        source.load()
        store.app_passwords = source
    elif config.app_password_queries:
        from authbridge.passdb.sql_app_passwords import SqlAppPasswords  # SQL sites only

        store.app_passwords = SqlAppPasswords(
            store, config.app_password_queries, settings.used_interval
        )


__all__ = [
    "EximFileStore",
    "FileStore",
    "Passdb",
    "PassdbEntry",
    "PasswdFileStore",
    "StoreFormatError",
    "StoreUnavailable",
    "attach_app_passwords",
    "open_file_store",
]
