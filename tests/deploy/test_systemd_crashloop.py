"""A crash loop under a real systemd 252 ends with the service back, not stopped.

The host has no systemd as PID 1, so the test boots one: ``unshare`` gives it its own
PID, mount, cgroup, network and UTS namespaces, and it runs chrooted in an overlay of
the host's root whose writes land in a tmpfs (nothing on the host changes). Our units
are installed there unchanged plus a drop-in that only swaps the program (this
checkout, run as root with a test user file). The daemon is then SIGKILLed twice as
often as systemd's default start limit (5 starts in 10 s) allows; it must come back
every time and serve the real ``doveadm auth test`` through the socket systemd holds.
A control run with systemd's default limits must end in a failed (stopped) service: the
test sees the difference the unit's settings make.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.support import missing_peer, require_binary, runtime_dir, wait_for_value, wait_until

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
SYSTEMD = Path("/lib/systemd/systemd")
DOVEADM_AUTH_FAILED = 77
#: systemd's DefaultStartLimitBurst; the loop goes well beyond it.
OLD_BURST = 5
KILLS = 2 * OLD_BURST

BOOT = r"""
set -e
B=$1; UNITS=$2; DROPIN=$3; USERS=$4; shift 4
mount -t tmpfs tmpfs "$B"
mkdir -p "$B/up" "$B/work" "$B/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/up,workdir=$B/work" "$B/root"
R=$B/root
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
# The checkout and the interpreter may live under the /tmp just replaced: bind them back.
for code in "$@"; do mkdir -p "$R$code"; mount --bind "$code" "$R$code"; done
mkdir -p "$R/run/systemd" "$R/etc/systemd/system/authbridge.service.d" "$R/etc/authbridge-test"
echo authbridge-test > "$R/run/systemd/container"
cp "$UNITS/authbridge.socket" "$UNITS/authbridge.service" "$R/etc/systemd/system/"
cp "$DROPIN" "$R/etc/systemd/system/authbridge.service.d/test.conf"
cp "$USERS" "$R/etc/authbridge-test/users"
printf '[Unit]\nDescription=authbridge crash-loop test\nWants=authbridge.socket\n' \
    > "$R/etc/systemd/system/crashtest.target"
exec chroot "$R" env container=authbridge-test /lib/systemd/systemd --system \
    --unit=crashtest.target --log-target=null --show-status=no
"""


def _dropin() -> str:
    return (
        "[Service]\nExecStart=\n"
        f"ExecStart={sys.executable} -m authbridge serve "
        "--passwd-file /etc/authbridge-test/users --dovecot-compat --failure-delay 0\n"
        f"Environment=PYTHONPATH={REPO}\nUser=root\nGroup=root\n"
        # The test interpreter may live under /root (pyenv), which ProtectHome=yes hides,
        # and the checkout (with its venv) under /tmp, which PrivateTmp=yes replaces:
        # both are bound into the service's view read-only, wherever they are.
        "ProtectHome=read-only\n"
        f"BindReadOnlyPaths={' '.join('-' + p for p in _code_paths())}\n"
    )


def _code_paths() -> list[str]:
    """The checkout and the interpreter's trees, which the service must be able to read."""
    paths = {str(REPO), sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent)}
    return sorted(p for p in paths if p != "/")


class Systemd:
    """A systemd booted in its own namespaces; commands run inside with nsenter."""

    def __init__(self, proc: subprocess.Popen[bytes], base: Path) -> None:
        self.proc, self.base = proc, base
        self.pid = 0

    def boot(self) -> None:
        """Wait for systemd to exist, then for it to finish starting its units."""
        found = wait_for_value(self._init_pid, lambda pid: pid is not None, 20, "systemd")
        assert found is not None
        self.pid = found
        wait_until(
            lambda: (
                self.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded")
            ),
            timeout=60,
            what="systemd to finish booting",
        )

    def kill(self) -> None:
        """SIGKILL the namespace's PID 1 (found again if it was not yet recorded)."""
        pid = self.pid or self._init_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # PID 1 of its namespace: all of it goes

    def _init_pid(self) -> int | None:
        for children in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            with contextlib.suppress(FileNotFoundError):
                for pid in children.read_text().split():
                    if b"--unit=crashtest.target" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return int(pid)
        assert self.proc.poll() is None, "the namespace setup exited"
        return None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", "-r", "-w", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def path(self, inside: str) -> Path:
        return Path(f"/proc/{self.pid}/root{inside}")


