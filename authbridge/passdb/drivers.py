"""Whether a database driver can be imported, and the one line saying how to get it.

psycopg is a default dependency, so a normal install has it; this catches the install
that skipped it (``--no-deps``, a hand-made virtualenv, a broken wheel) with a message
naming the package and the interpreter to install it for, never a traceback.
"""

from __future__ import annotations

import importlib
import sys


def postgresql_driver_problem() -> str | None:
    """``None`` when psycopg imports; otherwise what is wrong and how to install it."""
    try:
        importlib.import_module("psycopg")
    except ImportError as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (
            f"the postgresql driver psycopg cannot be imported ({detail}); install it with: "
            f"{sys.executable} -m pip install 'psycopg[binary]'"
        )
    return None
