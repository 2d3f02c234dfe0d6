"""install-debian.sh installs the man pages (generated from the installed program) and the
bash completion, into a temporary root (--root), never into /."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from authbridge.cli import COMMANDS
from authbridge.commands.manpages import all_pages
from tests.support import require_binary

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy/install-debian.sh"


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nDebian-exim:x:105:\n")
    return root


def _install(root: Path) -> subprocess.CompletedProcess[str]:
    require_binary("systemd-sysusers")
    if os.geteuid() != 0:
        pytest.skip("install-debian.sh must run as root (it chowns files)")
    result = subprocess.run(
        ["sh", str(SCRIPT), "--root", str(root)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_man_pages_and_completion_installed(tmp_path: Path) -> None:
    root = _root(tmp_path)
    # The program as pip would install it: a script whose shebang is a Python that
    # imports authbridge (this checkout's).
    program = root / "usr/local/bin/authbridge"
    program.parent.mkdir(parents=True)
    program.write_text(f"#!{sys.executable}\nfrom authbridge.cli import main\nmain()\n")
    program.chmod(0o755)
    result = _install(root)
    assert "man pages not installed" not in result.stderr

    man1 = root / "usr/local/share/man/man1"
    expected = {"authbridge.1"} | {f"authbridge-{name}.1" for name in COMMANDS}
    assert {p.name for p in man1.iterdir()} == expected
    pages = all_pages()
    for page in man1.iterdir():
        assert page.read_text() == pages[page.name]
        assert stat.S_IMODE(page.stat().st_mode) == 0o644

    completion = root / "usr/local/share/bash-completion/completions/authbridge"
    assert completion.read_text() == (REPO / "deploy/completion/authbridge.bash").read_text()
    assert stat.S_IMODE(completion.stat().st_mode) == 0o644


def test_without_a_program_the_pages_are_skipped_with_a_warning(tmp_path: Path) -> None:
    root = _root(tmp_path)
    result = _install(root)  # no --venv, no /usr/local/bin/authbridge in the root
    assert "warning: man pages not installed" in result.stderr
    assert list((root / "usr/local/share/man/man1").iterdir()) == []
    assert (root / "usr/local/share/bash-completion/completions/authbridge").exists()
