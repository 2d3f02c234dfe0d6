"""Every command's argparse parser, built as ``authbridge COMMAND`` builds it.

The man pages, the help-text test and anything else that documents the command line
read the parsers from here, so what they show is what argparse really accepts.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator
from dataclasses import dataclass

from authbridge.cli import COMMANDS


@dataclass(frozen=True)
class CommandParser:
    """One command (``pw``) or sub-command (``auth test``) and its parser."""

    words: tuple[str, ...]  # ("auth", "test")
    summary: str
    parser: argparse.ArgumentParser

    @property
    def name(self) -> str:
        return " ".join(self.words)


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of top-level command ``name``, with the module's arguments added."""
    module_name, summary = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"authbridge {name}", description=summary)
    importlib.import_module(module_name).add_arguments(parser)
    return parser


def sub_commands(parent: CommandParser) -> list[CommandParser]:
    """The sub-commands of ``parent`` (``auth test``), in definition order."""
    found = []
    for action in parent.parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                sub = action.choices[choice.dest]
                found.append(CommandParser((*parent.words, choice.dest), choice.help or "", sub))
    return found


def all_commands() -> Iterator[CommandParser]:
    """Every command, each followed by its sub-commands (depth first)."""

    def walk(node: CommandParser) -> Iterator[CommandParser]:
        yield node
        for child in sub_commands(node):
            yield from walk(child)

    for name, (_, summary) in COMMANDS.items():
        yield from walk(CommandParser((name,), summary, command_parser(name)))


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and positionals a user types (no --help, no sub-command selector)."""
    return [
        action
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    ]
