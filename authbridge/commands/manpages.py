"""Man pages in roff, made from the argparse definitions by
``python -m authbridge.commands.manpages DIR``.

Writes ``authbridge.1`` and one ``authbridge-COMMAND.1`` per command (sub-commands such
as ``auth test`` are sections of their command's page). Generated at install time by
``deploy/install-debian.sh``, never committed, so a page cannot drift from the options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from authbridge import __version__
from authbridge.cli import COMMANDS, EXIT_STATUS_HELP
from authbridge.commands.cli_parsers import CommandParser, all_commands, arguments

CONFIG_FILE = "/etc/authbridge/authbridge.toml"


def roff_text(text: str) -> str:
    """``text`` safe in a roff body: backslashes, minus signs and control-line starts."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in escaped.splitlines() or [""]:
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _header(page: str, summary: str) -> list[str]:
    return [
        f'.TH {roff_text(page.upper())} 1 "" "authbridge {__version__}" "authbridge manual"',
        ".nh",  # no hyphenation: an option must stay one word when rendered
        ".ad l",
        ".SH NAME",
        f"{roff_text(page)} \\- {roff_text(summary)}",
    ]


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if action.help in (None, argparse.SUPPRESS):
        return ""
    formatter = parser._get_formatter()
    return " ".join(formatter._expand_help(action).split())


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._format_action_invocation(action)


def _synopsis(parser: argparse.ArgumentParser) -> list[str]:
    usage = " ".join(parser.format_usage().removeprefix("usage:").split())
    return [".PP", roff_text(usage)]


def _arguments(command: CommandParser) -> list[str]:
    """The command's arguments, grouped as its --help groups them."""
    parser = command.parser
    shown = set(map(id, arguments(parser)))
    out: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if id(a) in shown]
        if not actions:
            continue
        if group.title not in ("options", "positional arguments"):
            out += [f".SS {roff_text(group.title or '')}"]
            if group.description:
                out.append(roff_text(group.description))
        for action in actions:
            out += [
                ".TP",
                f"\\fB{roff_text(_invocation(parser, action))}\\fR",
                roff_text(_help_of(parser, action)),
            ]
    return out


def _section_body(command: CommandParser) -> list[str]:
    parser = command.parser
    out = _synopsis(parser)
    if parser.description and parser.description != command.summary:
        out += [".PP", roff_text(parser.description)]
    return out + _arguments(command)


def command_page(command: CommandParser, subcommands: list[CommandParser]) -> str:
    """The page of one top-level command, its sub-commands as sections."""
    page = "authbridge-" + command.name
    lines = _header(page, command.summary)
    lines += [".SH SYNOPSIS", *_synopsis(command.parser)[1:]]
    lines += [".SH DESCRIPTION", roff_text(command.parser.description or command.summary)]
    options = _arguments(command)
    if options:
        lines += [".SH OPTIONS", *options]
    for sub in subcommands:
        lines += [f".SH {roff_text(sub.name.upper())}", roff_text(sub.summary)]
        lines += _section_body(sub)
    parsers = [command.parser, *(sub.parser for sub in subcommands)]
    epilogs = [p.epilog for p in parsers if p.epilog]
    lines += [".SH EXIT STATUS", roff_text(" ".join(epilogs) or EXIT_STATUS_HELP)]
    if any("--config" in a.option_strings for p in parsers for a in arguments(p)):
        lines += [
            ".SH FILES",
            ".TP",
            f"\\fI{roff_text(CONFIG_FILE)}\\fR",
            "read when no \\fB\\-\\-config\\fR is given and the file exists.",
        ]
    lines += [".SH SEE ALSO", "\\fBauthbridge\\fR(1)"]
    return "\n".join(lines) + "\n"


def main_page() -> str:
    """``authbridge(1)``: the command list, pointing at each command's page."""
    lines = _header("authbridge", "serve the Dovecot auth-client protocol for Exim and Postfix")
    lines += [
        ".SH SYNOPSIS",
        "\\fBauthbridge\\fR \\fICOMMAND\\fR [\\fIoptions\\fR]",
        ".br",
        "\\fBauthbridge\\fR \\fB\\-\\-version\\fR",
        ".SH DESCRIPTION",
        roff_text(
            "authbridge lets an MTA authenticate SMTP users against the user stores Dovecot "
            "uses, without running Dovecot: it serves the server side of the Dovecot "
            "auth-client protocol on a UNIX socket (and optionally TCP)."
        ),
        ".SH COMMANDS",
    ]
    for name, (_, summary) in COMMANDS.items():
        lines += [".TP", f"\\fBauthbridge\\-{roff_text(name)}\\fR(1)", roff_text(summary)]
    lines += [
        ".SH EXIT STATUS",
        roff_text(EXIT_STATUS_HELP),
        ".SH FILES",
        ".TP",
        f"\\fI{roff_text(CONFIG_FILE)}\\fR",
        "the configuration every command reads when given no \\fB\\-\\-config\\fR.",
        ".SH SEE ALSO",
        ", ".join(f"\\fBauthbridge\\-{roff_text(name)}\\fR(1)" for name in COMMANDS),
    ]
    return "\n".join(lines) + "\n"


def all_pages() -> dict[str, str]:
    """File name -> roff text, for authbridge(1) and every command."""
    pages = {"authbridge.1": main_page()}
    commands = list(all_commands())
    for command in (c for c in commands if len(c.words) == 1):
        subs = [c for c in commands if len(c.words) > 1 and c.words[0] == command.words[0]]
        pages[f"authbridge-{command.name}.1"] = command_page(command, subs)
    return pages


def write_pages(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in all_pages().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authbridge.commands.manpages",
        description="write authbridge.1 and authbridge-COMMAND.1 into DIR",
    )
    parser.add_argument("directory", metavar="DIR", type=Path, help="where to write the pages")
    args = parser.parse_args(argv)
    try:
        written = write_pages(args.directory)
    except OSError as exc:
        print(f"authbridge.commands.manpages: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 74
    print(f"wrote {len(written)} pages to {args.directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
