"""Tests of tests/support: the helpers every interop test relies on.

They live with the conformance suite because its owner owns tests/support.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_tcp_port, require_binary, runtime_dir, wait_for_unix_socket
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth, DovecotError


def test_require_binary_finds_sh() -> None:
    assert Path(require_binary("sh")).is_file()


def test_require_binary_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_binary("no-such-binary-authbridge-test")


def test_require_binary_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_binary("no-such-binary-authbridge-test")


def test_free_tcp_port_is_bindable() -> None:
    port = free_tcp_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_runtime_dir_is_traversable(tmp_path_factory: pytest.TempPathFactory) -> None:
    made = runtime_dir(tmp_path_factory, "traverse")
    current = made
    while current != Path("/tmp"):
        assert stat.S_IMODE(current.stat().st_mode) & 0o005 == 0o005, current
        current = current.parent
    # A user other than root must be able to reach it (nobody = 65534).
    setpriv = require_binary("setpriv")
    probe = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "ls", str(made)],
        capture_output=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr


def test_runtime_dir_without_base_is_under_tmp() -> None:
    made = runtime_dir(None, "plain")
    try:
        assert made.parent == Path("/tmp").resolve()
        assert stat.S_IMODE(made.stat().st_mode) == 0o755
    finally:
        made.rmdir()


def test_wait_for_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with pytest.raises(TimeoutError):
        wait_for_unix_socket(path, timeout=0.2)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        wait_for_unix_socket(path, timeout=2)


def test_wait_for_unix_socket_notices_dead_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(RuntimeError):
        wait_for_unix_socket(tmp_path / "never", timeout=5, proc=proc)


def _handshake(path: Path) -> list[bytes]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        data = b""
        while not data.endswith(b"DONE\n"):
            chunk = sock.recv(4096)
            assert chunk, "server closed before DONE"
            data += chunk
    return data.splitlines()


@pytest.mark.interop
def test_dovecot_mechanisms_setting(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = runtime_dir(tmp_path_factory, "dvmech")
    users = base / "users"
    users.write_text("userx:{PLAIN}secret::::::\n")
    users.chmod(0o644)
    with DovecotAuth(users, base / "auth", mechanisms=("login",)) as server:
        lines = _handshake(server.socket_path)
        assert [line for line in lines if line.startswith(b"MECH")] == [b"MECH\tLOGIN\tplaintext"]
        pid = server.proc.pid if server.proc else 0
    assert not (base / "auth").exists()
    with pytest.raises(ProcessLookupError):  # stopped and reaped: the PID is gone
        os.kill(pid, 0)


@pytest.mark.interop
def test_dovecot_bad_setting_is_reported(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = runtime_dir(tmp_path_factory, "dvbad")
    users = base / "users"
    users.write_text("userx:{PLAIN}secret::::::\n")
    with (
        pytest.raises(DovecotError, match="doveconf"),
        DovecotAuth(users, base / "auth", extra_settings=["no_such_setting = 1"]),
    ):
        pass


def test_authbridge_command_line(tmp_path: Path) -> None:
    server = AuthbridgeServer(
        tmp_path / "users", tmp_path / "sock", extra_args=("--dovecot-compat",)
    )
    command = server.command()
    assert command[:4] == [sys.executable, "-m", "authbridge", "serve"]
    assert command[command.index("--socket") + 1] == str(tmp_path / "sock")
    assert command[command.index("--mechanisms") + 1] == "plain,login,cram-md5"
    assert command[-1] == "--dovecot-compat"
