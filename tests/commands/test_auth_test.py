"""``authbridge auth test`` against a real authbridge daemon and a real Dovecot 2.3.

Every case runs the real ``doveadm auth test`` with the equivalent options against the
same socket and asserts the same output and exit status: the command must be a drop-in
for scripts written for doveadm (which a fresh Debian does not have).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import runtime_dir, wait_for_unix_socket
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth, doveadm_auth

USERS = "".join(
    line + "\n"
    for line in (
        "demo:{PLAIN}demopass::::::",
        "carol:{PLAIN}carolpass::::::nologin reason=disabled-for-test",
    )
)


def auth_test(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "auth", "test", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = runtime_dir(tmp_path_factory, "authtest")
    users = made / "users.passwd"
    users.write_text(USERS)
    users.chmod(0o644)
    return made


@pytest.fixture(scope="module")
def authbridge(base: Path) -> Iterator[AuthbridgeServer]:
    # the default policy (secured required, nologin refused), without the failure delay
    with AuthbridgeServer(
        base / "users.passwd", base / "ab.sock", extra_args=("--failure-delay", "0")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def dovecot(base: Path) -> Iterator[DovecotAuth]:
    with DovecotAuth(base / "users.passwd", base / "dovecot.sock", workdir=base / "dc") as dc:
        yield dc


# (user, password, secured?) -> the same request through both clients
CASES = {
    "success": ("demo", "demopass", True),
    "wrong password": ("demo", "nope", True),
    "unknown user": ("ghost", "demopass", True),
    "nologin user": ("carol", "carolpass", True),
    "plaintext not secured": ("demo", "demopass", False),
}


def _both(
    socket: Path, user: str, password: str, secured: bool
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    ours = auth_test("-a", str(socket), *(() if secured else ("--no-secured",)), user, password)
    theirs = doveadm_auth(socket, user, password, *(("secured",) if secured else ()))
    return ours, theirs


@pytest.mark.parametrize("case", list(CASES))
def test_same_as_doveadm_against_authbridge(authbridge: AuthbridgeServer, case: str) -> None:
    ours, theirs = _both(authbridge.socket_path, *CASES[case])
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode), ours.stderr
    expected = 0 if case == "success" else 77
    assert ours.returncode == expected
    assert ours.stderr == ""


@pytest.mark.parametrize("case", list(CASES))
def test_same_as_doveadm_against_dovecot(dovecot: DovecotAuth, case: str) -> None:
    ours, theirs = _both(dovecot.socket_path, *CASES[case])
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode), ours.stderr


def test_the_answers_read_as_doveadm_prints_them(authbridge: AuthbridgeServer) -> None:
    ok = auth_test("-a", str(authbridge.socket_path), "demo", "demopass")
    assert ok.stdout == "passdb: demo auth succeeded\nextra fields:\n  user=demo\n"
    refused = auth_test("-a", str(authbridge.socket_path), "carol", "carolpass")
    assert refused.returncode == 77
    assert "  reason=disabled-for-test\n" in refused.stdout


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("server", ["authbridge", "dovecot"])
def test_every_mechanism(request: pytest.FixtureRequest, server: str, mechanism: str) -> None:
    socket = request.getfixturevalue(server).socket_path
    good = auth_test("-a", str(socket), "-m", mechanism, "demo", "demopass")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("passdb: demo auth succeeded\n")
    bad = auth_test("-a", str(socket), "--mechanism", mechanism, "demo", "wrong")
    assert bad.returncode == 77 and bad.stdout.startswith("passdb: demo auth failed\n")


def test_password_read_from_stdin_and_x_passthrough(authbridge: AuthbridgeServer) -> None:
    sock = str(authbridge.socket_path)
    piped = auth_test("-a", sock, "--rip", "192.0.2.7", "demo", stdin="demopass\n")
    assert piped.returncode == 0, piped.stdout + piped.stderr
    # -x secured is accepted as doveadm takes it; with --no-secured it alone secures
    passthrough = auth_test("-a", sock, "--no-secured", "-x", "secured", "demo", "demopass")
    assert passthrough.returncode == 0, passthrough.stdout
    empty = auth_test("-a", sock, "demo", stdin="")
    assert empty.returncode == 64 and "Traceback" not in empty.stderr


def test_temporary_failure_exits_75_like_doveadm(base: Path) -> None:
    db = base / "broken.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE other (x TEXT)")  # the query's table is missing
    db.chmod(0o644)
    config = base / "tempfail.toml"
    sock = base / "tempfail.sock"
    config.write_text(
        f'[server]\nsocket = "{sock}"\nsocket_mode = "0666"\n'
        f'[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "{db}"\n'
        "password_query = \"SELECT password FROM users WHERE username = '%u'\"\n"
    )
    log = (base / "tempfail.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "authbridge", "serve", "--config", str(config)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_unix_socket(sock, timeout=15, proc=proc)
        ours = auth_test("-a", str(sock), "demo", "demopass")
        theirs = doveadm_auth(sock, "demo", "demopass", "secured")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        log.close()
    assert theirs.returncode == 75, theirs.stdout + theirs.stderr
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode)


@pytest.mark.parametrize(
    "args",
    [
        ("-a", "/nonexistent/auth-client", "demo", "x"),
        ("-a", "127.0.0.1:notaport", "demo", "x"),
        ("--config", "/nonexistent.toml", "demo", "x"),
    ],
)
def test_unreachable_socket_is_one_line_no_traceback(args: tuple[str, ...]) -> None:
    proc = auth_test(*args)
    assert proc.returncode in (64, 75)
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("authbridge auth test: error: ")


def test_missing_socket_exit_status(tmp_path: Path) -> None:
    """doveadm says 77 (as for a wrong password); we say 75: nothing was refused."""
    ours = auth_test("-a", str(tmp_path / "none"), "demo", "x")
    theirs = doveadm_auth(tmp_path / "none", "demo", "x")
    assert theirs.returncode != 0 and ours.returncode == 75
    assert "No such file or directory" in ours.stderr
