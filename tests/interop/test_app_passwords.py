"""App passwords behind the real MTAs: Exim 4 and Postfix in front of one authbridge.

The app passwords are made and revoked with the real ``authbridge app-password``
command. Through SMTP AUTH: the right one gets 235, one scoped to ``imap`` gets 535, a
revoked one gets 535 (once the daemon's watcher reloaded the file: waited for in its
log, no sleep); with ``require_app_password_for = ["smtp"]`` (a SIGHUP reload) the main
password gets 535 and the app password 235. A missing Exim, Postfix or swaks fails the
test under CI=true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.common import AUTHBRIDGE_ARGS
from tests.support import (
    free_tcp_port,
    require_binary,
    runtime_dir,
    wait_for_text,
    wait_for_value,
)
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import EximDaemon, write_exim_config
from tests.support.postfix import PostfixMaster, write_postfix_config
from tests.support.swaks import run_swaks
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
MTAS = ("exim", "postfix")


@dataclass(frozen=True)
class Rig:
    server: AuthbridgeServer
    config: Path
    exim: EximDaemon
    postfix: PostfixMaster

    def smtp(self, mta: str) -> str:
        return self.exim.server if mta == "exim" else self.postfix.server


def _config_text(users: Path, apps: Path, require: bool) -> str:
    text = f'[[store]]\npath = "{users}"\napp_passwords = "{apps}"\n'
    text += '[app_passwords]\nscheme = "SSHA512"\n'
    return text + ('require_app_password_for = ["smtp"]\n' if require else "")


@pytest.fixture(scope="module")
def rig(interop_dir: Path, tls_files: TlsFiles) -> Iterator[Rig]:
    require_binary("exim")
    require_binary("swaks")
    base = runtime_dir(interop_dir, "apppw")
    users = base / "users"
    users.write_text("".join(f"{mta}-user:{{PLAIN}}main-pass::::::\n" for mta in MTAS))
    config = base / "authbridge.toml"
    config.write_text(_config_text(users, base / "users.app", require=False))
    args = [*AUTHBRIDGE_ARGS, "--config", str(config)]
    with AuthbridgeServer(users, base / "auth-client", extra_args=args) as server:
        exim_config = write_exim_config(
            base / "exim", auth_socket=server.socket_path, port=free_tcp_port(), tls=tls_files
        )
        postfix_config = write_postfix_config(
            base / "postfix", auth_socket=server.socket_path, port=free_tcp_port(), tls=tls_files
        )
        with EximDaemon(exim_config) as exim, PostfixMaster(postfix_config) as postfix:
            yield Rig(server, config, exim, postfix)


def app_password(config: Path, *args: str) -> str:
    """Run ``authbridge app-password ARGS``; its standard output (the password for add)."""
    done = subprocess.run(
        [sys.executable, "-m", "authbridge", "app-password", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def code(rig: Rig, mta: str, user: str, password: str, mech: str = "PLAIN") -> int:
    result = run_swaks(server=rig.smtp(mta), auth=mech, user=user, password=password)
    assert result.auth_code is not None, result.transcript
    return result.auth_code


def reloads_seen(rig: Rig, event: str) -> int:
    """How many ``event`` lines (JSON log) the daemon has written so far."""
    return rig.server.stderr_text().count(f'"event": "{event}"')


@pytest.mark.parametrize("mta", MTAS)
def test_app_passwords_through_smtp_auth(rig: Rig, mta: str) -> None:
    user = f"{mta}-user"
    imap = app_password(rig.config, "add", user, "--label", "tablet", "--service", "imap")
    smtp = app_password(rig.config, "add", user, "--label", "phone", "--service", "smtp")
    # The daemon serves the file with both once the one added last works (the watcher
    # reloads within a second; waited for with a deadline).
    wait_for_value(lambda: code(rig, mta, user, smtp), lambda c: c == 235, what="phone's 235")
    assert code(rig, mta, user, smtp, "LOGIN") == 235
    assert code(rig, mta, user, imap) == 535  # scoped to imap: refused for SMTP
    assert code(rig, mta, user, "main-pass") == 235  # no requirement yet
    before = reloads_seen(rig, "store reloaded")
    app_password(rig.config, "revoke", user, "phone")
    wait_for_text(rig.server.stderr_text, '"event": "store reloaded"', count=before + 1, timeout=15)
    assert code(rig, mta, user, smtp) == 535
    assert code(rig, mta, user, "main-pass") == 235


def test_require_app_password_for_smtp(rig: Rig) -> None:
    users = rig.server.users_file
    apps = users.with_name("users.app")
    keys = {
        mta: app_password(rig.config, "add", f"{mta}-user", "--label", "laptop") for mta in MTAS
    }
    rig.config.write_text(_config_text(users, apps, require=True))
    assert rig.server.proc is not None
    before = reloads_seen(rig, "reloaded")
    os.kill(rig.server.proc.pid, signal.SIGHUP)  # our own daemon, by its PID
    try:
        # A SIGHUP reload opens the stores afresh: both laptops are in.
        wait_for_text(rig.server.stderr_text, '"event": "reloaded"', count=before + 1, timeout=15)
        for mta in MTAS:
            user = f"{mta}-user"
            assert code(rig, mta, user, "main-pass") == 535, mta
            assert code(rig, mta, user, keys[mta]) == 235, mta
            assert code(rig, mta, user, keys[mta], "LOGIN") == 235, mta
    finally:
        rig.config.write_text(_config_text(users, apps, require=False))
        os.kill(rig.server.proc.pid, signal.SIGHUP)
        wait_for_text(rig.server.stderr_text, '"event": "reloaded"', count=before + 2, timeout=15)
