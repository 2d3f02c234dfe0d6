"""The command line documents itself: help texts, man pages (issue #17 item 9).

Every option of every command (and of ``auth test``) has a help text, and
``python -m authbridge.commands.manpages DIR`` writes a page per command that renders without
roff warnings and names every option the parser accepts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authbridge.cli import COMMANDS
from authbridge.commands.cli_parsers import CommandParser, all_commands, arguments
from tests.support import missing_peer

COMMAND_LIST = list(all_commands())

# Options allowed to lack a help text; each entry must really lack one (the test below
# fails once it is fixed, so the list only shrinks). Empty: every option has one.
KNOWN_MISSING_HELP: set[tuple[str, str]] = set()


def _label(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def _lacks_help(action: argparse.Action) -> bool:
    return action.help in (None, argparse.SUPPRESS) or not str(action.help).strip()


def test_every_command_and_sub_command_has_a_summary() -> None:
    assert [c.name for c in COMMAND_LIST if len(c.words) == 1] == list(COMMANDS)
    assert "auth test" in [c.name for c in COMMAND_LIST]
    for command in COMMAND_LIST:
        assert command.summary.strip(), command.name


@pytest.mark.parametrize("command", COMMAND_LIST, ids=lambda c: c.name)
def test_every_option_has_a_help_text(command: CommandParser) -> None:
    missing = {(command.name, _label(a)) for a in arguments(command.parser) if _lacks_help(a)}
    known = {entry for entry in KNOWN_MISSING_HELP if entry[0] == command.name}
    assert missing - known == set(), "options without help"
    assert known - missing == set(), "fixed: remove from KNOWN_MISSING_HELP"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("man1")
    result = subprocess.run(
        [sys.executable, "-m", "authbridge.commands.manpages", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return directory


def _rendered(page: Path) -> str:
    """The page as a reader sees it: man -l when installed, else groff; plain ASCII."""
    env = {**os.environ, "MANWIDTH": "400", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C"}
    if shutil.which("man"):
        command = ["man", "-E", "ascii", "-l", str(page)]
    elif shutil.which("groff"):
        command = ["groff", "-man", "-Tascii", "-rLL=400n", "-P-cbou", str(page)]
    else:
        missing_peer("neither man nor groff to render a page (install-peers.sh: groff-base)")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_page_per_command_and_no_other(pages: Path) -> None:
    expected = {"authbridge.1"} | {f"authbridge-{name}.1" for name in COMMANDS}
    assert {p.name for p in pages.iterdir()} == expected


def test_pages_are_valid_roff(pages: Path) -> None:
    groff = shutil.which("groff")
    for page in sorted(pages.iterdir()):
        text = page.read_text()
        assert text.startswith(".TH "), page.name
        for section in (".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH SEE ALSO"):
            assert section in text, (page.name, section)
        if groff:  # -ww: every warning, -z: no output
            checked = subprocess.run(
                [groff, "-man", "-ww", "-z", str(page)], capture_output=True, text=True
            )
            assert checked.stderr == "", (page.name, checked.stderr)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_appears_in_its_rendered_page(pages: Path, name: str) -> None:
    shown = _rendered(pages / f"authbridge-{name}.1")
    assert f"authbridge-{name} - " in shown
    for command in (c for c in COMMAND_LIST if c.words[0] == name):
        for action in arguments(command.parser):
            for option in action.option_strings or [action.metavar or action.dest]:
                assert str(option) in shown, (command.name, option)
            if not _lacks_help(action):
                first_words = " ".join(str(action.help).split()[:3])
                if "%(" not in first_words:
                    assert first_words in " ".join(shown.split()), (command.name, first_words)


def test_main_page_lists_every_command(pages: Path) -> None:
    shown = _rendered(pages / "authbridge.1")
    for name, (_, summary) in COMMANDS.items():
        assert f"authbridge-{name}(1)" in shown
        assert " ".join(summary.split()[:4]) in " ".join(shown.split())
