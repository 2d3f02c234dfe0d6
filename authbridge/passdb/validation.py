"""Every entry of a store file checked when the file is read: the admin hears of an
entry that can never log in from the load, not from its user.

A problem is ``file:line: reason``; reasons name the user (a store's user names are not
secrets) but never the stored hash or password. What a problem does to the entry is the
store's business: a line with no usable user name is skipped (it never was reachable),
a user with a malformed password stays known, so a login is a plain failure.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from authbridge.core.usernames import InvalidUsername, UsernamePolicy
from authbridge.observability.logs import get_stdlib_logger
from authbridge.passdb.base import StoreFormatError
from authbridge.schemes import StoredPassword, wellformed

#: The logger of entry problems (``authbridge check`` lists them from the stores instead).
LOGGER = "authbridge.passdb.validation"
log = get_stdlib_logger(LOGGER)

BOM = "\ufeff"

#: Problems quoted in the one-line error of a strict load.
STRICT_QUOTED = 5
#: Problems logged one per line at each load; the rest are counted in one more line.
LOGGED = 100


@dataclass(frozen=True, slots=True)
class EntryProblem:
    """One entry that cannot work as written."""

    path: str
    line: int
    reason: str
    #: The user the line is for, when it names one a login could reach.
    user: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@functools.lru_cache(maxsize=8)
def _usual_name(usernames: UsernamePolicy) -> re.Pattern[str]:
    """Names ``usernames`` leaves as they are (but for case): checked in one match."""
    chars = "".join(sorted(usernames.allowed_chars))
    return re.compile(f"[{re.escape(chars)}]+" if chars else ".+", re.DOTALL)


@functools.lru_cache(maxsize=8)
def _usual_lines(usernames: UsernamePolicy) -> re.Pattern[bytes] | None:
    """Lines of a passwd-file-like store that are certainly fine for ``usernames``: a
    comment, an empty line, or a usual name (no rewrite by the policy) with a usual
    stored value (:func:`wellformed.usual_value_pattern`) and any further fields.

    ``None`` when the policy rewrites names (a default domain) or allows characters
    that are not ASCII: then every line is checked one by one.
    """
    chars = sorted(usernames.allowed_chars)
    if usernames.default_domain or not chars or not all(c.isascii() for c in chars):
        return None
    if usernames.lowercase:
        chars = [c for c in chars if c == c.lower()]
    name = b"[" + _ranges(chars) + b"]+"
    line = name + b":" + wellformed.usual_value_pattern() + rb"(?::[^\n]*)?\r?"
    one = rb"(?:#[^\n]*|" + line + rb")?"
    # The whole file in one match; the possessive repeat keeps no backtracking state,
    # so a 100k-line file costs no memory to check.
    return re.compile(rb"(?:" + one + rb"\n)*+" + one)


def _ranges(chars: list[str]) -> bytes:
    """A character class body for sorted ASCII ``chars``, runs written as ranges (a
    class of ranges matches faster than the same class of single characters)."""
    parts: list[bytes] = []
    codes = [ord(c) for c in chars]
    start = 0
    while start < len(codes):
        end = start
        while end + 1 < len(codes) and codes[end + 1] == codes[end] + 1:
            end += 1
        first, last = re.escape(chars[start]), re.escape(chars[end])
        if end - start >= 2:
            parts.append(f"{first}-{last}".encode("ascii"))
        else:
            parts.extend(re.escape(c).encode("ascii") for c in chars[start : end + 1])
        start = end + 1
    return b"".join(parts)


def all_lines_usual(data: bytes, usernames: UsernamePolicy) -> bool:
    """Whether every line of ``data`` is certainly fine (see :func:`_usual_lines`):
    one pass of a regular expression over the file instead of a check per line, which
    keeps a 100k-user file's load well under a second. ``False`` says nothing: the
    lines are then checked one by one."""
    usual = _usual_lines(usernames)
    return usual is not None and usual.fullmatch(data) is not None


def name_problem(name: str, usernames: UsernamePolicy) -> str | None:
    """Why a login can never reach the user ``name`` as stored, or ``None``."""
    if (
        not usernames.default_domain
        and _usual_name(usernames).fullmatch(name)
        and (not usernames.lowercase or name == name.lower())
    ):
        return None  # the usual case, without normalise's loop over the characters
    if not name:
        return "empty user name"
    if name.startswith(BOM):
        return f"user {name!r} starts with a UTF-8 byte order mark: it can never match"
    try:
        normalised = usernames.normalise(name)
    except InvalidUsername as exc:
        return f"user {name!r} can never log in: {exc}"
    if normalised != name:
        return (
            f"user {name!r} can never match: logins are looked up as {normalised!r}"
            " (write the name in lower case)"
        )
    return None


def password_problem(
    user: str, stored: StoredPassword | None, nopassword: bool = False
) -> str | None:
    """Why ``user``'s stored password can never verify, or ``None``.

    ``nopassword``: the entry accepts any password, so nothing stored needs to make sense.
    """
    if nopassword:
        return None
    if stored is None:
        return f"user {user!r} has no password field (no ':' after the name)"
    reason = wellformed.problem(stored)
    return None if reason is None else f"user {user!r}: {reason}"


def log_problems(store: str, problems: Sequence[EntryProblem]) -> None:
    """One warning per problem (at most :data:`LOGGED`), each ``file:line: reason``,
    and a count, so that every load of the file says it (the watcher's reloads too)."""
    for problem in problems[:LOGGED]:
        log.warning("invalid store entry", where=problem.where, reason=problem.reason)
    if problems:
        log.warning(
            "store has invalid entries",
            store=store,
            invalid_entries=len(problems),
            not_shown=max(0, len(problems) - LOGGED),
        )


def strict_error(name: str, problems: Iterable[EntryProblem]) -> StoreFormatError:
    """The error that refuses a store with invalid entries under ``--strict``."""
    found = list(problems)
    quoted = "; ".join(str(p) for p in found[:STRICT_QUOTED])
    more = f" (and {len(found) - STRICT_QUOTED} more)" if len(found) > STRICT_QUOTED else ""
    return StoreFormatError(
        f"{name}: {len(found)} invalid entr{'y' if len(found) == 1 else 'ies'} "
        f"refused by --strict: {quoted}{more}"
    )
