"""``authbridge app-password add|list|revoke``: per-device passwords of one user.

The user's store is the first of the config's stores that knows the user (the one a
login would use); its app passwords are where that store's ``app_passwords`` setting
points: a companion file (file stores) or the ``app_passwords`` table (sql stores).
``add`` prints a generated password once and stores only its hash; ``list`` never
shows a hash. A file is changed under its lock and replaced atomically, other lines
kept byte for byte; the daemon's watcher picks the change up within a second.
"""

from __future__ import annotations

import argparse
import calendar
import re
import secrets
import string
import sys
import time
from typing import Any

from authbridge.commands.defaults import config_path, default_config
from authbridge.config import Config, ConfigError, StoreConfig, load_config

EX_OK, EX_USAGE, EX_IOERR = 0, 2, 74
PROG = "authbridge app-password"

#: A generated password: 4 groups of 4 lowercase letters (about 75 bits).
GROUPS, GROUP_LENGTH = 4, 4
_DURATION = re.compile(r"([1-9][0-9]{0,5})([hdw])")
_UNIT = {"h": 3600, "d": 86400, "w": 7 * 86400}


class UsageError(Exception):
    """Bad input: one line, exit status 2."""


def generate_password() -> str:
    """Strong, typeable on a phone: ``abcd-efgh-ijkl-mnop`` from a CSPRNG."""
    letters = string.ascii_lowercase
    return "-".join(
        "".join(secrets.choice(letters) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS)
    )


