"""Where commands look for things nobody named on the command line.

Every command that reads the daemon's configuration takes ``--config FILE``; without it,
:func:`config_path` falls back to the file the Debian installer writes, when it exists.
``AUTHBRIDGE_CONFIG`` overrides that default (tests, unusual layouts).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Where ``deploy/install-debian.sh`` puts the configuration.
DEFAULT_CONFIG = "/etc/authbridge/authbridge.toml"

#: Where Exim, Postfix and doveadm look for the auth-client socket.
DEFAULT_SOCKET = "/var/run/dovecot/auth-client"


def default_config() -> str:
    return os.environ.get("AUTHBRIDGE_CONFIG") or DEFAULT_CONFIG


def config_path(given: str | None) -> str | None:
    """``given`` if set, else the default configuration file when it exists, else None."""
    if given:
        return given
    fallback = default_config()
    return fallback if Path(fallback).is_file() else None
