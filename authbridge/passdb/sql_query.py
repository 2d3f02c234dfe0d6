"""Dovecot-style ``password_query`` text turned into a parameterised statement.

Dovecot expands ``%u`` and friends into the SQL text after escaping them; authbridge
never puts request data into SQL text at all. Each variable becomes a driver
placeholder and its value travels as a bound parameter, so no username, however
strange, can change the statement.

Accepted: ``%u %n %d %s %r %l`` and ``%{user} %{username} %{domain} %{service}
%{rip} %{lip}``, the ``L``/``U`` case modifiers (``%Lu``) and ``%%`` for a literal
``%``. A variable written the Dovecot way, in quotes on its own (``'%u'``), becomes
one placeholder with the quotes dropped; a variable inside a longer string literal
(``'%n@example.org'``) is refused, because binding it would need string building in
SQL (write ``%n || '@example.org'`` instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from authbridge.errors import ConfigError

_SHORT = {"u": "user", "n": "username", "d": "domain", "s": "service", "r": "rip", "l": "lip"}
_NAMES = frozenset(_SHORT.values())
#: ``update_query`` (``[rehash]``) also binds the new hash (``%w``, ``%{password}``) and
#: the stored value the login verified (``%{old}``), so that a concurrent change wins.
UPDATE_NAMES = _NAMES | {"password", "old"}
_UPDATE_SHORT = {**_SHORT, "w": "password"}
#: Variables whose value depends on the request, not only on the user.
REQUEST_VARIABLES = frozenset({"service", "rip", "lip"})

Paramstyle = Literal["qmark", "format", "numeric"]


class QueryError(ConfigError):
    """A password_query that cannot be turned into a parameterised statement."""


class RequestContext(Protocol):
    """What a lookup may know about the request (authbridge.core.session.RequestInfo fits)."""

    @property
    def service(self) -> str: ...

    @property
    def rip(self) -> str | None: ...

    @property
    def lip(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    modifier: str = ""  # "", "L" or "U"

    def value(self, values: dict[str, str]) -> str:
        raw = values[self.name]
        if self.modifier == "L":
            return raw.lower()
        if self.modifier == "U":
            return raw.upper()
        return raw


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    """SQL text with placeholders only, and the variables bound to them in order."""

    sql: str
    variables: tuple[Variable, ...]

    @property
    def uses_request(self) -> bool:
        """True if the result may differ per client (``%s``, ``%r``, ``%l``)."""
        return any(v.name in REQUEST_VARIABLES for v in self.variables)

    def parameters(
        self,
        user: str,
        request: RequestContext | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[str, ...]:
        """The values bound to the placeholders; ``extra``: ``password`` and ``old`` of an
        update_query."""
        local, _, domain = user.partition("@")
        values = {
            **(extra or {}),
            "user": user,
            "username": local,
            "domain": domain,
            "service": request.service if request is not None else "",
            "rip": (request.rip or "") if request is not None else "",
            "lip": (request.lip or "") if request is not None else "",
        }
        return tuple(v.value(values) for v in self.variables)


def _read_variable(
    query: str,
    i: int,
    names: frozenset[str] = _NAMES,
    label: str = "password_query",
) -> tuple[Variable | None, int]:
    """Parse the variable whose ``%`` is at ``i``; (None, end) means a literal ``%%``."""
    short = _UPDATE_SHORT if "password" in names else _SHORT
    n = len(query)
    j = i + 1
    modifier = ""
    while j < n and query[j] in "LU":
        modifier = query[j]
        j += 1
    if j >= n:
        raise QueryError(f"{label}: a lone % at offset {i}")
    if query[j] == "%" and not modifier:
        return None, j + 1
    if query[j] == "{":
        end = query.find("}", j)
        if end < 0:
            raise QueryError(f"{label}: unterminated %{{ at offset {i}")
        name, j = query[j + 1 : end], end + 1
    else:
        name, j = short.get(query[j], f"%{query[j]}"), j + 1
    if name not in names:
        known = ", ".join(sorted(names))
        raise QueryError(f"{label}: unknown variable {name!r} (known: {known})")
    return Variable(name, modifier), j


def prepare(
    query: str,
    paramstyle: Paramstyle,
    names: frozenset[str] = _NAMES,
    label: str = "password_query",
) -> PreparedQuery:
    """Translate ``query``: ``qmark`` gives ``?`` (sqlite3), ``format`` ``%s`` (psycopg),
    ``numeric`` ``$1``, ``$2``... (libpq, PostgreSQL's own placeholders).

    ``names``: the variables allowed (:data:`UPDATE_NAMES` for an update_query, whose
    errors say ``label``)."""
    literal_percent = "%%" if paramstyle == "format" else "%"

    def placeholder() -> str:
        if paramstyle == "numeric":
            return f"${len(variables)}"
        return "?" if paramstyle == "qmark" else "%s"

    out: list[str] = []
    variables: list[Variable] = []
    i, n = 0, len(query)
    in_string = False
    while i < n:
        ch = query[i]
        if ch == "'":
            if in_string and i + 1 < n and query[i + 1] == "'":
                out.append("''")
                i += 2
                continue
            if not in_string and query.startswith("'%", i):
                # The Dovecot habit '%u': one whole quoted variable becomes a placeholder.
                var, end = _read_variable(query, i + 1, names, label)
                if var is not None and end < n and query[end] == "'":
                    variables.append(var)
                    out.append(placeholder())
                    i = end + 1
                    continue
            in_string = not in_string
            out.append(ch)
            i += 1
            continue
        if ch == "%":
            var, end = _read_variable(query, i, names, label)
            if var is None:
                out.append(literal_percent)
            elif in_string:
                raise QueryError(
                    f"{label}: a %-variable inside a longer quoted string cannot be "
                    "bound as a parameter; write it alone ('%u') or join in SQL (%n || '@x')"
                )
            else:
                variables.append(var)
                out.append(placeholder())
            i = end
            continue
        if ch == "?" and paramstyle == "qmark" and not in_string:
            raise QueryError(f"{label}: a bare ? outside a string (use %u and friends)")
        out.append(ch)
        i += 1
    if in_string:
        raise QueryError(f"{label}: unterminated string literal")
    return PreparedQuery("".join(out), tuple(variables))
