"""``authbridge capabilities``: which mechanisms each user's stored password allows.

CRAM-MD5 and SCRAM need a plaintext-equivalent secret on the server: a user whose hash
is SHA512-CRYPT can log in with PLAIN or LOGIN but never with CRAM-MD5. Run this before
advertising a mechanism, and see who would be locked out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from authbridge import schemes
from authbridge.commands.defaults import config_path, default_config
from authbridge.config import ConfigError, StoreConfig, load_config
from authbridge.passdb import StoreFormatError, StoreUnavailable, open_file_store

#: The mechanisms authbridge serves, in report order.
MECHANISM_ORDER = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="report on the stores of this config (default: /etc/authbridge/authbridge.toml "
        "when it exists and no --passwd-file/--exim-file is given)",
    )
    parser.add_argument("--passwd-file", metavar="FILE", action="append", default=[])
    parser.add_argument("--exim-file", metavar="FILE", action="append", default=[])
    parser.add_argument("--json", action="store_true", help="one JSON object per user")


def run(args: argparse.Namespace) -> int:
    stores: list[StoreConfig] = []
    path = args.config
    if not path and not args.passwd_file and not args.exim_file:
        path = config_path(None)  # /etc/authbridge/authbridge.toml if it exists
    try:
        if path:
            stores.extend(load_config(path).stores)
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
    file_stores = [s for s in stores if s.type != "sql"]
    for index, store_config in enumerate(stores):
        if store_config.type == "sql":  # no user list to walk: say so, never open "" as a file
            print(
                f"authbridge capabilities: {path}: store[{index}] is an SQL store "
                f"({store_config.driver}) whose users cannot be listed; "
                f"authbridge check --config {path} queries it",
                file=sys.stderr,
            )
    if not file_stores:
        return 1
    for store_config in file_stores:
        store = open_file_store(store_config.type, store_config.path, store_config.default_scheme)
        try:
            store.load()
        except (StoreFormatError, StoreUnavailable) as exc:
            print(f"authbridge: {exc}", file=sys.stderr)
            return 1
        for entry in sorted(store.entries(), key=lambda e: e.user):
            user = entry.user
            users += 1
            if entry.password is None:
                scheme, allowed = "(none)", frozenset[str]()
            else:
                scheme = entry.password.scheme
                known = scheme.upper().split(".")[0] in schemes.available_schemes()
                allowed = schemes.mechanisms_allowed(entry.password) if known else frozenset()
                if not known:
                    scheme += " (unknown scheme)"
            totals.update(allowed)
            ordered = [m for m in MECHANISM_ORDER if m in allowed]
            if args.json:
                print(
                    json.dumps(
                        {"store": store.name, "user": user, "scheme": scheme, "mechanisms": ordered}
                    )
                )
            else:
                print(f"{user}\t{scheme}\t{' '.join(ordered) or '-'}")
    if not args.json:
        print(f"\n{users} users:", file=sys.stderr)
        for mech in MECHANISM_ORDER:
            print(f"  {mech:<14} usable by {totals[mech]} of {users}", file=sys.stderr)
    return 0