def parse_expiry(text: str, now: float) -> float:
    """``90d``, ``12h``, ``2w`` from now, or a UTC date ``YYYY-MM-DD``; UsageError otherwise."""
    match = _DURATION.fullmatch(text)
    if match:
        return now + int(match.group(1)) * _UNIT[match.group(2)]
    try:
        when = float(calendar.timegm(time.strptime(text, "%Y-%m-%d")))
    except ValueError:
        raise UsageError(
            f"--expires {text!r}: expected a duration (90d, 12h, 2w) or a date YYYY-MM-DD"
        ) from None
    if when <= now:
        raise UsageError(f"--expires {text!r}: the date is in the past")
    return when


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="app_command", metavar="SUBCOMMAND", help="add, list or revoke"
    )
    sub.required = True
    add = sub.add_parser(
        "add",
        help="make an app password for USER and print it once",
        description="Make an app password for USER, print it once on standard output and "
        "store only its hash (the scheme of [app_passwords] scheme, default ARGON2ID).",
    )
    add.add_argument("user", help="the login name, as stored")
    add.add_argument(
        "--label", required=True, help="a name for the device, unique per user (e.g. phone)"
    )
    add.add_argument(
        "--service",
        help="the only services it works for, comma separated, matched against the "
        "request's service= (e.g. smtp; default: any)",
    )
    add.add_argument(
        "--expires",
        help="when it stops working: 90d, 12h, 2w from now, or a date YYYY-MM-DD (UTC); "
        "default: never",
    )
    listing = sub.add_parser(
        "list",
        help="list USER's app passwords (label, services, expiry, last use; never a hash)",
        description="List USER's app passwords: label, services, expiry and last use.",
    )
    listing.add_argument("user", help="the login name, as stored")
    revoke = sub.add_parser(
        "revoke",
        help="delete USER's app password LABEL",
        description="Delete USER's app password LABEL; the daemon stops accepting it "
        "at its next store reload (files: within a second; sql: at once).",
    )
    revoke.add_argument("user", help="the login name, as stored")
    revoke.add_argument("label", help="the label given to add")
    for each in (add, listing, revoke):
        each.add_argument(
            "--config",
            metavar="FILE",
            help=f"the daemon's configuration (default: {default_config()} when it exists)",
        )


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args.config)
        return _run(args, config)
    except (UsageError, ConfigError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EX_USAGE


def _config(given: str | None) -> Config:
    path = config_path(given)
    if path is None:
        raise UsageError(f"no configuration: {default_config()} does not exist; give --config FILE")
    try:
        return load_config(path)
    except ConfigError:
        raise
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _run(args: argparse.Namespace, config: Config) -> int:
    import trio

    from authbridge.errors import StoreError

    try:
        return int(trio.run(_command, args, config))
    except StoreError as exc:
        from authbridge.passdb.base import StoreFormatError

        if isinstance(exc, StoreFormatError):
            raise UsageError(str(exc)) from None
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EX_IOERR


async def _command(args: argparse.Namespace, config: Config) -> int:
    from authbridge.core.usernames import InvalidUsername, UsernamePolicy

    try:  # the name the daemon looks the user up with (lower case)
        args.user = UsernamePolicy().normalise(args.user)
    except InvalidUsername as exc:
        raise UsageError(f"user name: {exc}") from None
    store_config, store = await _users_store(config, args.user)
    try:
        source = store.app_passwords
        if args.app_command == "add":
            return await _add(args, config, store_config, source)
        if args.app_command == "list":
            return await _list(args.user, source)
        return await _revoke(args.user, args.label, source)
    finally:
        close = getattr(store, "aclose", None)
        if close is not None:
            await close()


async def _users_store(config: Config, user: str) -> tuple[StoreConfig, Any]:
    """The first store that knows ``user``, with its app passwords attached."""
    from authbridge.passdb import attach_app_passwords, open_file_store

    if not config.stores:
        raise UsageError(f"{config.source}: no [[store]] configured")
    for store_config in config.stores:
        store: Any
        if store_config.type == "ldap":
            continue  # the directory keeps its own passwords: no app passwords here
        if store_config.type == "sql":
            from authbridge.passdb.sql import open_sql_store

            store = open_sql_store(store_config)
        else:
            store = open_file_store(
                store_config.type, store_config.path, store_config.default_scheme
            )
            store.load()
        entry = await store.lookup(user)
        if entry is None:
            close = getattr(store, "aclose", None)
            if close is not None:
                await close()
            continue
        if not (store_config.app_password_file or store_config.app_password_queries):
            raise UsageError(
                f"user {user!r} is in {store.name}, which has no app passwords "
                "(set app_passwords in its [[store]])"
            )
        attach_app_passwords(store, store_config, config.app_passwords)
        return store_config, store
    raise UsageError(f"no store knows user {user!r}")


async def _add(
    args: argparse.Namespace, config: Config, store_config: StoreConfig, source: Any
) -> int:
    import trio

    from authbridge import schemes
    from authbridge.passdb import app_passwords as files

    label = args.label
    if not files.LABEL.fullmatch(label):
        raise UsageError(
            f"--label {label!r}: letters, digits, '.', '_' and '-', starting with a letter "
            "or digit, at most 64"
        )
    try:
        services = files.parse_services(args.service or "")
    except ValueError as exc:
        raise UsageError(f"--service: {exc}") from None
    now = time.time()
    expires = None if not args.expires else parse_expiry(args.expires, now)
    existing = await source.lookup(args.user)
    if any(entry.label == label for entry in existing):
        raise UsageError(f"user {args.user!r} already has an app password {label!r}")
    password = generate_password()
    value = await trio.to_thread.run_sync(
        schemes.generate, config.app_passwords.scheme, password.encode(), args.user
    )
    entry = files.AppPassword(args.user, label, schemes.parse_stored(value), services, expires)
    try:  # another add of the label may win the race since the lookup above
        if isinstance(source, files.AppPasswordFile):
            await trio.to_thread.run_sync(
                files.add, source.path, entry, value, store_config.default_scheme
            )
        else:
            await source.add(entry, value, now)
    except files.DuplicateLabel as exc:
        raise UsageError(str(exc)) from None
    print(password)
    scope = ",".join(services) or "any service"
    until = "never" if expires is None else _when(expires)
    print(
        f"{PROG}: added {label!r} for {args.user} ({scope}, expires {until}); "
        "the password is shown once, only its hash is stored",
        file=sys.stderr,
    )
    return EX_OK


async def _list(user: str, source: Any) -> int:
    from authbridge.passdb import app_passwords as files

    if isinstance(source, files.AppPasswordFile):
        entries = files.entries_with_use(source, user)
    else:
        entries = await source.lookup(user)
    now = time.time()
    rows = [("LABEL", "SERVICES", "EXPIRES", "LAST USED")]
    for entry in entries:
        expires = "never" if entry.expires is None else _when(entry.expires)
        if entry.expires is not None and entry.expires <= now:
            expires += " (expired)"
        used = "never" if entry.last_used is None else _when(entry.last_used)
        rows.append((entry.label, ",".join(entry.services) or "any", expires, used))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        print("  ".join([*padded, row[3]]))
    return EX_OK


async def _revoke(user: str, label: str, source: Any) -> int:
    import trio

    from authbridge.passdb import app_passwords as files

    if isinstance(source, files.AppPasswordFile):
        done = await trio.to_thread.run_sync(files.revoke, source.path, user, label)
    else:
        done = await source.revoke(user, label)
    if not done:
        raise UsageError(f"user {user!r} has no app password {label!r}")
    print(f"{PROG}: revoked {label!r} for {user}", file=sys.stderr)
    return EX_OK


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix))


__all__ = ["add_arguments", "generate_password", "parse_expiry", "run"]
