"""The one table of password schemes. Adding a scheme = one ``register(Scheme(...))`` line."""

from __future__ import annotations

from authbridge.schemes._core import Scheme, SchemeError, StoredPassword

_SCHEMES: dict[str, Scheme] = {}


def register(entry: Scheme) -> None:
    name = entry.name.upper()
    if name in _SCHEMES:
        raise ValueError(f"password scheme {name} registered twice")
    _SCHEMES[name] = entry


def names() -> list[str]:
    return sorted(_SCHEMES)


def get(name: str) -> Scheme | None:
    return _SCHEMES.get(name.upper())


def lookup(stored: StoredPassword) -> Scheme:
    entry = _SCHEMES.get(stored.scheme.upper())
    if entry is None:
        raise SchemeError(f"unknown password scheme {stored.scheme!r}")
    return entry
