"""``authbridge check [--config FILE]``: what ``exim -bV`` and ``postfix check`` are to
their daemons, run before ``systemctl reload authbridge``.

It loads the configuration and every store the way ``serve`` does (file stores parsed
in full; SQL stores connected, with the password query run for a user that cannot
exist), binds no socket, and prints a summary: stores, user counts, mechanisms and who
can use them, disabled users, warnings. Exit status: 0 everything loads, 1 problems
found (a store that cannot be read or queried, an invalid entry, warnings, an enabled
mechanism nobody can use), 2 the configuration itself is unusable (missing, unreadable,
invalid).

An invalid store entry (unknown scheme, malformed hash, a user name no login can reach,
...) is a warning for ``serve`` and an error here, as for ``serve --strict``: each is
listed as ``problem: file:line: reason``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from authbridge import schemes
from authbridge.checks.policy import Gates, PolicyGate
from authbridge.commands.defaults import config_path, default_config
from authbridge.config import (
    Config,
    ConfigError,
    OAuthSettings,
    PassdbRules,
    StoreConfig,
    load_config,
)
from authbridge.config_ldap import LdapSettings
from authbridge.core.mechanisms import OAUTH_MECHANISMS
from authbridge.passdb import (
    PasswdFileStore,
    StoreFormatError,
    StoreUnavailable,
    open_file_store,
)
from authbridge.passdb.base import PassdbEntry
from authbridge.passdb.dovecot.translate import with_dovecot_config
from authbridge.passdb.validation import LOGGER as ENTRY_PROBLEMS_LOGGER

EX_OK = 0
EX_PROBLEMS = 1
EX_CONFIG = 2

#: Looked up in every SQL store: no real login name has this shape.
PROBE_USER = "authbridge-check-probe@nonexistent.invalid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration to check (default: /etc/authbridge/authbridge.toml)",
    )
    parser.add_argument(
        "--dovecot-config",
        metavar="FILE",
        help="check the passdbs of a Dovecot config as serve --dovecot-config would serve "
        "them (with --config: that file's other settings)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.lines.append(text)

    def problem(self, text: str) -> None:
        self.problems.append(text)


class _Collect(logging.Handler):
    """Warnings the store loaders log (duplicate users, bad entries), kept as text."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == ENTRY_PROBLEMS_LOGGER:
            return  # listed in full from each store's problems
        try:
            self.messages.append(record.getMessage().splitlines()[0])
        except Exception:  # a malformed log call must not stop the check
            self.messages.append(f"{record.name}: {record.msg!s}")


@contextmanager
def store_warnings_as_problems(report: Report) -> Iterator[None]:
    """The warnings store loaders log (duplicates, bad entries) become problems, once.

    Only here: the "authbridge" loggers stop propagating while stores load, so the
    warnings are not also printed as log lines, and are restored afterwards.
    """
    collector = _Collect()
    root = logging.getLogger("authbridge")
    saved = (root.propagate, root.level)
    root.addHandler(collector)
    root.propagate = False
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(collector)
        root.propagate, level = saved
        root.setLevel(level)
        for message in collector.messages:
            report.problem(message)


