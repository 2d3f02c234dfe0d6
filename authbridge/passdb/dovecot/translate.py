"""A site's dovecot.conf turned into authbridge's configuration, or refused.

The passdbs become stores in their order, each with its Dovecot chaining rules
(:class:`~authbridge.config.PassdbRules`); the global auth settings become the
mechanisms, the plaintext policy and the user name rules. Whatever authbridge cannot
serve as Dovecot would is refused with a ConfigError naming the file, the line and
why: nothing is half-served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

from authbridge.config import (
    PASSDB_RULES,
    PASSDB_SKIPS,
    Config,
    PassdbRules,
    PolicyConfig,
    ServerConfig,
    StoreConfig,
)
from authbridge.core.mechanisms import REGISTRY as MECHANISMS
from authbridge.core.usernames import DEFAULT_USERNAME_CHARS, UsernamePolicy
from authbridge.errors import ConfigError
from authbridge.passdb.dovecot import names
from authbridge.passdb.dovecot.dbfile import (
    DEFAULT_PASSWORD_QUERY,
    SQL_IGNORED,
    SQL_USED,
    as_mapping,
    pgsql_dsn,
    read_args_file,
)
from authbridge.passdb.dovecot.doveconf import find_doveconf, read_with_doveconf
from authbridge.passdb.dovecot.syntax import Section, parse_file

#: Dovecot 2.3's defaults of the settings read here (``doveconf -a`` prints them; our
#: own parser needs them).
GLOBAL_DEFAULTS = {
    "auth_mechanisms": "plain",
    "auth_username_format": "%Lu",
    "auth_default_realm": "",
    "auth_username_chars": DEFAULT_USERNAME_CHARS,
    "auth_username_translation": "",
    "disable_plaintext_auth": "yes",
}
PASSDB_DEFAULTS = {
    "driver": "",
    "args": "",
    "name": "",
    "result_success": "return-ok",
    "result_failure": "continue",
    "result_internalfail": "continue",
    "skip": "never",
    "deny": "no",
    "master": "no",
    "pass": "no",
    "mechanisms": "",
    "username_filter": "",
    "default_fields": "",
    "override_fields": "",
    "auth_verbose": "default",
}
#: Drivers authbridge serves (ldap: through :func:`_ldap_store`).
DRIVERS = ("passwd-file", "sql", "ldap")
SQL_DRIVERS = {"pgsql": "postgresql", "sqlite": "sqlite"}
PASSWD_FILE_ARGS = ("scheme", "username_format")


class _Places:
    """Where each setting is written: our own parse of the files (doveconf's output has
    no lines). When that parse failed or found other passdbs, the main file is named."""

    def __init__(self, own: Section | None, main: str, passdbs: int) -> None:
        self.own = own
        self.main = main
        aligned = own is not None and len(own.children("passdb")) == passdbs
        self.passdbs = own.children("passdb") if own is not None and aligned else None

    def passdb(self, index: int, key: str | None = None) -> str:
        if self.passdbs is None:
            return self.main
        section = self.passdbs[index]
        setting = section.get(key) if key else None
        return setting.where if setting is not None else section.where

    def top(self, key: str) -> str:
        setting = self.own.get(key) if self.own is not None else None
        return setting.where if setting is not None else self.main


def load_dovecot_config(
    path: str | Path, doveconf: str | Literal["auto"] | None = "auto"
) -> Config:
    """The configuration a dovecot.conf gives: ``doveconf`` (found on PATH with
    ``"auto"``) reads it when installed, our own parser when not (or ``None``)."""
    path = Path(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    binary = find_doveconf() if doveconf == "auto" else doveconf
    own: Section | None = None
    try:
        own = parse_file(path)
    except ConfigError:
        if binary is None:
            raise
    tree = read_with_doveconf(path, binary) if binary is not None else own
    assert tree is not None
    places = _Places(own, str(path), len(tree.children("passdb")))
    return translate(tree, places, str(path))


def translate(tree: Section, places: _Places, source: str) -> Config:
    """``tree`` (doveconf's output or our parse) as a Config; ConfigError when refused."""
    passdbs = tree.children("passdb")
    if not passdbs:
        raise ConfigError(f"{source}: no passdb section: nothing to authenticate against")
    stores = tuple(_passdb(section, index, places) for index, section in enumerate(passdbs))

    def setting(key: str) -> str:
        return tree.value(key, GLOBAL_DEFAULTS.get(key, ""))

    return Config(
        server=ServerConfig(mechanisms=_mechanisms(setting("auth_mechanisms"), places)),
        stores=stores,
        policy=PolicyConfig(require_secured=_require_secured(tree, places)),
        source=source,
        usernames=_usernames(setting, places),
    )


def _mechanisms(text: str, places: _Places) -> tuple[str, ...]:
    wanted = tuple(word.lower() for word in text.replace(",", " ").split())
    if not wanted:
        raise ConfigError(f"{places.top('auth_mechanisms')}: auth_mechanisms: empty")
    for name in wanted:
        if name.upper() not in MECHANISMS:
            known = ", ".join(n.lower() for n in MECHANISMS)
            raise ConfigError(
                f"{places.top('auth_mechanisms')}: auth_mechanisms: {name} is not served "
                f"by authbridge (it serves {known})"
            )
    return wanted


def _require_secured(tree: Section, places: _Places) -> bool:
    """``disable_plaintext_auth`` (2.3), or 2.4's ``auth_allow_cleartext``, which wins."""
    allow = tree.get("auth_allow_cleartext")
    if allow is not None:
        return not _yes(allow.value, "auth_allow_cleartext", places.top("auth_allow_cleartext"))
    value = tree.value("disable_plaintext_auth", GLOBAL_DEFAULTS["disable_plaintext_auth"])
    return _yes(value, "disable_plaintext_auth", places.top("disable_plaintext_auth"))


def _usernames(setting: Callable[[str], str], places: _Places) -> UsernamePolicy:
    fmt = setting("auth_username_format")
    if fmt in ("%Lu", "%L{user}"):
        lowercase = True
    elif fmt in ("%u", "%{user}"):
        lowercase = False
    else:
        raise ConfigError(
            f"{places.top('auth_username_format')}: auth_username_format: {fmt!r} is not "
            "supported (only %u and %Lu)"
        )
    if setting("auth_username_translation"):
        raise ConfigError(
            f"{places.top('auth_username_translation')}: auth_username_translation: not supported"
        )
    return UsernamePolicy(
        allowed_chars=frozenset(setting("auth_username_chars")),
        lowercase=lowercase,
        default_domain=setting("auth_default_realm"),
    )


def _yes(value: str, key: str, where: str) -> bool:
    if value in ("yes", "no"):
        return value == "yes"
    raise ConfigError(f"{where}: {key}: expected yes or no, got {value!r}")


def _passdb(section: Section, index: int, places: _Places) -> StoreConfig:
    def value(key: str) -> str:
        return section.value(key, PASSDB_DEFAULTS.get(key, ""))

    def refuse(key: str | None, why: str) -> ConfigError:
        label = f"passdb {index + 1} ({value('driver') or 'no driver'})"
        shown = f" {key}:" if key else ""
        return ConfigError(f"{places.passdb(index, key)}: {label}:{shown} {why}")

    for setting in section.settings:
        if setting.key not in PASSDB_DEFAULTS:
            raise refuse(setting.key, "unknown passdb setting")
    if section.sections:
        raise refuse(None, f"unexpected section {section.sections[0].kind!r} in a passdb")
    if _yes(value("master"), "master", places.passdb(index, "master")):
        raise refuse("master", "master passdbs (master user logins) are not supported")
    for key in ("default_fields", "override_fields"):
        if value(key):
            raise refuse(key, "not supported")
    for key in ("result_success", "result_failure", "result_internalfail"):
        if value(key) not in PASSDB_RULES:
            raise refuse(key, f"{value(key)!r}: expected one of {', '.join(PASSDB_RULES)}")
    if value("skip") not in PASSDB_SKIPS:
        raise refuse("skip", f"{value('skip')!r}: expected one of {', '.join(PASSDB_SKIPS)}")
    driver = value("driver")
    if driver not in DRIVERS:
        why = f"driver {driver!r} is not supported (authbridge serves {', '.join(DRIVERS)})"
        raise refuse("driver", why if driver else "no driver")
    mechanisms = tuple(word.upper() for word in value("mechanisms").replace(",", " ").split())
    rules = PassdbRules(
        result_success=value("result_success"),
        result_failure=value("result_failure"),
        result_internalfail=value("result_internalfail"),
        skip=value("skip"),
        deny=_yes(value("deny"), "deny", places.passdb(index, "deny")),
        mechanisms=mechanisms,
        username_filter=tuple(value("username_filter").replace(",", " ").split()),
        where=places.passdb(index),
    )
    where = places.passdb(index, "args")
    if driver == "passwd-file":
        return _passwd_file(value("args"), rules, refuse)
    if driver == "sql":
        return _sql(value("args"), rules, where)
    return _ldap(value("args"), rules, where)


def _passwd_file(
    args: str, rules: PassdbRules, refuse: Callable[[str | None, str], ConfigError]
) -> StoreConfig:
    from authbridge.schemes import available_schemes  # only dovecot.conf sites pay

    options = {"scheme": "CRYPT", "username_format": "%u"}
    words = args.split()
    paths: list[str] = []
    for word in words:
        key, sep, setting = word.partition("=")
        if sep and key in PASSWD_FILE_ARGS and not paths:
            options[key] = setting
        else:
            paths.append(word)
    if len(paths) != 1:
        why = "expected [scheme=S] [username_format=F] PATH"
        raise refuse("args", f"{why}, got {args!r}" if args else why)
    path = paths[0]
    if "%" in path:
        raise refuse("args", f"{path}: a path with variables is not supported")
    if not Path(path).is_absolute():
        raise refuse("args", f"{path}: must be an absolute path")
    scheme = options["scheme"].upper()
    if scheme not in available_schemes():
        raise refuse("args", f"scheme={options['scheme']}: unknown scheme")
    problem = names.format_problem(options["username_format"])
    if problem is not None:
        raise refuse("args", f"username_format={options['username_format']}: {problem}")
    rules = replace(rules, username_format=options["username_format"])
    return StoreConfig("passwd-file", path, scheme, rules=rules)


def _sql(args: str, rules: PassdbRules, where: str) -> StoreConfig:
    from authbridge.passdb.sql_query import QueryError, prepare  # only SQL sites pay
    from authbridge.schemes import available_schemes

    db = read_args_file(args.strip(), where)
    for setting in db.settings:
        if setting.key not in SQL_USED | SQL_IGNORED:
            raise ConfigError(f"{setting.where}: {setting.key}: unknown sql setting")

    def place(key: str) -> str:
        setting = db.get(key)
        return setting.where if setting is not None else db.file

    driver = db.value("driver")
    if driver not in SQL_DRIVERS:
        why = f"{driver} is not supported" if driver else "not set"
        raise ConfigError(
            f"{place('driver')}: driver: {why} (authbridge speaks to PostgreSQL (pgsql) and "
            "SQLite (sqlite))"
        )
    connect = db.value("connect")
    if not connect:
        raise ConfigError(f"{place('connect')}: connect: not set")
    query = db.value("password_query", DEFAULT_PASSWORD_QUERY)
    try:
        prepare(query, "qmark")
    except QueryError as exc:
        raise ConfigError(f"{place('password_query')}: {exc}") from None
    scheme = db.value("default_pass_scheme", "MD5").upper()
    if scheme not in available_schemes():
        raise ConfigError(f"{place('default_pass_scheme')}: default_pass_scheme: unknown scheme")
    pool = 4
    if driver == "pgsql":
        connect, maxconns = pgsql_dsn(connect)
        pool = maxconns or pool
    return StoreConfig(
        "sql",
        default_scheme=scheme,
        driver=SQL_DRIVERS[driver],
        dsn=connect,
        password_query=query,
        pool_size=pool,
        rules=rules,
    )


def _ldap(args: str, rules: PassdbRules, where: str) -> StoreConfig:
    """An ldap passdb: its dovecot-ldap.conf.ext read as Dovecot's keys (errors name that
    file's line and key), served by the ldap store."""
    from authbridge.config_ldap import LdapSettings  # only LDAP sites pay

    db = read_args_file(args.strip(), where)
    lines = {setting.key: setting.line for setting in db.settings}
    settings = LdapSettings.from_dovecot(as_mapping(db), db.file, lines)
    return StoreConfig(
        "ldap", default_scheme=settings.default_pass_scheme, ldap=settings, rules=rules
    )


def with_dovecot_config(
    config: Config, path: str | Path, doveconf: str | Literal["auto"] | None = "auto"
) -> Config:
    """``config`` (the TOML file's, or the defaults) serving the passdbs of a dovecot.conf:
    its stores, mechanisms, plaintext policy and user name rules come from that file."""
    if config.stores:
        raise ConfigError(
            f"{config.source}: [[store]] tables cannot be combined with --dovecot-config "
            f"(the passdbs of {path} are the stores)"
        )
    site = load_dovecot_config(path, doveconf)
    return replace(
        config,
        stores=site.stores,
        server=replace(config.server, mechanisms=site.server.mechanisms),
        policy=replace(config.policy, require_secured=site.policy.require_secured),
        usernames=site.usernames,
        source=site.source if config.source == "<command line>" else config.source,
    )
