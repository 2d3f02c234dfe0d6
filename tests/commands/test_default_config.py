"""Without --config, every command reads the installed configuration when it exists.

The default is /etc/authbridge/authbridge.toml; AUTHBRIDGE_CONFIG points it elsewhere so
the tests never depend on (or write to) the host's /etc.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authbridge.commands import defaults


def run(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "AUTHBRIDGE_CONFIG": str(config)},
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}alicepass::::::\n")
    path = tmp_path / "authbridge.toml"
    path.write_text(
        f'[server]\nsocket = "{tmp_path / "ab-socket"}"\nmechanisms = ["plain", "login"]\n'
        f'[[store]]\ntype = "passwd-file"\npath = "{users}"\n'
    )
    return path


def test_config_path_falls_back_only_to_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHBRIDGE_CONFIG", str(tmp_path / "absent.toml"))
    assert defaults.config_path(None) is None
    assert defaults.config_path("given.toml") == "given.toml"
    (tmp_path / "absent.toml").write_text("")
    assert defaults.config_path(None) == str(tmp_path / "absent.toml")
    monkeypatch.delenv("AUTHBRIDGE_CONFIG")
    assert defaults.default_config() == "/etc/authbridge/authbridge.toml"


def test_capabilities(config: Path) -> None:
    proc = run("capabilities", config=config)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("alice\tPLAIN\t")


def test_doctor(config: Path) -> None:
    proc = run("doctor", "--no-exim", config=config)
    assert f"config: {config} is valid" in proc.stdout
    assert "ab-socket" in proc.stdout  # the config's socket, checked (and not there)


def test_emit_exim_config(config: Path) -> None:
    proc = run("emit-exim-config", "--section", "auth", config=config)
    assert proc.returncode == 0, proc.stderr
    assert str(config.parent / "ab-socket") in proc.stdout


def test_check(config: Path) -> None:
    assert run("check", config=config).returncode == 0


def test_auth_test_takes_the_socket_from_the_config(config: Path) -> None:
    proc = run("auth", "test", "alice", "alicepass", config=config)
    assert proc.returncode == 75
    assert f"cannot connect to {config.parent / 'ab-socket'}" in proc.stderr


def _serve_config(*argv: str) -> str:
    import argparse

    from authbridge.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return serve.build_config(parser.parse_args(list(argv))).source


def test_serve_reads_the_default_unless_told_otherwise(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHBRIDGE_CONFIG", str(config))
    assert _serve_config() == str(config)
    other = tmp_path / "other.toml"
    other.write_text(config.read_text())
    assert _serve_config("--config", str(other)) == str(other)
    # Store flags or --demo describe a whole setup of their own: the default stays out.
    assert _serve_config("--passwd-file", str(tmp_path / "users")) == "<command line>"
    monkeypatch.setenv("AUTHBRIDGE_CONFIG", str(tmp_path / "absent.toml"))
    assert _serve_config("--passwd-file", str(tmp_path / "users")) == "<command line>"


def test_client_socket_finds_the_installed_systemd_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under socket activation the config names no socket: auth test must still find it
    (the default /var/run/dovecot/auth-client does not exist on such a host)."""
    default = str(tmp_path / "dovecot-auth-client")  # the default, absent here
    monkeypatch.setattr(defaults, "DEFAULT_SOCKET", default)
    installed = tmp_path / "auth-client"
    installed.touch()
    missing = str(tmp_path / "nothing-here")
    assert defaults.client_socket(default, (missing, str(installed))) == str(installed)
    # A socket the config names is kept, existing or not; nothing found keeps the default.
    assert defaults.client_socket("/srv/x/auth", (str(installed),)) == "/srv/x/auth"
    assert defaults.client_socket(default, (missing,)) == default
    # The default is kept when it exists.
    Path(default).touch()
    assert defaults.client_socket(default, (str(installed),)) == default
