"""libc ``crypt_r(3)`` through ctypes: the system's libxcrypt, with the GIL released.

It is about twice as fast as libpass's pure-Python SHA-crypt/MD5-crypt and knows every
method the system's libxcrypt knows (``$y$`` yescrypt, ...), like Dovecot's CRYPT. Unlike
Python 3.11's deprecated ``crypt`` module, a ctypes call releases the GIL, so hashes run
in parallel threads on every core, and any bytes (not only UTF-8) can be passed.
Callers fall back to passlib when this returns None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

#: Room for ``struct crypt_data`` (32 KiB in libxcrypt; glibc's old one was ~128 KiB).
_CRYPT_DATA_SIZE = 256 * 1024


def _load() -> Any:
    for name in (ctypes.util.find_library("crypt"), "libcrypt.so.1", "libcrypt.so.2"):
        if not name:
            continue
        try:
            function = ctypes.CDLL(name).crypt_r
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_char_p
        function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        return function
    return None


_crypt_r = _load()
_local = threading.local()


class Rejected(Exception):
    """libc crypt() refused the setting (returned NULL or a ``*`` failure token)."""


def available() -> bool:
    return _crypt_r is not None


def crypt(password: bytes, setting: str) -> str | None:
    """crypt(password, setting), or None when libc cannot take these inputs.

    That is: no libcrypt, or a NUL byte (C strings end there; passlib decides instead).
    """
    if _crypt_r is None or b"\x00" in password:
        return None
    buffer = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    try:
        raw = _crypt_r(password, setting.encode("ascii"), buffer)
    except UnicodeEncodeError:
        raise Rejected from None
    if not raw or raw.startswith(b"*"):
        raise Rejected
    return str(raw.decode("ascii", "replace"))
