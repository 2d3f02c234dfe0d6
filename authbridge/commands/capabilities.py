"""``authbridge capabilities``: which mechanisms each user's stored password allows.

CRAM-MD5 and SCRAM need a plaintext-equivalent secret on the server: a user whose hash
is SHA512-CRYPT can log in with PLAIN or LOGIN but never with CRAM-MD5. Run this before
advertising a mechanism, and see who would be locked out.

Users who cannot log in at all are shown as such, never as usable: an entry the store's
load found invalid (``invalid`` and its ``file:line: reason``; lines with no usable user
are listed after the users) and a user disabled by ``nologin`` (``disabled`` and the
entry's ``reason=``). Neither counts in the summary.

With ``[rehash]`` enabled in the config, each weak user also shows what its next PLAIN
or LOGIN login does: ``rehash: to ARGON2ID``, or ``rehash: kept (CRAM-MD5 needs it)``
when an enabled mechanism needs the weak value and the target scheme cannot serve it;
the summary counts both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator

from authbridge import schemes
from authbridge.checks.rehash_policy import KEEP_FOR_MECHANISM, REHASH, RehashPolicy
from authbridge.commands.defaults import config_path, default_config
from authbridge.config import ConfigError, StoreConfig, load_config
from authbridge.passdb import FileStore, StoreFormatError, StoreUnavailable, open_file_store
from authbridge.passdb.base import PassdbEntry
from authbridge.passdb.validation import LOGGER as ENTRY_PROBLEMS_LOGGER

#: The mechanisms authbridge serves, in report order.
MECHANISM_ORDER = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="report on the stores of this config (default: /etc/authbridge/authbridge.toml "
        "when it exists and no --passwd-file/--exim-file is given)",
    )
    parser.add_argument(
        "--passwd-file",
        metavar="FILE",
        action="append",
        default=[],
        help="a Dovecot passwd-file to report on, after the config's stores (repeatable)",
    )
    parser.add_argument(
        "--exim-file",
        metavar="FILE",
        action="append",
        default=[],
        help="an Exim login:md5hash file to report on, after the config's stores (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per user")


def run(args: argparse.Namespace) -> int:
    stores: list[StoreConfig] = []
    path = args.config
    if not path and not args.passwd_file and not args.exim_file:
        path = config_path(None)  # /etc/authbridge/authbridge.toml if it exists
    rehash: RehashPolicy | None = None
    try:
        if path:
            config = load_config(path)
            stores.extend(config.stores)
            if config.rehash.enabled:
                rehash = RehashPolicy(config.rehash, config.server.mechanisms)
    except ConfigError as exc:
        print(f"authbridge: {exc}", file=sys.stderr)
        return 2
    stores += [StoreConfig("passwd-file", p) for p in args.passwd_file]
    stores += [StoreConfig("exim-file", p) for p in args.exim_file]
    if not stores:
        print(
            "authbridge: give --config, --passwd-file or --exim-file "
            f"({default_config()} does not exist)",
            file=sys.stderr,
        )
        return 2
    totals: Counter[str] = Counter()
    users = 0
    file_stores = [s for s in stores if s.type not in ("sql", "ldap")]
    for index, store_config in enumerate(stores):
        if store_config.type in ("sql", "ldap"):  # no user list: say so, never open "" as a file
            kind = f"an SQL store ({store_config.driver})"
            if store_config.ldap is not None:
                kind = f"an LDAP store ({store_config.ldap.description})"
            print(
                f"authbridge capabilities: {path}: store[{index}] is {kind} "
                f"whose users cannot be listed; authbridge check --config {path} queries it",
                file=sys.stderr,
            )
    if not file_stores:
        return 1
    invalid, disabled, lines = 0, 0, 0
    rehashed, kept = 0, 0
    for store_config in file_stores:
        store = open_file_store(store_config.type, store_config.path, store_config.default_scheme)
        try:
            with _problems_not_logged():  # reported below, with the users
                store.load()
        except (StoreFormatError, StoreUnavailable) as exc:
            print(f"authbridge: {exc}", file=sys.stderr)
            return 1
        shown: set[str] = set()
        for entry in sorted(store.entries(), key=lambda e: e.user):
            users += 1
            shown.add(entry.user)
            row, allowed = _row(store, entry)
            if row["status"] == "ok":
                totals.update(allowed)
                if rehash is not None and entry.password is not None:
                    what = _rehash(rehash, entry.password)
                    if what is not None:
                        row["rehash"] = what
                        rehashed += what.startswith("to ")
                        kept += what.startswith("kept")
            invalid += row["status"] == "invalid"
            disabled += row["status"] == "disabled"
            _print_row(row, args.json)
        for problem in store.problems:
            if problem.user is None or problem.user not in shown:
                lines += 1  # a line no login reaches (no user name, a repeat, dropped)
                row = {"store": store.name, "status": "invalid", "problem": str(problem)}
                _print_row(row, args.json)
    if not args.json:
        more = f"; {lines} more invalid lines" if lines else ""
        print(f"\n{users} users ({invalid} invalid, {disabled} disabled{more}):", file=sys.stderr)
        for mech in MECHANISM_ORDER:
            print(f"  {mech:<14} usable by {totals[mech]} of {users}", file=sys.stderr)
        if rehash is not None:
            print(
                f"  rehash         {rehashed} weak users move to {rehash.scheme} at their "
                f"next PLAIN/LOGIN login; {kept} keep a weak scheme an enabled mechanism "
                "needs",
                file=sys.stderr,
            )
    return 0


def _rehash(policy: RehashPolicy, stored: schemes.StoredPassword) -> str | None:
    """What ``[rehash]`` does at the user's next PLAIN/LOGIN login (``None``: nothing)."""
    decision = policy.decide(stored)
    if decision == REHASH:
        return f"to {policy.scheme}"
    if decision == KEEP_FOR_MECHANISM:
        needs = ", ".join(m for m in MECHANISM_ORDER if m in policy.needed_by(stored))
        return f"kept ({needs} needs it)"
    return None


