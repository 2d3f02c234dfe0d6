"""Command-line entry point: one sub-command per module, imported only when used.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; keeping
the imports lazy means ``authbridge pw`` never pays for trio and the server never pays
for the config emitters.

No traceback reaches a user: :func:`main` is the last line of defence, and every way out
of it is one line on stderr (or none) and one of these exit statuses, shared by every
command (a command documents any status of its own in its ``--help``, e.g. ``auth test``
and ``pw`` use doveadm's 75/77):

====  =====================================================================================
0     success
1     the command ran and found problems (``doctor`` FAIL lines, ``check`` problems)
2     bad usage or unusable input: unknown option, bad value, a config that does not load
70    internal error, a bug (EX_SOFTWARE): ``authbridge COMMAND: internal error: TYPE at
      file:line`` -- never the exception's text, which may hold a secret
74    a file, socket or device the command needed failed (EX_IOERR): its name and the
      system's reason
130   interrupted (Ctrl-C)
141   standard output was closed early (``authbridge capabilities | head -3``): nothing is
      printed, as for a C tool killed by SIGPIPE (128 + 13), which is what shells report
====  =====================================================================================

``serve`` keeps its own error handling (it logs through structlog); only what escapes it
reaches the handlers here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
from collections.abc import Sequence
from typing import NoReturn

from authbridge import __version__

EX_OK = 0
EX_USAGE = 2
EX_SOFTWARE = 70
EX_IOERR = 74
EX_INTERRUPTED = 130
EX_STDOUT_CLOSED = 141

EXIT_STATUS_HELP = (
    "exit status (every command): 0 success, 1 problems found, 2 bad usage or input, "
    "70 internal error, 74 a file or socket failed, 130 interrupted, 141 stdout closed "
    "early (quiet); auth test and pw add doveadm's, see their --help"
)

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("authbridge.commands.serve", "run the auth-client server"),
    "pw": ("authbridge.commands.pw", "make or verify a password hash, like doveadm pw"),
    "emit-exim-config": (
        "authbridge.commands.emit_exim",
        "write the Exim side of the setup (Debian split config, standalone exim.conf or "
        "one section on stdout)",
    ),
    "emit-postfix-config": (
        "authbridge.commands.emit_postfix",
        "print the Postfix side of the setup (main.cf lines, master.cf entry, sender maps); "
        "--write writes the maps",
    ),
    "capabilities": (
        "authbridge.commands.capabilities",
        "which mechanisms each user's stored password allows",
    ),
    "doctor": (
        "authbridge.mta.doctor",
        "check that authbridge, Exim and Postfix are wired together",
    ),
    "bench": ("authbridge.commands.bench", "load-test any auth-client socket"),
    "check": (
        "authbridge.commands.check",
        "load the config and every store, bind nothing: run before a reload",
    ),
    "app-password": (
        "authbridge.commands.app_password",
        "app-password add|list|revoke USER: per-device passwords (shown once, stored hashed)",
    ),
    "auth": (
        "authbridge.commands.auth_test",
        "auth test USER [PASSWORD]: one login through a socket, like doveadm auth test",
    ),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list and args_list[0] in COMMANDS else None
    try:
        result = _dispatch(args_list, command)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return result
    except BrokenPipeError as exc:
        if _stdout_closed():
            _silence_stdout()
            return EX_STDOUT_CLOSED
        return _say(command, f"error: {exc.strerror}", EX_IOERR)
    except KeyboardInterrupt:
        return _say(command, "interrupted", EX_INTERRUPTED)
    except OSError as exc:
        if exc.strerror is None:  # not the system's words: it may carry anything
            return _say(command, _internal_error(exc), EX_SOFTWARE)
        name = f"{exc.filename}: " if exc.filename is not None else ""
        return _say(command, f"error: {name}{exc.strerror}", EX_IOERR)
    except Exception as exc:
        return _say(command, _internal_error(exc), EX_SOFTWARE)


def _dispatch(args_list: list[str], command: str | None) -> int:
    full = OneLineParser(
        prog="authbridge",
        description="Serve the Dovecot auth-client protocol from Dovecot-style user stores.",
        epilog=EXIT_STATUS_HELP,
    )
    full.add_argument("--version", action="version", version=f"authbridge {__version__}")
    sub = full.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
    args = full.parse_args(args_list)
    args.argv = args_list  # what a supervisor starts its workers with
    module = importlib.import_module(COMMANDS[args.command][0])
    result: int = module.run(args)
    return result


def _internal_error(exc: BaseException) -> str:
    """``internal error: TYPE at file:line``: where our code was when it went wrong (the
    innermost authbridge frame, as the daemon's contained errors name it)."""
    from authbridge.observability.contained import where_raised  # only when it happens

    place = where_raised(exc)
    return f"internal error: {place['error']} at {place.get('via', place['location'])}"


def _say(command: str | None, text: str, status: int) -> int:
    prefix = f"authbridge {command}" if command else "authbridge"
    try:
        sys.stderr.write(f"{prefix}: {text}\n")
        sys.stderr.flush()
    except OSError:
        pass  # stderr is gone too: the exit status is all that is left
    return status


def _stdout_closed() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (POLLERR on the write end)."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno() if sys.__stdout__ else 1, select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (OSError, ValueError):
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
