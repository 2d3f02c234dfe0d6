"""The package's one error hierarchy.

    AuthbridgeError
    ├── ProtocolError   the client broke the auth-client protocol or sent unusable data
    ├── StoreError      a user store: unreadable, malformed, down, a broken query
    ├── SchemeError     a stored password that cannot be used
    └── ConfigError     the configuration is unusable

Each module raises a subclass that names its case (``session.ProtocolViolation``,
``wire.InvalidBase64``, ``passdb.base.StoreUnavailable``, ``schemes.SchemeError``, ...)
and callers catch the narrowest class they handle. Messages never carry a secret: they
end up in logs.

The classes that used to be ``ValueError`` subclasses still are (a second base), so code
outside the package that catches ``ValueError`` keeps working; new code catches these.
This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations


class AuthbridgeError(Exception):
    """Every error authbridge raises on purpose."""


class ProtocolError(AuthbridgeError):
    """The client broke the auth-client protocol, or sent data no rule can use."""


class StoreError(AuthbridgeError):
    """A user store cannot answer, or its data does not parse."""


class SchemeError(AuthbridgeError, ValueError):
    """A stored password value that cannot be used (unknown scheme, bad encoding, bad length).

    The message names the scheme and the problem, never the stored data or a password.
    """


class ConfigError(AuthbridgeError, ValueError):
    """The configuration is unusable; the message tells where and why."""


__all__ = ["AuthbridgeError", "ConfigError", "ProtocolError", "SchemeError", "StoreError"]
