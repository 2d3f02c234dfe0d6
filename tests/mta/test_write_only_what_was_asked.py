"""The emitters write only what they were asked to (issue #17 item 8).

``emit-postfix-config`` prints unless ``--write``; ``emit-exim-config --debian-split``
refuses a directory that is not Debian's exim4 configuration unless ``--force``. Before
these rules both created directories and files on a host that had asked for neither.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from authbridge.commands import emit_exim, emit_postfix
from tests.mta.conftest import emit

SOCKET = "/run/authbridge/auth-client"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_postfix_without_write_prints_everything_and_creates_nothing(tmp_path: Path) -> None:
    map_dir = tmp_path / "etc-postfix"  # a host without Postfix: no such directory
    result = emit(
        "emit-postfix-config", "--socket", SOCKET, "--map-dir", str(map_dir),
        "--domains", "example.org", "--networks", "192.0.2.0/24",
        "--allow-sender", "alice=sales@example.org",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not map_dir.exists()
    assert _tree(tmp_path) == []
    assert "smtpd_sasl_type = dovecot" in result.stdout
    assert "submission inet" in result.stdout
    # the maps the lines name are shown, so nothing is missing from the printout
    assert f"# ---- map {map_dir / 'authbridge_sender_owners.regexp'}" in result.stdout
    assert "192.0.2.0/24\tDUNNO" in result.stdout
    assert any(
        line.startswith("sales@example.org\t") and "alice" in line
        for line in result.stdout.splitlines()
    ), result.stdout  # the sender map's entry for --allow-sender
    assert "--write" in result.stderr  # the next step says how to write them


def test_postfix_write_fills_an_existing_map_dir_only(tmp_path: Path) -> None:
    missing = tmp_path / "no-postfix-here"
    refused = emit(
        "emit-postfix-config", "--socket", SOCKET, "--map-dir", str(missing), "--write",
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert f"--map-dir {missing} is not a directory" in refused.stderr
    assert not missing.exists()

    map_dir = tmp_path / "postfix"
    map_dir.mkdir()
    written = emit(
        "emit-postfix-config", "--socket", SOCKET, "--map-dir", str(map_dir), "--write",
        "--networks", "192.0.2.0/24",
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert _tree(map_dir) == ["authbridge_networks.cidr", "authbridge_sender_owners.regexp"]
    assert "# ---- map" not in written.stdout  # written, so not printed as well


def test_postfix_help_talks_about_postfix_not_exim() -> None:
    parser = argparse.ArgumentParser()
    emit_postfix.add_arguments(parser)
    text = parser.format_help()
    assert "exim" not in text.lower()
    assert "--write" in text
    assert "Postfix" in text


def test_debian_split_refuses_a_directory_that_is_no_exim4_config(tmp_path: Path) -> None:
    typo = tmp_path / "etc-exim"  # meant /etc/exim4
    typo.mkdir()
    result = emit("emit-exim-config", "--debian-split", str(typo), "--socket", SOCKET)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "update-exim4.conf.conf" in result.stderr and "--force" in result.stderr
    assert _tree(typo) == []
    missing = tmp_path / "nowhere"
    result = emit("emit-exim-config", "--debian-split", str(missing), "--socket", SOCKET)
    assert result.returncode == 2
    assert not missing.exists()


def test_debian_split_writes_into_an_exim4_dir_or_with_force(tmp_path: Path) -> None:
    exim4 = tmp_path / "exim4"
    exim4.mkdir()
    (exim4 / "update-exim4.conf.conf").write_text("dc_use_split_config='true'\n")
    result = emit("emit-exim-config", "--debian-split", str(exim4), "--socket", SOCKET)
    assert result.returncode == 0, result.stderr
    assert (exim4 / "conf.d/auth/35_authbridge_dovecot").is_file()
    elsewhere = tmp_path / "staging"
    forced = emit(
        "emit-exim-config", "--debian-split", str(elsewhere), "--socket", SOCKET, "--force"
    )
    assert forced.returncode == 0, forced.stderr
    assert (elsewhere / "conf.d/auth/35_authbridge_dovecot").is_file()
    assert "not found: is" in forced.stderr  # still warned that nothing will read it


def test_every_emitter_option_has_a_help_text() -> None:
    for module in (emit_exim, emit_postfix):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        silent = [
            action.option_strings[0]
            for action in parser._actions
            if action.option_strings and not action.help
        ]
        assert silent == [], f"{module.__name__}: {silent}"
