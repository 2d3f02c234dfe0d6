"""User stores: where usernames, password hashes and extra fields come from."""

from authbridge.passdb.base import Passdb, PassdbEntry, StoreFormatError, StoreUnavailable

__all__ = ["Passdb", "PassdbEntry", "StoreFormatError", "StoreUnavailable"]
