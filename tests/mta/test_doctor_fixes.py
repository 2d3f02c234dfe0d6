"""``doctor``'s ``Fix:`` lines run as printed, and doctor sees what ``check`` sees.

Each test breaks one thing, runs the Fix: command doctor printed through a shell exactly
as printed, and asks doctor again: the FAIL must be gone. Before issue #17 the Exim fix
had no socket (``emit-exim-config`` refused it), doctor needed ``--config``, skipped SQL
stores and never named disabled users.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from authbridge.mta import doctor
from tests.mta.conftest import AuthSocket
from tests.mta.test_doctor import _doctor, _exim_conf
from tests.support import runtime_dir
from tests.support.postfix import LIB_DIR, POSTCONF, require_postfix
from tests.support.tls import TlsFiles

REPO = Path(__file__).resolve().parents[2]


def _fixes(lines: list[str], prefix: str) -> list[str]:
    return [line.split(". Fix: ", 1)[1] for line in lines if line.startswith(prefix)]


def _run_as_printed(command: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"{command!r} failed: {proc.stdout}{proc.stderr}"
    return proc


def _config(base: Path, socket_path: Path, stores: str) -> Path:
    path = base / "authbridge.toml"
    path.write_text(f'[server]\nsocket = "{socket_path}"\n\n{stores}')
    return path


def test_exim_fix_prints_the_authenticators_for_the_socket_it_checked(
    tmp_path: Path, auth_socket: AuthSocket, tls_files: TlsFiles, exim_bin: str
) -> None:
    conf = _exim_conf(runtime_dir(tmp_path, "exim"), auth_socket.path, tls_files)
    head, _authenticators = conf.read_text().split("begin authenticators\n")
    conf.write_text(head + "begin authenticators\n")  # an Exim that never asks authbridge
    code, lines = _doctor("--socket", str(auth_socket.path), "--exim-config", str(conf))
    assert code == 1
    fixes = _fixes(lines, "FAIL  exim: no driver = dovecot authenticator")
    assert len(fixes) == 1, lines
    assert f"--socket {auth_socket.path}" in fixes[0]
    printed = _run_as_printed(fixes[0])
    conf.write_text(head + "begin authenticators\n" + printed.stdout)
    code, lines = _doctor("--socket", str(auth_socket.path), "--exim-config", str(conf))
    assert not [line for line in lines if line.startswith("FAIL")], lines
    assert any(f"exim: authbridge_plain (PLAIN) -> {auth_socket.path}" in x for x in lines)


def test_postfix_fix_runs_as_printed(
    tmp_path: Path, auth_socket: AuthSocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postfix()
    monkeypatch.setenv("LD_LIBRARY_PATH", str(LIB_DIR))
    conf_dir = runtime_dir(tmp_path, "postfix")
    (conf_dir / "main.cf").write_text(
        f"queue_directory = {conf_dir}\nsmtpd_sasl_type = cyrus\nsmtpd_sasl_path = smtpd\n"
    )
    argv = ["--socket", str(auth_socket.path), "--no-exim"]
    argv += ["--postfix-dir", str(conf_dir), "--postconf", str(POSTCONF)]
    code, lines = _doctor(*argv)
    assert code == 1
    fixes = _fixes(lines, "FAIL  postfix:") + _fixes(lines, "warn  postfix:")
    assert any("smtpd_sasl_type is cyrus" in line for line in lines), lines
    assert fixes, lines
    for fix in dict.fromkeys(fixes):  # the same postconf -e for type and path: once
        _run_as_printed(fix)
    code, lines = _doctor(*argv)
    assert not [line for line in lines if line.startswith(("FAIL", "warn  postfix: smtpd"))], lines
    assert any(f"ok    postfix: smtpd_sasl_path {auth_socket.path}" in x for x in lines), lines


def test_missing_store_file_fix_runs_as_printed(tmp_path: Path) -> None:
    users = tmp_path / "etc" / "users"  # not even its directory exists
    config = _config(
        tmp_path, tmp_path / "sock", f'[[store]]\ntype = "passwd-file"\npath = "{users}"\n'
    )
    code, lines = _doctor("--config", str(config), "--no-exim")
    assert code == 1
    fixes = _fixes(lines, "FAIL  store: cannot read")
    assert len(fixes) == 1, lines
    _run_as_printed(fixes[0])
    assert users.is_file() and not users.stat().st_mode & 0o007  # not world-readable
    _code, lines = _doctor("--config", str(config), "--no-exim")
    assert f"ok    store: passwd-file:{users}: 0 users" in lines, lines


def test_postconf_missing_is_one_fail_line(tmp_path: Path) -> None:
    empty_path = runtime_dir(tmp_path, "bin")
    proc = subprocess.run(
        [sys.executable, "-m", "authbridge", "doctor", "--no-exim", "--socket",
         str(tmp_path / "sock"), "--postfix-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PATH": str(empty_path)},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr == ""
    assert "FAIL  postfix: postconf is not on PATH" in proc.stdout


def test_doctor_reads_the_default_config_and_lists_disabled_users(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(
        "alice:{PLAIN}alice-pass::::::\n"
        "bob:{PLAIN}bob-pass::::::nologin=y reason=moved\n"
        "carol:{PLAIN}carol-pass::::::nologin=y\n"
    )
    config = _config(
        tmp_path, tmp_path / "sock", f'[[store]]\ntype = "passwd-file"\npath = "{users}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "authbridge", "doctor", "--no-exim"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "AUTHBRIDGE_CONFIG": str(config)},
    )  # fmt: skip
    assert f"ok    config: {config} is valid" in proc.stdout, proc.stdout + proc.stderr
    assert f"ok    store: passwd-file:{users}: 3 users" in proc.stdout
    assert f"store: passwd-file:{users}: disabled (nologin): bob (moved), carol" in proc.stdout


def test_sql_store_is_connected_and_queried(tmp_path: Path) -> None:
    database = tmp_path / "users.sqlite"
    with sqlite3.connect(database) as db:
        db.executescript((REPO / "deploy/sql/sqlite.sql").read_text())
    query = "SELECT password FROM mail_users WHERE username = '%u'"
    store = '[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "{dsn}"\npassword_query = "{q}"\n'
    good = _config(tmp_path, tmp_path / "sock", store.format(dsn=database, q=query))
    _code, lines = _doctor("--config", str(good), "--no-exim")
    assert any(
        line.startswith("ok    store: sql:sqlite") and "password_query ran" in line
        for line in lines
    ), lines

    broken_query = query.replace("mail_users", "no_such_table")
    (tmp_path / "bad").mkdir()
    bad = _config(tmp_path / "bad", tmp_path / "sock", store.format(dsn=database, q=broken_query))
    code, lines = _doctor("--config", str(bad), "--no-exim")
    assert code == 1
    assert any(line.startswith("FAIL  store: sql:sqlite") for line in lines), lines

    absent = tmp_path / "absent.sqlite"
    (tmp_path / "absent").mkdir()
    missing = _config(tmp_path / "absent", tmp_path / "sock", store.format(dsn=absent, q=query))
    code, lines = _doctor("--config", str(missing), "--no-exim")
    assert code == 1
    assert any(f"database {absent} does not exist" in line for line in lines), lines
    assert not absent.exists()  # doctor never creates an empty database


def test_every_doctor_option_has_a_help_text() -> None:
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert silent == []
