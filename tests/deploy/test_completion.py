"""deploy/completion/authbridge.bash, driven as bash drives it (COMP_WORDS/COMP_CWORD).

The script reads commands and options from the program's own --help, so the program
here is this checkout (a wrapper running ``python -m authbridge``): a command or an
option added to the parser shows up in completion without touching the script.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from authbridge.cli import COMMANDS
from authbridge.commands.cli_parsers import all_commands, arguments
from authbridge.schemes import available_schemes
from tests.support import require_binary

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/completion/authbridge.bash"


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bin")
    wrapper = directory / "authbridge"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m authbridge "$@"\n')
    wrapper.chmod(0o755)
    return directory


def complete(program_dir: Path, *words: str) -> list[str]:
    """COMPREPLY for the command line ``words`` (the last one is being completed)."""
    script = (
        f"source {shlex.quote(str(SCRIPT))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        "_authbridge\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        [require_binary("bash"), "--norc", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{program_dir}:/usr/bin:/bin", "HOME": str(program_dir)},
        cwd=program_dir,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [line for line in result.stdout.splitlines() if line]


def test_sourcing_registers_the_function() -> None:
    result = subprocess.run(
        [
            require_binary("bash"),
            "--norc",
            "-c",
            f"source {shlex.quote(str(SCRIPT))}; complete -p authbridge",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.strip() == "complete -F _authbridge authbridge"


def test_commands(program_dir: Path) -> None:
    assert complete(program_dir, "authbridge", "") == list(COMMANDS)
    assert complete(program_dir, "authbridge", "em") == ["emit-exim-config", "emit-postfix-config"]


def test_sub_command_and_its_options(program_dir: Path) -> None:
    assert complete(program_dir, "authbridge", "auth", "") == ["test"]
    assert complete(program_dir, "authbridge", "auth", "test", "--no") == ["--no-secured"]


def test_every_option_of_a_command(program_dir: Path) -> None:
    offered = set(complete(program_dir, "authbridge", "bench", "-"))
    (bench,) = [c for c in all_commands() if c.name == "bench"]
    expected = {o for a in arguments(bench.parser) for o in a.option_strings} | {"-h", "--help"}
    assert offered == expected


def test_option_prefix_and_values(program_dir: Path) -> None:
    assert complete(program_dir, "authbridge", "pw", "--sch") == ["--scheme"]
    schemes = [s for s in available_schemes() if s.startswith("SHA5")]
    assert complete(program_dir, "authbridge", "pw", "-s", "SHA5") == schemes
    assert complete(program_dir, "authbridge", "auth", "test", "-m", "C") == ["CRAM-MD5"]
    assert complete(program_dir, "authbridge", "bench", "--mode", "") == ["pipeline", "churn"]


def test_file_valued_option_completes_paths(program_dir: Path) -> None:
    (program_dir / "authbridge.toml").write_text("")
    assert complete(program_dir, "authbridge", "check", "--config", "authbridge.t") == [
        "authbridge.toml"
    ]