@pytest.fixture
def systemd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Systemd]:
    if os.geteuid() != 0:
        missing_peer("booting a systemd in namespaces needs root")
    if not SYSTEMD.exists():
        missing_peer(f"{SYSTEMD} not installed")
    unshare = require_binary("unshare")
    require_binary("nsenter")
    base = runtime_dir(tmp_path_factory, "crashloop")
    (base / "mnt").mkdir()
    (base / "boot.sh").write_text(BOOT)
    (base / "test.conf").write_text(_dropin())
    (base / "users").write_text("demo:{PLAIN}demopass::::::\n")
    proc = subprocess.Popen(
        [unshare, "--pid", "--fork", "--mount", "--cgroup", "--net", "--uts",
         "--propagation", "private", "bash", str(base / "boot.sh"),
         str(base / "mnt"), str(UNITS), str(base / "test.conf"), str(base / "users"),
         *_code_paths()],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    manager = Systemd(proc, base)
    try:
        manager.boot()
        yield manager
    finally:
        manager.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _auth(manager: Systemd, password: str = "demopass") -> int:
    socket_path = manager.path("/run/authbridge/auth-client")
    return subprocess.run(
        [require_binary("doveadm"), "auth", "test", "-a", str(socket_path), "demo", password],
        capture_output=True,
        timeout=60,
    ).returncode


def _main_pid(manager: Systemd) -> int:
    state = manager.show("authbridge.service", "MainPID", "ActiveState")
    return int(state["MainPID"]) if state.get("ActiveState") == "active" else 0


def _replaced(manager: Systemd, pid: int) -> bool:
    """The daemon with MainPID ``pid`` is gone (restarting, failed or running anew)."""
    return _main_pid(manager) != pid


def _kill_loop(manager: Systemd, kills: int) -> dict[str, str]:
    """SIGKILL the running daemon ``kills`` times, each time once it is active again."""
    for _ in range(kills):
        pid = wait_for_value(lambda: _main_pid(manager), bool, 30, "authbridge.service active")
        result = manager.run("systemctl", "kill", "--signal=SIGKILL", "authbridge.service")
        assert result.returncode == 0, result.stderr
        wait_until(partial(_replaced, manager, pid), 30, "the killed daemon to be noticed")
    return manager.show("authbridge.service", "ActiveState", "Result", "NRestarts")


def test_a_crash_loop_ends_with_the_service_serving(systemd: Systemd) -> None:
    assert _auth(systemd) == 0  # socket activation starts it
    started = time.monotonic()
    _kill_loop(systemd, KILLS)
    wait_for_value(lambda: _main_pid(systemd), bool, 30, "authbridge.service back after the loop")
    elapsed = time.monotonic() - started
    state = systemd.show("authbridge.service", "ActiveState", "NRestarts")
    assert state["ActiveState"] == "active", state
    assert int(state["NRestarts"]) >= KILLS, state
    socket_state = systemd.show("authbridge.socket", "ActiveState", "Result")
    assert socket_state == {"ActiveState": "active", "Result": "success"}, socket_state
    assert _auth(systemd) == 0
    assert _auth(systemd, "wrong") == DOVEADM_AUTH_FAILED
    # RestartSec=1s: the loop cost about a second per kill, not more.
    assert elapsed < KILLS * 4, f"{KILLS} restarts took {elapsed:.1f} s"


def test_with_systemd_defaults_the_same_loop_stops_the_service(systemd: Systemd) -> None:
    """Control: the old settings (systemd's default start limit) end in a stopped service."""
    dropin = systemd.path("/etc/systemd/system/authbridge.service.d/old-limits.conf")
    dropin.write_text(
        "[Unit]\nStartLimitIntervalSec=10s\nStartLimitBurst=5\n"
        "[Service]\nRestart=on-failure\nRestartSec=100ms\n"
    )
    assert systemd.run("systemctl", "daemon-reload").returncode == 0
    assert _auth(systemd) == 0
    for _ in range(KILLS):
        pid = _main_pid(systemd)
        if pid:
            systemd.run("systemctl", "kill", "--signal=SIGKILL", "authbridge.service")
            wait_until(partial(_replaced, systemd, pid), 30, "the killed daemon to be noticed")
        state = systemd.show("authbridge.service", "ActiveState", "Result")
        if state["ActiveState"] == "failed":
            break
        wait_until(
            lambda: (
                _main_pid(systemd) != 0
                or systemd.show("authbridge.service", "ActiveState")["ActiveState"] == "failed"
            ),
            30,
            "a restart or the start limit",
        )
    # Stopped for good (systemd 252 keeps the last run's Result, e.g. "signal", here).
    state = systemd.show("authbridge.service", "ActiveState", "NRestarts")
    assert state["ActiveState"] == "failed", state
    assert int(state["NRestarts"]) < KILLS, state
