"""How a login name the stores did not recognise appears in a log line.

Clients type passwords into the user name field (LOGIN prompts in the wrong order, a
password manager filling the wrong box), so a name no store knows may well be a
password. Such names are logged as a keyed fingerprint, ``#<8 hex>/<length>``: the
first 8 hex digits of HMAC-SHA256 of the name (UTF-8) under a random key made when the
process starts, then the name's length in characters. The same name gives the same
fingerprint for the life of the process (attempts can be correlated, counted, banned),
but the key is never written anywhere, so the name cannot be recovered or guessed back
from the log. Names a store found are logged as typed; ``[log] unknown_users = "typed"``
restores the typed name for unknown ones too.
"""

from __future__ import annotations

import hmac
import secrets

FINGERPRINT = "fingerprint"
TYPED = "typed"
MODES = (FINGERPRINT, TYPED)

#: Made once per process and kept in memory only: fingerprints compare within a run.
_KEY = secrets.token_bytes(32)
_typed = False


def set_unknown_users(mode: str) -> None:
    """``fingerprint`` (the default) or ``typed``, for every later log line."""
    if mode not in MODES:
        raise ValueError(f"unknown_users {mode!r}: expected fingerprint or typed")
    global _typed
    _typed = mode == TYPED


def unknown_users() -> str:
    """The current mode, ``fingerprint`` or ``typed``."""
    return TYPED if _typed else FINGERPRINT


def fingerprint(name: str) -> str:
    """``#<8 hex>/<length>``: stable within this process, useless without its key.

    Contains none of ``( ) , : " \\`` or white space, so it fits the fail2ban line as is.
    """
    digest = hmac.digest(_KEY, name.encode("utf-8", "surrogatepass"), "sha256")
    return f"#{digest[:4].hex()}/{len(name)}"


def unknown_name(name: str) -> str:
    """What to log for a name no store recognised: its fingerprint, unless set to typed."""
    return name if _typed else fingerprint(name)
