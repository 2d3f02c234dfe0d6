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

#: Where the systemd socket units of ``deploy/install-debian.sh`` listen (Exim's, then
#: Postfix's chroot); such a socket is not named in the config, systemd owns it.
INSTALLED_SOCKETS = ("/run/authbridge/auth-client", "/var/spool/postfix/private/authbridge")


def default_config() -> str:
    return os.environ.get("AUTHBRIDGE_CONFIG") or DEFAULT_CONFIG


def config_path(given: str | None) -> str | None:
    """``given`` if set, else the default configuration file when it exists, else None."""
    if given:
        return given
    fallback = default_config()
    return fallback if Path(fallback).is_file() else None


def client_socket(configured: str, candidates: tuple[str, ...] = INSTALLED_SOCKETS) -> str:
    """The socket a client command should talk to when the user named none.

    The config's socket when it sets one, or when the default exists; otherwise the first
    socket an installed systemd unit listens on, since under socket activation the
    config does not name it.
    """
    if configured != DEFAULT_SOCKET or Path(configured).exists():
        return configured
    return next((path for path in candidates if Path(path).exists()), configured)
