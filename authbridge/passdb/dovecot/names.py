"""The user names of a Dovecot passdb: ``username_format`` and ``username_filter``.

Both are checked once when the config is read (:func:`format_problem`) and applied per
request by the chain, only for sites served from a dovecot.conf.
"""

from __future__ import annotations

import re
from functools import lru_cache

_SHORT = {"u": "user", "n": "username", "d": "domain"}
_VARIABLE = re.compile(r"%([LU]?)(?:\{([a-z]+)\}|(.))")


def format_problem(text: str) -> str | None:
    """Why ``text`` is not a username format authbridge can expand (``None``: it is)."""
    for match in _VARIABLE.finditer(text):
        modifier, long, short = match.groups()
        if short == "%" and not modifier:
            continue
        name = long if long is not None else _SHORT.get(short, "")
        if name not in _SHORT.values():
            shown = match.group(0)
            return f"variable {shown!r} is not supported (only %u, %n, %d, their %L/%U forms)"
    if "%" in _VARIABLE.sub("", text):
        return "a lone % at the end"
    return None


@lru_cache(maxsize=64)
def _parts(text: str) -> tuple[tuple[str, str, str], ...]:
    """``text`` as (literal, variable, modifier) pieces."""
    parts = []
    position = 0
    for match in _VARIABLE.finditer(text):
        modifier, long, short = match.groups()
        literal = text[position : match.start()]
        if short == "%" and not modifier:
            parts.append((literal + "%", "", ""))
        else:
            parts.append((literal, long or _SHORT[short], modifier))
        position = match.end()
    parts.append((text[position:], "", ""))
    return tuple(parts)


def expand(text: str, user: str) -> str:
    """``text`` with ``%u``, ``%n``, ``%d`` (and ``%Lu``...) of ``user`` put in."""
    if text == "%u":
        return user
    name, sep, domain = user.partition("@")
    values = {"user": user, "username": name, "domain": domain if sep else ""}
    out = []
    for literal, variable, modifier in _parts(text):
        out.append(literal)
        if variable:
            value = values[variable]
            out.append(value.lower() if modifier == "L" else value.upper() if modifier else value)
    return "".join(out)


def _pattern(text: str) -> re.Pattern[str]:
    wild = {"*": ".*", "?": "."}
    return re.compile("".join(wild.get(char) or re.escape(char) for char in text))


@lru_cache(maxsize=64)
def compile_filter(patterns: tuple[str, ...]) -> tuple[tuple[bool, re.Pattern[str]], ...]:
    """``username_filter`` words as (negated, pattern)."""
    return tuple(
        (word.startswith("!"), _pattern(word[1:] if word.startswith("!") else word))
        for word in patterns
    )


def accepted(patterns: tuple[str, ...], user: str) -> bool:
    """Dovecot's filter: a ``!pattern`` match refuses; when there are plain patterns,
    one must match."""
    positive = False
    matched = False
    for negated, pattern in compile_filter(patterns):
        if negated:
            if pattern.fullmatch(user):
                return False
        else:
            positive = True
            matched = matched or bool(pattern.fullmatch(user))
    return matched or not positive
