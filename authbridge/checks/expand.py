"""Dovecot 2.3 ``%`` variables in passdb extra-field values (``mail=/var/mail/%d/%n``).

Supported: ``%u`` / ``%{user}``, ``%n`` / ``%{username}``, ``%d`` / ``%{domain}``,
``%s`` / ``%{service}``, ``%r`` / ``%{rip}``, ``%l`` / ``%{lip}``, the ``L`` (lower) and
``U`` (upper) modifiers (``%Lu``), and ``%%``. Anything else is an error: Dovecot treats
an unknown variable as an internal failure, and so do we.
"""

from __future__ import annotations

from collections.abc import Mapping

from authbridge.errors import StoreError

_SHORT = {"u": "user", "n": "username", "d": "domain", "s": "service", "r": "rip", "l": "lip"}


class ExpansionError(StoreError, ValueError):
    """A ``%`` sequence that names no known variable."""


def variables(user: str, service: str, rip: str | None, lip: str | None) -> dict[str, str]:
    local, _, domain = user.partition("@")
    return {
        "user": user,
        "username": local,
        "domain": domain,
        "service": service,
        "rip": rip or "",
        "lip": lip or "",
    }


def expand(template: str, values: Mapping[str, str]) -> str:
    if "%" not in template:
        return template
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        i += 1
        modifier = ""
        while i < n and template[i] in "LU":
            modifier = template[i]
            i += 1
        if i >= n:
            raise ExpansionError("a lone % at the end of a value")
        if template[i] == "%" and not modifier:
            out.append("%")
            i += 1
            continue
        if template[i] == "{":
            end = template.find("}", i)
            if end < 0:
                raise ExpansionError("unterminated %{")
            name, i = template[i + 1 : end], end + 1
        else:
            name, i = _SHORT.get(template[i], ""), i + 1
        if name not in values:
            raise ExpansionError("unknown variable in an extra field")
        value = values[name]
        out.append(
            value.lower() if modifier == "L" else value.upper() if modifier == "U" else value
        )
    return "".join(out)