def run(args: argparse.Namespace) -> int:
    dovecot = getattr(args, "dovecot_config", None)
    if dovecot:
        return _run_dovecot(args, dovecot)
    path = config_path(args.config)
    if path is None:
        print(
            f"authbridge check: error: no configuration: {default_config()} does not exist; "
            "give --config FILE",
            file=sys.stderr,
        )
        return EX_CONFIG
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"authbridge check: error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except OSError as exc:  # a directory, a device...
        print(f"authbridge check: error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EX_CONFIG
    report = check(config, path)
    _print(report, sys.stdout, args.quiet)  # a closed stdout: cli.main exits 141 quietly
    return EX_PROBLEMS if report.problems else EX_OK


def _run_dovecot(args: argparse.Namespace, dovecot: str) -> int:
    """``check --dovecot-config``: the dovecot.conf translated (or refused), then every
    store checked as for a TOML configuration."""
    try:
        config = load_config(args.config) if args.config else Config(source="<command line>")
        config = with_dovecot_config(config, dovecot)
    except ConfigError as exc:
        print(f"authbridge check: error: {exc}", file=sys.stderr)
        return EX_CONFIG
    report = check(config, dovecot)
    for index, store in enumerate(config.stores):
        if store.rules is not None:
            report.lines.insert(
                2 + index, f"passdb {index + 1}: {_describe(store)} ({store.rules.where})"
            )
    _print(report, sys.stdout, args.quiet)
    return EX_PROBLEMS if report.problems else EX_OK


def _describe(store: StoreConfig) -> str:
    """One passdb as served: the store and the rules that differ from Dovecot's defaults."""
    rules = store.rules
    what = store.path if store.type != "sql" else f"sql:{store.driver}"
    if store.ldap is not None:  # its URIs and mode; never dn or dnpass
        what = " ".join(store.ldap.uris) + (" auth_bind" if store.ldap.auth_bind else "")
    parts = [f"{store.type} {what}"]
    if rules is not None:
        default = PassdbRules()
        for name in ("result_success", "result_failure", "result_internalfail", "skip"):
            if getattr(rules, name) != getattr(default, name):
                parts.append(f"{name}={getattr(rules, name)}")
        if rules.deny:
            parts.append("deny")
        if rules.username_format != "%u":
            parts.append(f"username_format={rules.username_format}")
    return " ".join(parts)


def _print(report: Report, out: TextIO, quiet: bool) -> None:
    if not quiet:
        for line in report.lines:
            out.write(line + "\n")
    for problem in report.problems:
        out.write(f"problem: {problem}\n")
    if report.problems:
        out.write(f"{len(report.problems)} problem(s) found\n")
    elif not quiet:
        out.write("ok: the configuration and every store load\n")
    out.flush()


def check(config: Config, path: str) -> Report:
    report = Report()
    report.info(f"config: {path}")
    srv = config.server
    report.info(f"socket: {srv.socket_path} (not bound by check)")
    for listen in srv.tcp_listen:
        report.info(f"tcp: {listen} (not bound by check)")
    policy = config.policy
    report.info(
        "policy: "
        + ", ".join(
            [
                "plaintext only when secured" if policy.require_secured else "plaintext anywhere",
                f"failure_delay {policy.failure_delay:g} s",
                "nologin refused" if policy.nologin_refuses else "nologin answered OK",
                "Dovecot 2.4 level for 2.4 clients" if policy.protocol_24 else "Dovecot 2.3 level",
            ]
        )
    )
    _report_services(config, report)
    if not config.stores and not config.oauth.enabled:
        report.problem("no [[store]]: every login would fail")
    allowed: Counter[str] = Counter()
    users = 0
    with store_warnings_as_problems(report):
        for store_config in config.stores:
            if store_config.type == "sql":
                _check_sql(store_config, report)
                continue
            if store_config.ldap is not None:
                _check_ldap(store_config.ldap, report)
                continue
            entries = _check_file(store_config, report)
            if store_config.rules is not None and store_config.rules.deny:
                continue  # a deny list: its users log in nowhere
            users += len(entries)
            _tally(entries, allowed, report, store_config.path)
    if config.penalty.enabled and config.penalty.backend == "redis":
        _check_redis(config.penalty.redis_url, config.penalty.redis_timeout, report)
    enabled = [m.upper() for m in srv.mechanisms]
    report.info(f"mechanisms: {' '.join(enabled)}")
    oauth = config.oauth
    if oauth.enabled:
        ways = [f"JWT with the keys of {oauth.jwks_url}"] if oauth.jwks_url else []
        ways += [f"introspection at {oauth.introspection_url}"] if oauth.introspection_url else []
        report.info(f"oauth: {', '.join(ways)}; user from {oauth.username_attribute!r}")
        _check_oauth(oauth, report)
    if users:
        for mech in enabled:
            if mech in OAUTH_MECHANISMS:
                continue  # the provider vouches for the user, not a stored scheme
            report.info(f"  {mech:<14} usable by {allowed[mech]} of {users} file-store users")
            if allowed[mech] == 0 and not any(s.type in ("sql", "ldap") for s in config.stores):
                report.problem(
                    f"mechanism {mech} is enabled but no user's stored scheme allows it "
                    "(see authbridge capabilities)"
                )
    return report


def _report_services(config: Config, report: Report) -> None:
    """The effective gates per service: ``*`` for every service without a table."""
    for name, gates in PolicyGate(config.policy).effective():
        report.info(f"  service {name}: {describe_gates(gates, config.penalty.enabled)}")


def describe_gates(gates: Gates, penalty_enabled: bool) -> str:
    """One line of a service's gates, as ``authbridge check`` shows them."""
    networks = " ".join(gates.allowed_networks) if gates.allowed_networks else "any"
    no_rip = (
        ""
        if not gates.allowed_networks
        else (", no rip allowed" if gates.allow_no_rip else ", no rip refused")
    )
    return ", ".join(
        [
            "plaintext only when secured" if gates.require_secured else "plaintext anywhere",
            f"networks {networks}{no_rip}",
            "penalty on" if gates.penalty and penalty_enabled else "penalty off",
            f"failure_delay {gates.failure_delay:g} s",
        ]
    )


def _check_file(store_config: StoreConfig, report: Report) -> list[PassdbEntry]:
    store = open_file_store(store_config.type, store_config.path, store_config.default_scheme)
    if store_config.rules is not None and isinstance(store, PasswdFileStore):
        store.names_only = store_config.rules.deny  # a deny list: only its names count
    try:
        count = store.load()
    except (StoreUnavailable, StoreFormatError) as exc:
        report.problem(f"store {store.name}: {exc}")
        return []
    except OSError as exc:
        report.problem(f"store {store.name}: cannot read: {exc.strerror}")
        return []
    invalid = f", {len(store.problems)} invalid entries" if store.problems else ""
    report.info(f"store {store.name}: {count} users{invalid}")
    if store_config.app_password_file:
        _check_app_passwords(store_config, report)
    for problem in store.problems:
        report.problem(str(problem))
    unusable = {p.user for p in store.problems if p.user is not None}
    return [entry for entry in store.entries() if entry.user not in unusable]


def _check_app_passwords(store_config: StoreConfig, report: Report) -> None:
    """The store's companion file of app passwords loads (a bad line: its file:line)."""
    from authbridge.passdb.app_passwords import AppPasswordFile

    source = AppPasswordFile(Path(store_config.app_password_file), store_config.default_scheme)
    try:
        count = source.load()
    except (StoreUnavailable, StoreFormatError) as exc:
        report.problem(f"app passwords: {exc}")
        return
    except OSError as exc:
        report.problem(f"app passwords {source.path}: cannot read: {exc.strerror}")
        return
    report.info(f"{source.name}: {count} app passwords")


def _tally(entries: list[PassdbEntry], allowed: Counter[str], report: Report, path: str) -> None:
    """Mechanisms of the usable entries (invalid ones are problems already)."""
    disabled: list[str] = []
    for entry in entries:
        if entry.has("nologin"):
            reason = entry.field("reason")
            disabled.append(entry.user + (f" ({reason})" if reason else ""))
        if entry.password is None:
            continue
        allowed.update(schemes.mechanisms_allowed(entry.password))
    if disabled:
        report.info(f"  disabled (nologin): {', '.join(disabled)}")


def _check_redis(url: str, timeout: float, report: Report) -> None:
    """One read, as before each check: serve would run, on local state, without it."""
    import trio

    from authbridge.checks.resp import RespReader

    where = url.split("@")[-1].split("?")[0]  # never the password
    where = where if "://" in where else url.split("://")[0] + "://" + where

    async def probe() -> None:
        reader = RespReader(url)
        try:
            with trio.fail_after(max(timeout, 1.0)):
                await reader.mget(["authbridge-check-probe"])
        finally:
            await reader.close()

    try:
        trio.run(probe)
    except Exception as exc:  # one line, never a traceback (nor the URL's password)
        kind = "no answer in time" if isinstance(exc, trio.TooSlowError) else type(exc).__name__
        report.problem(
            f"penalty: Redis at {where} does not answer ({kind}): serve would count "
            "failures on local state until it does"
        )
    else:
        report.info(f"penalty: shared on Redis at {where} (answers)")


def _check_oauth(settings: OAuthSettings, report: Report) -> None:
    """The provider as serve would meet it: the JWKS fetched once (keys counted), the
    introspection endpoint asked about a token that is not one (a definite answer,
    ``active: false``, also proves the client credentials)."""
    import trio

    from authbridge.checks.oauth import TokenValidator
    from authbridge.checks.oauth_result import UNAVAILABLE

    async def probe() -> None:
        validator = TokenValidator(settings)
        try:
            keys = validator.keys
            if keys is not None:
                why: str | None = "no answer in time"
                with trio.move_on_after(settings.timeout + 1):
                    why = await keys.probe()
                if why is None:
                    report.info(f"oauth: JWKS at {keys.url} answers ({len(keys.keys)} keys)")
                else:
                    report.problem(
                        f"oauth: JWKS at {keys.url} unusable ({why}): JWT logins would get "
                        "a temporary failure"
                    )
            look = validator.introspection
            if look is not None:
                url = settings.introspection_url
                why = "no answer in time"
                with trio.move_on_after(settings.timeout + 1):
                    result = await look.check(b"authbridge-check-probe")
                    why = result.why if result.outcome == UNAVAILABLE else None
                if why is None:
                    report.info(f"oauth: introspection at {url} answers")
                else:
                    report.problem(
                        f"oauth: introspection at {url} unusable ({why}): introspected "
                        "logins would get a temporary failure"
                    )
        finally:
            await validator.aclose()

    trio.run(probe)


def _check_sql(store_config: StoreConfig, report: Report) -> None:
    label = f"sql:{store_config.driver}"
    if store_config.driver == "sqlite" and not Path(store_config.dsn).is_file():
        # checking must not create an empty database where the real one belongs
        report.problem(f"store {label}: database {store_config.dsn} does not exist")
        return
    try:
        import trio

        from authbridge.passdb.sql import open_sql_store
    except ImportError as exc:
        report.problem(f"store {label}: {exc.name} is not installed (pip install authbridge[sql])")
        return

    async def probe() -> str:
        store = open_sql_store(store_config)
        try:
            entry = await store.lookup(PROBE_USER)
        finally:
            await store.aclose()
        return store.name if entry is None else f"{store.name} (the probe user exists!)"

    try:
        name = trio.run(probe)
    except ImportError as exc:
        report.problem(f"store {label}: {exc.name} is not installed (pip install authbridge[sql])")
    except (StoreUnavailable, StoreFormatError, ConfigError) as exc:
        report.problem(f"store {label}: {exc}")
    except Exception as exc:  # a driver's surprise: one line, never its traceback
        first = (str(exc).splitlines() or [""])[0]
        report.problem(f"store {label}: {type(exc).__name__}: {first}")
    else:
        report.info(f"store {name}: connected; password_query ran for a non-existent user")


def _check_ldap(settings: LdapSettings, report: Report) -> None:
    """Connect (binding as ``dn``), read the base, run ``pass_filter`` for a user that
    does not exist; the messages are libldap's, never ``dnpass``."""
    from authbridge.passdb.ldap import ldap_driver_problem

    label = settings.description
    problem = ldap_driver_problem()
    if problem is not None:
        report.problem(f"store {label}: {problem}")
        return
    import trio

    from authbridge.passdb.ldap import open_ldap_store

    async def probe() -> str:
        store = open_ldap_store(settings)
        try:
            entry = await store.probe(PROBE_USER)
        finally:
            await store.aclose()
        if settings.auth_bind_userdn:
            return "connected; auth_bind_userdn: users are checked by their bind"
        if entry is not None:
            return "connected; pass_filter found the probe user (it should not exist!)"
        return "connected; pass_filter ran for a non-existent user"

    try:
        said = trio.run(probe)
    except (StoreUnavailable, StoreFormatError, ConfigError) as exc:
        report.problem(f"store {exc}" if str(exc).startswith(label) else f"store {label}: {exc}")
    except Exception as exc:  # a driver's surprise: one line, never its traceback
        first = (str(exc).splitlines() or [""])[0]
        report.problem(f"store {label}: {type(exc).__name__}: {first}")
    else:
        mode = "auth_bind" if settings.auth_bind else "password lookup"
        report.info(f"store {label} ({mode}): {said}")
