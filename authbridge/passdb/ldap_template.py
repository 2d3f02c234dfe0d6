"""``%u``-style templates of LDAP filters and bind DNs, with every value escaped.

A user name is data: in a filter each value is escaped per RFC 4515 (``*``, ``(``,
``)``, ``\\`` and NUL become ``\\2a`` and friends), so ``*)(uid=*`` matches a user of
that literal name and nobody else; in a DN each value is escaped per RFC 4514. The
variables are those of the sql store's queries: ``%u %n %d %s %r %l``, their
``%{user}`` forms, the ``L``/``U`` modifiers and ``%%``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from authbridge.passdb.sql_query import RequestContext

_SHORT = {"u": "user", "n": "username", "d": "domain", "s": "service", "r": "rip", "l": "lip"}
_VARIABLE = re.compile(r"%([LU]?)(?:\{([^}]*)\}|(.))")
_FILTER_SPECIAL = {"\\": r"\5c", "*": r"\2a", "(": r"\28", ")": r"\29", "\x00": r"\00"}
_DN_SPECIAL = frozenset(',+"\\<>;=')


def escape_filter(value: str) -> str:
    """RFC 4515: a value that a filter can only compare, never extend."""
    return "".join(_FILTER_SPECIAL.get(ch, ch) for ch in value)


def escape_dn(value: str) -> str:
    """RFC 4514: a value that stays one attribute value of one RDN."""
    out = []
    for i, ch in enumerate(value):
        if ch == "\x00":
            out.append(r"\00")
        elif ch in _DN_SPECIAL or (ch in " #" and i == 0) or (ch == " " and i == len(value) - 1):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def values_of(user: str, info: RequestContext | None) -> dict[str, str]:
    local, _, domain = user.partition("@")
    return {
        "user": user,
        "username": local,
        "domain": domain,
        "service": info.service if info is not None else "",
        "rip": (info.rip or "") if info is not None else "",
        "lip": (info.lip or "") if info is not None else "",
    }


def expand(template: str, values: dict[str, str], escape: Callable[[str], str]) -> str:
    """``template`` with each variable replaced by its escaped value (the names were
    checked when the configuration loaded; an unknown one is KeyError)."""

    def one(match: re.Match[str]) -> str:
        modifier, long, short = match.groups()
        if short == "%" and not modifier:
            return "%"
        value = values[long if long is not None else _SHORT[short]]
        if modifier == "L":
            value = value.lower()
        elif modifier == "U":
            value = value.upper()
        return escape(value)

    return _VARIABLE.sub(one, template)
