"""The args files of sql and ldap passdbs (``dovecot-sql.conf.ext``, ``dovecot-ldap.conf.ext``).

They are ``key = value`` lines in Dovecot's syntax (comments, ``\\`` continuation); a
``$`` in them is data (a password may hold one), so nothing is expanded.
"""

from __future__ import annotations

import re
from pathlib import Path

from authbridge.errors import ConfigError
from authbridge.passdb.dovecot.syntax import Section, parse_file

#: Dovecot 2.3's default ``password_query`` (used when the file sets none).
DEFAULT_PASSWORD_QUERY = (
    "SELECT username, domain, password FROM users WHERE username = '%n' AND domain = '%d'"
)
#: Keys of dovecot-sql.conf.ext that concern only userdb lookups or other tools.
SQL_IGNORED = frozenset({"user_query", "iterate_query", "userdb_warning_disable"})
SQL_USED = frozenset({"driver", "connect", "password_query", "default_pass_scheme"})
_WORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def read_args_file(path: str, where: str) -> Section:
    """The settings of an args file; ConfigError names the passdb's ``args`` line when
    the file cannot be read."""
    if not Path(path).is_absolute():
        raise ConfigError(f"{where}: args: {path!r} must be an absolute path")
    try:
        return parse_file(path, expand=False)
    except ConfigError as exc:
        raise ConfigError(f"{where}: args: {exc}") from None


def as_mapping(section: Section) -> dict[str, str]:
    """The file's settings as a dict (the last of a key wins)."""
    return {setting.key: setting.value for setting in section.settings}


def pgsql_dsn(connect: str) -> tuple[str, int | None]:
    """Dovecot's pgsql ``connect`` as a libpq connection string, and its ``maxconns``.

    Dovecot's own keys are taken out (``maxconns``); several ``host=`` (Dovecot's
    round-robin) become libpq's comma-separated host list."""
    hosts: list[str] = []
    words: list[str] = []
    maxconns = None
    for match in _WORD.finditer(connect):
        key, value = match.group(1), match.group(2)
        if key == "maxconns":
            maxconns = int(value) if value.isdigit() and int(value) > 0 else None
        elif key == "host":
            hosts.append(value)
        else:
            words.append(f"{key}={value}")
    if hosts:
        words.insert(0, "host=" + ",".join(hosts))
    return " ".join(words), maxconns
