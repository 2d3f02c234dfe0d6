"""Command-line entry point: one sub-command per module, imported only when used.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; keeping
the imports lazy means ``authbridge pw`` never pays for trio and the server never pays
for the config emitters.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from authbridge import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("authbridge.commands.serve", "run the auth-client server"),
    "pw": ("authbridge.commands.pw", "make or verify a password hash, like doveadm pw"),
    "emit-exim-config": ("authbridge.commands.emit_exim", "write the Exim side of the setup"),
    "emit-postfix-config": ("authbridge.commands.emit_postfix", "write the Postfix side"),
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
    "auth": (
        "authbridge.commands.auth_test",
        "auth test USER [PASSWORD]: one login through a socket, like doveadm auth test",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("command", nargs="?")
    known, _ = parser.parse_known_args(args_list[:1])
    full = argparse.ArgumentParser(
        prog="authbridge",
        description="Serve the Dovecot auth-client protocol from Dovecot-style user stores.",
    )
    full.add_argument("--version", action="version", version=f"authbridge {__version__}")
    sub = full.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == known.command:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
    args = full.parse_args(args_list)
    args.argv = args_list  # what a supervisor starts its workers with
    module = importlib.import_module(COMMANDS[args.command][0])
    result: int = module.run(args)
    return result
