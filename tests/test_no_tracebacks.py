"""No traceback reaches a user (issue #17 item 7).

Every command in ``cli.COMMANDS`` is run as a subprocess, as an admin would run it, with
bad input: a missing file, a directory where a file belongs, garbage option values, a
stdout whose reader has gone (``| head``), and no binaries on PATH at all (so postconf,
exim and openssl are missing). Each run must end with one line that says what is wrong
(doctor: its FAIL report lines) and a documented, non-zero exit status (cli docstring;
auth test's own 64/75), never a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from authbridge import cli
from authbridge.schemes import generate

#: Exit statuses the cli docstring documents for errors, plus auth test's own (64, 75).
DOCUMENTED_ERRORS = {1, 2, cli.EX_IOERR, cli.EX_STDOUT_CLOSED, 64, 75}


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    status: int
    says: str = ""  # a fragment the one line must contain
    closed_stdout: bool = False

    @property
    def command(self) -> str:
        return self.argv[0] if self.argv and self.argv[0] in cli.COMMANDS else ""


# Placeholders: {missing} a path that does not exist, {dir} an existing directory,
# {users} a valid passwd-file, {good} a valid config, {sql} a config whose SQL store
# is a SQLite file that does not exist, {tmp} the scratch directory.
CASES = [
    # serve
    Case(("serve", "--config", "{missing}"), 2, "No such file or directory"),
    Case(("serve", "--config", "{dir}"), 2, "Is a directory"),
    Case(("serve", "--config", "{sql}"), 2, "does not exist"),
    Case(("serve", "--workers", "banana", "--config", "{good}"), 2, "--workers"),
    Case(("serve", "--dovecot-config", "{missing}"), 2, "No such file or directory"),
    Case(("serve", "--dovecot-config", "{dir}"), 2, "Is a directory"),
    Case(("serve", "--dovecot-config", "{pam}"), 2, "driver 'pam' is not supported"),
    Case(("check", "--dovecot-config", "{pam}"), 2, "pam.conf:2: passdb 1 (pam)"),
    Case(("serve", "--dovecot-config", "{pam}", "--passwd-file", "{users}"), 2, "its passdbs"),
    # pw
    Case(("pw", "-r", "abc"), 2, "invalid int value"),
    Case(("pw", "-s", "NOSUCH", "-p", "x"), 75, "NOSUCH"),
    Case(("pw", "-s", "PLAIN", "-p", "x"), 141, closed_stdout=True),
    # emit-exim-config
    Case(("emit-exim-config", "--section", "auth", "--config", "{dir}"), 2, "Is a directory"),
    Case(
        (
            "emit-exim-config",
            "--section",
            "auth",
            "--socket",
            "/run/x",
            "--senders-from",
            "{missing}",
        ),
        2,
        "No such file or directory",
    ),
    Case(
        (
            "emit-exim-config",
            "--standalone",
            "{tmp}/exim.conf",
            "--socket",
            "/run/x",
            "--allow-auth-without-tls",
            "--listen",
            "nonsense",
        ),
        2,
        "--listen",
    ),
    Case(("emit-exim-config", "--debian-split", "{dir}", "--socket", "/run/x"), 2, "--force"),
    Case(("emit-exim-config", "--section", "bogus", "--socket", "/run/x"), 2, "invalid choice"),
    Case(("emit-exim-config", "--section", "auth", "--socket", "/run/x"), 141, closed_stdout=True),
    # emit-postfix-config
    Case(("emit-postfix-config", "--config", "{dir}"), 2, "Is a directory"),
    Case(
        ("emit-postfix-config", "--socket", "/run/x", "--map-dir", "{missing}", "--write"),
        2,
        "not a directory",
    ),
    Case(("emit-postfix-config", "--socket", "/run/x", "--service", "a b"), 2, "no spaces"),
    Case(("emit-postfix-config", "--socket", "/run/x"), 141, closed_stdout=True),
    # capabilities
    Case(("capabilities", "--config", "{missing}"), 2, "No such file or directory"),
    Case(("capabilities", "--config", "{dir}"), 2, "Is a directory"),
    Case(("capabilities", "--passwd-file", "{missing}"), 1, "No such file or directory"),
    Case(("capabilities", "--config", "{sql}"), 1, "store[0] is an SQL store"),
    Case(("capabilities", "--json", "--passwd-file", "{users}"), 141, closed_stdout=True),
    # doctor: findings are its report on stdout, one line each
    Case(("doctor", "--no-exim", "--config", "{dir}"), 1, "Is a directory"),
    Case(
        ("doctor", "--no-exim", "--socket", "{missing}", "--postfix-dir", "{dir}"),
        1,
        "postconf is not on PATH",
    ),
    Case(("doctor", "--socket", "{missing}", "--exim-config", "{missing}"), 1, "no exim binary"),
    Case(("doctor", "--no-exim"), 2, "no configuration"),
    Case(("doctor", "--bogus"), 2, "unrecognized arguments"),
    Case(("doctor", "--no-exim", "--socket", "{missing}"), 141, closed_stdout=True),
    # bench
    Case(("bench", "--socket", "{missing}", "-n", "1"), 1, "No such file or directory"),
    Case(("bench", "--socket", "{missing}", "-c", "abc"), 2, "invalid int value"),
    # check
    Case(("check",), 2, "no configuration"),
    Case(("check", "--config", "{missing}"), 2, "No such file or directory"),
    Case(("check", "--config", "{dir}"), 2, "Is a directory"),
    Case(("check", "--config", "{good}"), 141, closed_stdout=True),
    # auth test
    Case(("auth", "test", "alice", "pw", "--socket", "{missing}"), 75, "cannot connect"),
    Case(("auth", "test", "alice", "pw", "--config", "{dir}"), 64, "Is a directory"),
    Case(("auth", "test", "alice", "pw", "--mechanism", "nope"), 2, "invalid choice"),
    Case(("auth", "test"), 2, "required"),
    # no command, an unknown one
    # app-password
    Case(("app-password",), 2, "required: SUBCOMMAND"),
    Case(("app-password", "list", "user1", "--config", "{missing}"), 2, "No such file"),
    Case(("app-password", "list", "user1"), 2, "no configuration"),
    Case(("app-password", "add", "user1", "--config", "{apps}"), 2, "--label"),
    Case(("app-password", "add", "user1", "--label", "a b", "--config", "{apps}"), 2, "--label"),
    Case(
        ("app-password", "add", "user1", "--label", "x", "--expires", "soon", "--config", "{apps}"),
        2,
        "--expires",
    ),
    Case(
        ("app-password", "add", "user1", "--label", "x", "--service", "s m", "--config", "{apps}"),
        2,
        "--service",
    ),
    Case(
        ("app-password", "add", "user1", "--label", "phone", "--config", "{apps}"),
        2,
        "already has an app password 'phone'",
    ),
    Case(("app-password", "add", "user1", "--label", "x", "--config", "{badapps}"), 2, ".app:2:"),
    Case(("app-password", "revoke", "user1", "nosuch", "--config", "{apps}"), 2, "no app password"),
    Case(("app-password", "list", "nobody", "--config", "{apps}"), 2, "no store knows"),
    Case(("app-password", "list", "user1", "--config", "{good}"), 2, "has no app passwords"),
    Case(("app-password", "list", "user1", "--config", "{sql}"), 74, "absent.sqlite"),
    Case(("app-password", "list", "user1", "--config", "{apps}"), 141, closed_stdout=True),
    Case((), 2, "required: COMMAND"),
    Case(("nope",), 2, "invalid choice"),
]


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    users = tmp_path / "users"
    users.write_text("".join(f"user{i}:{{PLAIN}}pass{i}::::::\n" for i in range(5000)))
    good = tmp_path / "good.toml"
    good.write_text(
        f'[server]\nsocket = "{tmp_path / "sock"}"\n\n'
        f'[[store]]\ntype = "passwd-file"\npath = "{users}"\n'
    )
    sql = tmp_path / "sql.toml"
    sql.write_text(
        f'[server]\nsocket = "{tmp_path / "sock"}"\n\n[[store]]\ntype = "sql"\n'
        f'driver = "sqlite"\ndsn = "{tmp_path / "absent.sqlite"}"\n'
        "password_query = \"SELECT password FROM users WHERE username = '%u'\"\n"
    )
    app_line = f"user1:phone:{generate('SSHA512', b'x', 'user1')}::\n"
    (tmp_path / "users.app").write_text(app_line)
    (tmp_path / "bad.app").write_text(app_line + "user1:broken\n")
    for name, app_file in (("apps", "users.app"), ("badapps", "bad.app")):
        (tmp_path / f"{name}.toml").write_text(
            f'[[store]]\npath = "{users}"\napp_passwords = "{tmp_path / app_file}"\n'
        )
    (tmp_path / "pam.conf").write_text("passdb {\n  driver = pam\n}\n")
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "empty-path").mkdir()
    return {
        "missing": str(tmp_path / "no-such-file"),
        "dir": str(tmp_path / "a-directory"),
        "users": str(users),
        "good": str(good),
        "sql": str(sql),
        "apps": str(tmp_path / "apps.toml"),
        "badapps": str(tmp_path / "badapps.toml"),
        "tmp": str(tmp_path),
        "pam": str(tmp_path / "pam.conf"),
        "PATH": str(tmp_path / "empty-path"),
    }


def _run(case: Case, places: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [arg.format(**places) for arg in case.argv]
    env = {
        **os.environ,
        "PATH": places["PATH"],  # no postconf, exim, openssl...: missing binaries
        "AUTHBRIDGE_CONFIG": places["missing"],  # never the host's /etc/authbridge
    }
    env.pop("PYTHONWARNINGS", None)
    command = [sys.executable, "-m", "authbridge", *argv]
    if not case.closed_stdout:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, env=env,
            stdin=subprocess.DEVNULL, cwd=places["tmp"],
        )  # fmt: skip
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already gone
    try:
        proc = subprocess.run(
            command, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
            check=False, env=env, stdin=subprocess.DEVNULL, cwd=places["tmp"],
        )  # fmt: skip
    finally:
        os.close(write_end)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c.argv) or "(nothing)")
def test_bad_input_gives_one_line_and_a_documented_status(
    case: Case, places: dict[str, str]
) -> None:
    proc = _run(case, places)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == case.status, (proc.returncode, proc.stderr, proc.stdout)
    assert proc.returncode in DOCUMENTED_ERRORS
    if case.closed_stdout:
        assert proc.stderr == ""  # quiet, as a tool killed by SIGPIPE
        return
    if case.command == "doctor" and proc.returncode == 1:
        assert proc.stderr == ""
        report = _lines(proc.stdout)
        assert all(re.match(r"(ok|warn|FAIL)  \S", line) for line in report), report
        assert any(line.startswith("FAIL") and case.says in line for line in report), report
        return
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("authbridge"), lines
    assert case.says in lines[0], lines


def test_every_command_is_driven_with_bad_input() -> None:
    driven = {case.command for case in CASES}
    assert set(cli.COMMANDS) <= driven
    # every command that prints a report without a server is also read by a closed pipe
    piped = {case.command for case in CASES if case.closed_stdout}
    assert piped == set(cli.COMMANDS) - {"serve", "bench", "auth"}


def test_an_unexpected_exception_is_one_line_without_its_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from authbridge.commands import check

    def broken(_args: object) -> int:
        raise ValueError("the password is hunter2")

    monkeypatch.setattr(check, "run", broken)
    assert cli.main(["check"]) == cli.EX_SOFTWARE
    err = capsys.readouterr().err
    assert re.fullmatch(
        r"authbridge check: internal error: ValueError at authbridge/\S+\.py:\d+\n", err
    ), err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (
            PermissionError(13, "Permission denied", "/etc/authbridge/users"),
            cli.EX_IOERR,
            "authbridge check: error: /etc/authbridge/users: Permission denied\n",
        ),
        (KeyboardInterrupt(), cli.EX_INTERRUPTED, "authbridge check: interrupted\n"),
        (OSError("a library's own words, maybe a secret"), cli.EX_SOFTWARE, None),
    ],
)
def test_system_errors_and_interrupts_at_the_boundary(
    raised: BaseException,
    status: int,
    line: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from authbridge.commands import check

    def failing(_args: object) -> int:
        raise raised

    monkeypatch.setattr(check, "run", failing)
    assert cli.main(["check"]) == status
    err = capsys.readouterr().err
    if line is not None:
        assert err == line
    else:
        assert err.startswith("authbridge check: internal error: OSError at ")
        assert "secret" not in err
