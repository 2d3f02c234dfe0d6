"""Fixtures for the emitter tests: TLS files, test logins, and the auth server behind the MTAs.

The auth server is ``authbridge serve`` (the product under test). Until the daemon is
importable on a developer checkout the tests fall back to the real Dovecot with a
warning, so the MTA side can still be proven; with CI=true there is no fallback.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authbridge import cli
from tests.support import require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth
from tests.support.tls import TlsFiles, make_self_signed

# login -> password; {PLAIN} storage so that CRAM-MD5 works for everyone.
USERS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol@example.org": "carol-secret",
}
DOMAIN = "example.org"


@dataclass(frozen=True)
class AuthSocket:
    kind: str  # "authbridge" or "dovecot"
    path: Path


@pytest.fixture(scope="session")
def mta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "mta")


@pytest.fixture(scope="session")
def tls_files(mta_dir: Path) -> TlsFiles:
    require_binary("openssl")
    return make_self_signed(mta_dir / "tls")


@pytest.fixture(scope="session")
def users_file(mta_dir: Path) -> Path:
    path = mta_dir / "users.passwd"
    path.write_text(
        "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in USERS.items())
    )
    path.chmod(0o644)
    return path


def _authbridge_serve_available() -> str | None:
    """None if ``authbridge serve --help`` runs, else why not."""
    proc = subprocess.run(
        [sys.executable, "-m", "authbridge", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip().splitlines() or ["no output"])[-1]


@pytest.fixture(scope="session")
def auth_socket(mta_dir: Path, users_file: Path) -> Iterator[AuthSocket]:
    base = mta_dir / "auth"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    socket_path = base / "auth-client"
    problem = _authbridge_serve_available()
    if problem is None:
        args = ("--dovecot-compat", "--failure-delay", "0")
        with AuthbridgeServer(users_file, socket_path, extra_args=args):
            yield AuthSocket("authbridge", socket_path)
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"authbridge serve is not usable: {problem}")
    warnings.warn(
        f"authbridge serve is not usable ({problem}); MTA tests run against real Dovecot",
        stacklevel=1,
    )
    with DovecotAuth(users_file, socket_path, workdir=base / "dovecot"):
        yield AuthSocket("dovecot", socket_path)


@pytest.fixture(scope="session")
def exim_bin() -> str:
    return require_binary("exim")


@dataclass(frozen=True)
class Emitted:
    returncode: int
    stdout: str
    stderr: str


def emit(*argv: str) -> Emitted:
    """Run the CLI entry point in-process (as ``authbridge ARGV``) and capture its output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return Emitted(code, out.getvalue(), err.getvalue())


def run_checked(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a real binary; fail with its output if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
    return proc