def _row(store: FileStore, entry: PassdbEntry) -> tuple[dict[str, object], frozenset[str]]:
    """What one user can do: ``status`` ok, invalid (with ``problem``) or disabled
    (with the entry's ``reason``, if any); mechanisms as its stored scheme allows."""
    row: dict[str, object] = {"store": store.name, "user": entry.user}
    problem = store.invalid_entry(entry.user)
    if entry.password is None:
        row["scheme"], allowed = "(none)", frozenset[str]()
    else:
        row["scheme"] = entry.password.scheme
        allowed = frozenset() if problem else schemes.mechanisms_allowed(entry.password)
    row["mechanisms"] = [m for m in MECHANISM_ORDER if m in allowed]
    if problem is not None:
        row["status"], row["problem"] = "invalid", str(problem)
    elif entry.has("nologin"):
        row["status"], row["reason"] = "disabled", entry.field("reason") or ""
    else:
        row["status"] = "ok"
    return row, allowed


def _print_row(row: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row))
        return
    if "user" not in row:
        print(f"-\t-\t-\tinvalid: {row['problem']}")
        return
    mechanisms = " ".join(row["mechanisms"]) or "-"  # type: ignore[arg-type]
    line = f"{row['user']}\t{row['scheme']}\t{mechanisms}"
    if row["status"] == "invalid":
        line += f"\tinvalid: {row['problem']}"
    elif row["status"] == "disabled":
        line += "\tdisabled (nologin" + (f": {row['reason']})" if row["reason"] else ")")
    if "rehash" in row:
        line += f"\trehash: {row['rehash']}"
    print(line)


@contextlib.contextmanager
def _problems_not_logged() -> Iterator[None]:
    """The store's own warnings off: this report lists the same problems with the users."""
    logger = logging.getLogger(ENTRY_PROBLEMS_LOGGER)
    saved, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = saved
