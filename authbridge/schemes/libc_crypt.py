"""libc ``crypt(3)`` through Python 3.11's deprecated ``crypt`` module, when it exists.

It is about twice as fast as libpass's pure-Python SHA-crypt/MD5-crypt and also knows
every method the system's libxcrypt knows (``$y$`` yescrypt, ...), like Dovecot's CRYPT.
Callers fall back to passlib when this returns None.
"""

from __future__ import annotations

import warnings
from types import ModuleType

_crypt: ModuleType | None
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as _crypt
    except ImportError:  # Python 3.13+, or a libc without crypt()
        _crypt = None


class Rejected(Exception):
    """libc crypt() refused the setting (returned NULL or a ``*`` failure token)."""


def available() -> bool:
    return _crypt is not None


def crypt(password: bytes, setting: str) -> str | None:
    """crypt(password, setting), or None when libc cannot take these inputs.

    That is: no ``crypt`` module, a NUL byte, or a password that is not UTF-8.
    """
    if _crypt is None or b"\x00" in password:
        return None
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        result: str | None = _crypt.crypt(text, setting)
    except (OSError, ValueError):
        raise Rejected from None
    if not result or result.startswith("*"):
        raise Rejected
    return result
