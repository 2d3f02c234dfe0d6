"""Every documented install gets every store's driver (issue #17 item 6).

psycopg is a default dependency, so an install path is right when it installs the
checkout with its dependencies: no ``--no-deps`` in what the docs tell an admin to
run, and the SQL guide says where PostgreSQL's driver comes from.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_DOCS = ("README.md", "deploy/README.md", "deploy/sql/README.md")
PIP_INSTALL = re.compile(r"\bpip3? install\b[^\n`]*")


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~; ]", r, maxsplit=1)[0].replace(" ", "") for r in requirements}


def test_psycopg_is_installed_with_the_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "psycopg[binary]" in _requirement_names(project["dependencies"])
    # The old extra still resolves, so instructions written for it keep working.
    assert "psycopg[binary]" in _requirement_names(project["optional-dependencies"]["sql"])


@pytest.mark.parametrize("doc", INSTALL_DOCS)
def test_documented_pip_installs_keep_the_dependencies(doc: str) -> None:
    for command in PIP_INSTALL.findall((REPO / doc).read_text()):
        assert "--no-deps" not in command, f"{doc}: {command}"


def test_the_installer_installs_the_checkout_with_its_dependencies() -> None:
    script = (REPO / "deploy/install-debian.sh").read_text()
    installs = [line for line in script.splitlines() if "pip install" in line]
    commands = [line for line in installs if not line.lstrip().startswith("#")]
    assert commands and all(line.rstrip().endswith('"$REPO"') for line in commands)
    assert all("--no-deps" not in line for line in commands)


def test_the_sql_guide_says_where_the_postgresql_driver_comes_from() -> None:
    guide = (REPO / "deploy/sql/README.md").read_text()
    assert "psycopg[binary]" in guide and "default dependency" in guide
