"""Fixtures for the emitter tests: TLS files, test logins, and the auth server behind the MTAs.

The auth server behind the MTAs is always ``authbridge serve`` (the product under test),
started from this checkout; the same configs were first proven against the real Dovecot.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authbridge import cli
from tests.support import require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.tls import TlsFiles, make_self_signed

# login -> password; {PLAIN} storage so that CRAM-MD5 works for everyone.
USERS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol@example.org": "carol-secret",
}


@dataclass(frozen=True)
class AuthSocket:
    """Where the running ``authbridge serve`` listens."""

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


@pytest.fixture(scope="session")
def auth_socket(mta_dir: Path, users_file: Path) -> Iterator[AuthSocket]:
    """``authbridge serve`` in Dovecot-compatible mode: these tests are about the MTA
    configuration, so the daemon's own policy gates stay out of the way (see
    test_policy_end_to_end.py for the two together)."""
    base = mta_dir / "auth"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    socket_path = base / "auth-client"
    args = ("--dovecot-compat", "--failure-delay", "0")
    with AuthbridgeServer(users_file, socket_path, extra_args=args):
        yield AuthSocket(socket_path)


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
