"""The sql store's errors, on their own so that its driver backends can raise them.

:mod:`authbridge.passdb.sql` imports the backends (:mod:`~authbridge.passdb.sql_pq`,
:mod:`~authbridge.passdb.sql_sqlite`) to open them; the backends raise these errors.
Defined here, both sides import this module and neither imports the other's.
"""

from __future__ import annotations

from authbridge.config import ConfigError
from authbridge.passdb.base import StoreFormatError, StoreUnavailable

__all__ = ["SqlConfigError", "SqlDuplicate", "SqlStoreError"]


class SqlConfigError(ConfigError, StoreFormatError):
    """An sql store setting that cannot work (caught at start and at reload alike)."""


class SqlStoreError(StoreUnavailable):
    """The database did not answer a lookup; the message never carries row data."""


class SqlDuplicate(SqlStoreError):
    """A unique key refused a row (``app-password add`` racing another for one label)."""
