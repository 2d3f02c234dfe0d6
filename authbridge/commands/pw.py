"""``authbridge pw``: make or check a password hash, modelled on ``doveadm pw``.

The output is a ``{SCHEME}…`` value for a passwd-file, in the exact form Dovecot's
``doveadm pw`` prints, so the same file works with Dovecot and with authbridge.
The password is taken from ``-p``, typed twice on a terminal (not echoed), or read as
one line from standard input; it is never printed.

Exit statuses are doveadm's, so scripts written for ``doveadm pw`` keep working: 0 on
success, 75 when ``-t`` finds a mismatch and for every failure doveadm reports as
fatal (unknown scheme, unusable hash, DIGEST-MD5 without ``-u``). Unlike doveadm, an
empty password is refused (status 2, as a bad input), and Ctrl-C ends even a long hash
at once (status 130, from the command line's handler).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from authbridge.commands.pw_rounds import rounds_warning
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
EXIT_BAD_INPUT = 2  # no password, an empty one, two entries that differ
EXIT_FAILURE = 75  # doveadm pw's status for a mismatch and for any fatal error
EXIT_MISMATCH = EXIT_FAILURE

T = TypeVar("T")


class PasswordInputError(Exception):
    """The password could not be read (no input, the two entries differ, empty)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        f"exit status: {EXIT_OK} success; {EXIT_FAILURE} password mismatch (-t), unknown "
        f"scheme or unusable hash (as doveadm pw); {EXIT_BAD_INPUT} bad usage, no or empty "
        "password; 130 interrupted"
    )
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
        "prefer the prompt or standard input); an empty one is refused",
    )
    parser.add_argument(
        "-u", "--user", default="", help="user name (needed for DIGEST-MD5; default none)"
    )
    parser.add_argument(
        "-r",
        "--rounds",
        type=int,
        metavar="N",
        help="cost: rounds / iterations / bcrypt cost (default: the scheme's, as doveadm); "
        "a value out of the scheme's range is clamped, with a warning",
    )
    parser.add_argument(
        "-t",
        "--test",
        metavar="HASH",
        help="verify the password against HASH instead of making one; exit 0 on a match, "
        f"{EXIT_FAILURE} on a mismatch or if HASH is unusable",
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
        password = _argv_bytes(args.password)
    elif sys.stdin.isatty():
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


def interruptible(work: Callable[[], T]) -> T:
    """Run ``work`` in a thread so that Ctrl-C reaches us while a C hash runs for long.

    Python handles a signal only between bytecodes of the main thread; a bcrypt of cost
    31 is one C call of hours. The hash libraries release the GIL, so the main thread
    waits on the worker and a KeyboardInterrupt ends the command at once (the worker is
    a daemon thread and dies with the process).
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the main thread below
            failure.append(exc)

    worker = threading.Thread(target=target, name="pw-hash", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _test(args: argparse.Namespace) -> int:
    stored = parse_stored(args.test)
    password = read_password(args, confirm=False)
    if interruptible(lambda: verify_password(stored, password, args.user)):
        print(f"{args.test} (verified)")
        return EXIT_OK
    print("authbridge pw: password mismatch", file=sys.stderr)
    return EXIT_MISMATCH


def _generate(args: argparse.Namespace) -> int:
    warning = rounds_warning(args.scheme, args.rounds)
    if warning is not None:
        print(f"authbridge pw: warning: {warning}", file=sys.stderr)
    password = read_password(args, confirm=True)
    value = interruptible(lambda: generate(args.scheme, password, args.user, args.rounds))
    if args.verify:
        if not interruptible(lambda: verify_password(parse_stored(value), password, args.user)):
            print("authbridge pw: the new hash does not verify (bug)", file=sys.stderr)
            return EXIT_FAILURE
        value += " (verified)"
    print(value)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(" ".join(available_schemes()))
        return EXIT_OK
    try:
        return _test(args) if args.test is not None else _generate(args)
    except SchemeError as exc:
        print(f"authbridge pw: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except PasswordInputError as exc:
        print(f"authbridge pw: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EOFError:
        print("authbridge pw: no password given", file=sys.stderr)
        return EXIT_BAD_INPUT
