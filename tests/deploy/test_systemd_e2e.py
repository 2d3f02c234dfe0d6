"""`authbridge serve` under the systemd protocols, end to end, with real peers.

* Socket activation: ``systemd-socket-activate`` binds the socket and execs
  ``python -m authbridge serve`` on the first connection; the real ``doveadm auth test``
  authenticates through the inherited socket. The whole chain runs under the kernel's
  MemoryDenyWriteExecute (as the unit file asks), so the real hash verifications are
  checked against it too.
* sd_notify: the test plays the service manager on a datagram socket and checks READY=1
  (only once the socket accepts), WATCHDOG=1 pings, RELOADING=1 + MONOTONIC_USEC then
  READY=1 around a SIGHUP reload (which must pick up a new user), and STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy import mdwe
from tests.support import require_binary, runtime_dir, wait_for_unix_socket

REPO = Path(__file__).resolve().parents[2]
DOVEADM_AUTH_FAILED = 77


def _hash(password: str, scheme: str) -> str:
    result = subprocess.run(
        [require_binary("doveadm"), "pw", "-s", scheme, "-p", password],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def rundir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = runtime_dir(tmp_path_factory, "systemd-e2e")
    users = base / "users"
    users.write_text(
        "plainuser:{PLAIN}plainpass::::::\n"
        f"sha512user:{_hash('sha512pass', 'SHA512-CRYPT')}::::::\n"
        f"bcryptuser:{_hash('bcryptpass', 'BLF-CRYPT')}::::::\n"
        f"argonuser:{_hash('argonpass', 'ARGON2ID')}::::::\n"
    )
    users.chmod(0o644)
    return base


def _doveadm(socket_path: Path, user: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("doveadm"), "auth", "test", "-a", str(socket_path), user, password],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _serve_args(users: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "authbridge",
        "serve",
        "--passwd-file",
        str(users),
        "--dovecot-compat",
        "--failure-delay",
        "0",
        "--log-format",
        "console",
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


@contextlib.contextmanager
def _running(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
            cwd=log.parent,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _stop(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit within 15 s of SIGTERM\n{log.read_text(errors='replace')}")


# --------------------------------------------------------------------- socket activation


def test_socket_activated_daemon_serves_doveadm(rundir: Path) -> None:
    activate = require_binary("systemd-socket-activate")
    path = rundir / "auth-client"
    log = rundir / "activated.log"
    prefix = mdwe.MDWE_PREFIX if mdwe.supported() else []
    cmd = [
        *prefix,
        activate,
        "--listen",
        str(path),
        "--fdname=auth-client",
        "-E",
        "PYTHONPATH",
        *_serve_args(rundir / "users"),
    ]
    with _running(cmd, _env(), log) as proc:
        deadline = time.monotonic() + 15
        while not path.exists():
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "systemd-socket-activate did not bind"
            time.sleep(0.02)
        # The first connection makes systemd-socket-activate exec authbridge, which must
        # accept that very connection from the inherited socket.
        first = _doveadm(path, "plainuser", "plainpass")
        assert first.returncode == 0, first.stdout + first.stderr + log.read_text()
        assert "passdb: plainuser auth succeeded" in first.stdout
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"authbridge" in cmdline and b"serve" in cmdline  # exec'd in place
        # Real verifications in every native backend (libc/libpass crypt, bcrypt's Rust,
        # argon2-cffi), all under MemoryDenyWriteExecute.
        for user in ("sha512", "bcrypt", "argon"):
            good = _doveadm(path, f"{user}user", f"{user}pass")
            assert good.returncode == 0, good.stdout + good.stderr + log.read_text()
        wrong = _doveadm(path, "sha512user", "not-the-Pa55word")
        assert wrong.returncode == DOVEADM_AUTH_FAILED, wrong.stdout + wrong.stderr
        assert _stop(proc, log) == 0, log.read_text(errors="replace")
    text = log.read_text(errors="replace")
    assert "systemd:auth-client" in text  # served the inherited socket, did not bind its own
    for secret in ("plainpass", "sha512pass", "bcryptpass", "argonpass", "not-the-Pa55word"):
        assert secret not in text
    # The socket file belongs to the service manager (RemoveOnStop= removes it); the
    # daemon must not unlink it, or a restarted daemon would be unreachable.
    assert path.is_socket()


def test_bad_inherited_fd_is_a_clear_startup_error(rundir: Path) -> None:
    """LISTEN_FDS promises a socket that is not there: exit 1 with a message, no bind."""
    log = rundir / "bad-fd.log"
    code = (
        "import os, runpy, sys; os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.environ['LISTEN_FDS'] = '1'; sys.argv = ['authbridge'] + sys.argv[1:]; "
        "runpy.run_module('authbridge', run_name='__main__')"
    )
    cmd = [sys.executable, "-c", code, *_serve_args(rundir / "users")[3:]]
    cmd += ["--socket", str(rundir / "never-bound")]
    with _running(cmd, _env(), log) as proc:
        assert proc.wait(30) == 1
    assert "inherited fd 3 is not open" in log.read_text()
    assert not (rundir / "never-bound").exists()


# ------------------------------------------------------------------------------ sd_notify


class _Manager:
    """The service manager's side of NOTIFY_SOCKET: a bound datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.watchdog_pings = 0
        self.seen: list[list[str]] = []

    def drain(self) -> None:
        """Read everything already queued (counting watchdog pings) without waiting."""
        self.sock.settimeout(0)
        while True:
            try:
                fields = self.sock.recv(4096).decode().split("\n")
            except BlockingIOError:
                return
            if fields == ["WATCHDOG=1"]:
                self.watchdog_pings += 1
            else:
                self.seen.append(fields)

    def expect(
        self, field: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20
    ) -> list[str]:
        """The next message containing ``field`` (WATCHDOG=1 pings are counted, skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if proc.poll() is not None:
                # The process may have sent its last message and exited before we read
                # it (a shutdown takes a few ms): what is queued still counts.
                queued = len(self.seen)
                self.drain()
                for fields in self.seen[queued:]:
                    if field in fields:
                        return fields
            if remaining <= 0 or proc.poll() is not None:
                pytest.fail(
                    f"no {field} (exit status {proc.poll()}); messages so far {self.seen}\n"
                    f"{log.read_text(errors='replace')}"
                )
            self.sock.settimeout(min(remaining, 0.5))
            try:
                fields = self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                continue
            if fields == ["WATCHDOG=1"]:
                self.watchdog_pings += 1
                if field != "WATCHDOG=1":
                    continue
            self.seen.append(fields)
            if field in fields:
                return fields


def test_sd_notify_lifecycle(rundir: Path) -> None:
    socket_path = rundir / "auth-client"
    log = rundir / "notify.log"
    manager = _Manager(rundir / "notify")
    users = rundir / "users"
    env = _env(NOTIFY_SOCKET=str(manager.path), WATCHDOG_USEC="1000000")
    cmd = [*_serve_args(users), "--socket", str(socket_path), "--socket-mode", "0666"]
    with manager.sock, _running(cmd, env, log) as proc:
        ready = manager.expect("READY=1", proc, log)
        # READY=1 means usable: the socket already accepts and the stores are loaded.
        wait_for_unix_socket(socket_path, timeout=0.5)
        assert _doveadm(socket_path, "plainuser", "plainpass").returncode == 0
        assert any(f.startswith("STATUS=") for f in ready), ready

        # WatchdogSec=1s -> a ping every 0.5 s: three in a row, each well inside the 1 s
        # after which systemd would kill the service (timed as they arrive, no sleep).
        manager.drain()
        manager.expect("WATCHDOG=1", proc, log, timeout=2)
        last = time.monotonic()
        for _ in range(2):
            manager.expect("WATCHDOG=1", proc, log, timeout=2)
            gap, last = time.monotonic() - last, time.monotonic()
            assert gap < 1.0, f"{gap:.2f} s between watchdog pings; WatchdogSec is 1 s"

        # Reload: a user added to the store is served after RELOADING=1 ... READY=1.
        assert _doveadm(socket_path, "newuser", "newpass").returncode == DOVEADM_AUTH_FAILED
        with open(users, "a") as f:
            f.write("newuser:{PLAIN}newpass::::::\n")
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        reloading = manager.expect("RELOADING=1", proc, log)
        stamps = [f for f in reloading if f.startswith("MONOTONIC_USEC=")]
        assert len(stamps) == 1, reloading
        assert int(stamps[0].split("=", 1)[1]) >= before
        manager.expect("READY=1", proc, log)
        added = _doveadm(socket_path, "newuser", "newpass")
        assert added.returncode == 0, added.stdout + added.stderr + log.read_text()

        proc.send_signal(signal.SIGTERM)
        manager.expect("STOPPING=1", proc, log)
        assert proc.wait(15) == 0, log.read_text(errors="replace")
    assert not socket_path.exists()
