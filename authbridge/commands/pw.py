"""``authbridge pw``: make or check a password hash, modelled on ``doveadm pw``.

The output is a ``{SCHEME}…`` value for a passwd-file, in the exact form Dovecot's
``doveadm pw`` prints, so the same file works with Dovecot and with authbridge.
The password is taken from ``-p``, typed twice on a terminal (not echoed), or read as
one line from standard input; it is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from authbridge.schemes import (
    SchemeError,
    available_schemes,
    generate,
    parse_stored,
    verify_password,
)

# Memory-hard, no 72-byte limit, and verified by Dovecot 2.3 (libsodium builds) and 2.4.
DEFAULT_SCHEME = "ARGON2ID"

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_ERROR = 2


class PasswordInputError(Exception):
    """The password could not be read (no input, the two entries differ, empty)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--scheme",
        default=DEFAULT_SCHEME,
        help=f"password scheme, case-insensitive, optional .b64/.hex (default {DEFAULT_SCHEME})",
    )
    parser.add_argument(
        "-p",
        "--password",
        metavar="PASS",
        help="the password (visible to other local users in the process list; "
        "prefer the prompt or standard input)",
    )
    parser.add_argument("-u", "--user", default="", help="user name (needed for DIGEST-MD5)")
    parser.add_argument(
        "-r", "--rounds", type=int, metavar="N", help="cost: rounds / iterations / bcrypt cost"
    )
    parser.add_argument(
        "-t",
        "--test",
        metavar="HASH",
        help="verify the password against HASH instead of making one; exit 0 on a match, "
        f"{EXIT_MISMATCH} on a mismatch, {EXIT_ERROR} if HASH is unusable",
    )
    parser.add_argument(
        "-V", "--verify", action="store_true", help="verify the new hash and say so"
    )
    parser.add_argument("-l", "--list", action="store_true", help="list the known schemes")


def _argv_bytes(text: str) -> bytes:
    # argv was decoded with surrogateescape; this gives back the exact bytes typed.
    return os.fsencode(text)


def read_password(args: argparse.Namespace, confirm: bool) -> bytes:
    if args.password is not None:
        return _argv_bytes(args.password)
    if sys.stdin.isatty():
        if confirm:
            first = getpass.getpass("Enter new password: ")
            if getpass.getpass("Retype new password: ") != first:
                raise PasswordInputError("passwords don't match")
        else:
            first = getpass.getpass("Enter password to verify: ")
        password = first.encode("utf-8", "surrogateescape")
    else:
        line = sys.stdin.buffer.readline()
        if not line:
            raise PasswordInputError("no password on standard input")
        password = line.removesuffix(b"\n").removesuffix(b"\r")
    if confirm and not password:
        raise PasswordInputError("empty passwords are not allowed")
    return password


def _test(args: argparse.Namespace) -> int:
    stored = parse_stored(args.test)
    password = read_password(args, confirm=False)
    if verify_password(stored, password, args.user):
        print(f"{args.test} (verified)")
        return EXIT_OK
    print("authbridge pw: password mismatch", file=sys.stderr)
    return EXIT_MISMATCH


def _generate(args: argparse.Namespace) -> int:
    password = read_password(args, confirm=True)
    value = generate(args.scheme, password, args.user, args.rounds)
    if args.verify:
        if not verify_password(parse_stored(value), password, args.user):
            print("authbridge pw: the new hash does not verify (bug)", file=sys.stderr)
            return EXIT_ERROR
        value += " (verified)"
    print(value)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(" ".join(available_schemes()))
        return EXIT_OK
    try:
        return _test(args) if args.test is not None else _generate(args)
    except (SchemeError, PasswordInputError) as exc:
        print(f"authbridge pw: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (EOFError, KeyboardInterrupt):
        print("authbridge pw: no password given", file=sys.stderr)
        return EXIT_ERROR
