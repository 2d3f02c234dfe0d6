"""The daemon as a process: socket handling, config errors, shutdown, a busy hash pool.

These run the real ``authbridge serve`` and talk to it over its UNIX socket with a
minimal client written on the project's codec (interop with the real MTAs lives in
tests/interop/).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import pytest

from authbridge.core import wire
from tests.support import require_binary, runtime_dir, wait_for_text, wait_for_unix_socket
from tests.support.authbridge_proc import AuthbridgeServer

HELLO = b"VERSION\t1\t2\nCPID\t1\n"


def _users(path: Path, slow_cost: int = 13) -> Path:
    slow = bcrypt.hashpw(b"slowpass", bcrypt.gensalt(slow_cost)).decode()
    path.write_text(f"userx:{{PLAIN}}secret\nslow:{{BLF-CRYPT}}{slow}\n")
    return path


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class Client:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = wire.LineBuffer()
        self.lines: list[str] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str | None:
        while not self.lines:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.lines.extend(self.buf.feed(data))
        return self.lines.pop(0)

    def until(self, prefix: str) -> str:
        while True:
            line = self.line()
            assert line is not None, f"connection closed while waiting for {prefix!r}"
            if line.startswith(prefix):
                return line

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rundir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "serve")


def _serve(rundir: Path, *extra: str) -> AuthbridgeServer:
    users = _users(rundir / "users")
    return AuthbridgeServer(
        users,
        rundir / "auth-client",
        extra_args=["--dovecot-compat", "--failure-delay", "0", *extra],
    )


def test_socket_gets_the_requested_mode_and_group(rundir: Path) -> None:
    users = _users(rundir / "users", slow_cost=4)
    server = AuthbridgeServer(
        users, rundir / "auth-client", extra_args=["--socket-group", "postfix", "--dovecot-compat"]
    )
    with server:
        st = (rundir / "auth-client").stat()
        assert oct(st.st_mode & 0o777) == "0o666"
        import grp

        assert grp.getgrgid(st.st_gid).gr_name == "postfix"


def test_a_stale_socket_file_is_replaced(rundir: Path) -> None:
    path = rundir / "auth-client"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed run's leftover
    with _serve(rundir):
        client = Client(path)
        client.send(
            HELLO + f"AUTH\t1\tPLAIN\tservice=smtp\tresp={_plain('userx', 'secret')}\n".encode()
        )
        assert client.until("OK") == "OK\t1\tuser=userx"
        client.close()


def _run_serve(rundir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=rundir,
    )


def test_a_live_socket_is_not_stolen(rundir: Path) -> None:
    path = rundir / "auth-client"
    with _serve(rundir):
        second = _run_serve(rundir, "--socket", str(path), "--passwd-file", str(rundir / "users"))
        assert second.returncode != 0
        assert "another server is already listening" in second.stderr
        client = Client(path)  # the first server still owns it
        client.send(HELLO)
        assert client.until("DONE") == "DONE"
        client.close()


def test_a_path_that_is_not_a_socket_is_left_alone(rundir: Path) -> None:
    path = rundir / "auth-client"
    path.write_text("not a socket")
    result = _run_serve(rundir, "--socket", str(path), "--passwd-file", str(_users(rundir / "u")))
    assert result.returncode != 0 and "is not a socket" in result.stderr
    assert path.read_text() == "not a socket"


def test_bad_config_names_file_line_and_key_and_exits_non_zero(rundir: Path) -> None:
    config = rundir / "bad.toml"
    config.write_text('[server]\nsocket = "/tmp/x"\n\n[policy]\nfailure_delay = "soon"\n')
    result = _run_serve(rundir, "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:5: policy.failure_delay: expected float, got str" in result.stderr


def test_an_unparsable_store_at_start_is_a_clear_error(rundir: Path) -> None:
    users = rundir / "users"
    users.write_text("ok:{PLAIN}x\nbad:\x00\n")
    result = _run_serve(rundir, "--socket", str(rundir / "s"), "--passwd-file", str(users))
    assert result.returncode == 1
    assert f"{users}:2" in result.stderr


def _received(server: AuthbridgeServer, request_id: int) -> None:
    """Wait until the daemon's debug trace shows it has read AUTH ``request_id``.

    The request is dispatched to the hash pool in the same step that reads it, so from
    then on its check is in flight.
    """
    wait_for_text(server.stderr_text, f'"line": "AUTH\\t{request_id}\\t')


def test_sigterm_finishes_in_flight_requests_then_removes_the_socket(rundir: Path) -> None:
    server = _serve(rundir, "--log-level", "debug")
    server.start()
    client = Client(rundir / "auth-client")
    client.send(
        HELLO + f"AUTH\t7\tPLAIN\tservice=smtp\tresp={_plain('slow', 'slowpass')}\n".encode()
    )
    client.until("DONE")
    _received(server, 7)  # the bcrypt check (cost 13, ~0.5 s) is now running
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGTERM)
    assert client.until("OK") == "OK\t7\tuser=slow"
    assert client.line() is None  # then the server closes the connection
    assert server.proc.wait(timeout=15) == 0
    assert not (rundir / "auth-client").exists()
    client.close()


def test_a_slow_hash_does_not_stall_other_connections(rundir: Path) -> None:
    with _serve(rundir, "--log-level", "debug") as server:
        busy = Client(rundir / "auth-client")
        busy.send(HELLO)
        busy.until("DONE")
        for request_id in range(1, 5):  # four cost-13 bcrypt checks: seconds of CPU
            busy.send(
                f"AUTH\t{request_id}\tPLAIN\tservice=smtp\t"
                f"resp={_plain('slow', 'slowpass')}\n".encode()
            )
        for request_id in range(1, 5):
            _received(server, request_id)
        fresh = Client(rundir / "auth-client")
        fresh.send(
            HELLO + f"AUTH\t1\tPLAIN\tservice=smtp\tresp={_plain('userx', 'secret')}\n".encode()
        )
        assert fresh.until("OK") == "OK\t1\tuser=userx"
        # The cheap request was answered while the expensive ones were still running.
        busy.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            busy.sock.recv(1)
        busy.sock.setblocking(True)
        for _ in range(4):
            assert busy.until("OK").endswith("user=slow")
        busy.close()
        fresh.close()


def test_store_file_changes_are_picked_up_and_a_broken_one_keeps_the_old(rundir: Path) -> None:
    with _serve(rundir) as server:
        users = rundir / "users"
        users.write_text("userx:{PLAIN}changed\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            client = Client(rundir / "auth-client")
            client.send(
                HELLO
                + f"AUTH\t1\tPLAIN\tservice=smtp\tresp={_plain('userx', 'changed')}\n".encode()
            )
            reply = client.line()
            while reply is not None and not reply.startswith(("OK", "FAIL")):
                reply = client.line()
            client.close()
            if reply and reply.startswith("OK"):
                break
            time.sleep(0.3)
        else:
            pytest.fail("the changed store was never picked up")
        users.write_text("userx:{PLAIN}changed\nbroken:\x00binary garbage\n")
        log = wait_for_text(server.stderr_text, "store reload failed", timeout=15)
        client = Client(rundir / "auth-client")
        client.send(
            HELLO + f"AUTH\t1\tPLAIN\tservice=smtp\tresp={_plain('userx', 'changed')}\n".encode()
        )
        assert client.until("OK") == "OK\t1\tuser=userx"
        client.close()
        assert f"{users}:2" in log


def test_a_broken_stored_hash_fails_that_user_only_and_logs_user_and_scheme(rundir: Path) -> None:
    users = rundir / "users"
    broken_data = "zz-not-hex-nor-base64-zz"
    users.write_text(f"userx:{{PLAIN}}secret\nbroken:{{PLAIN-MD5}}{broken_data}\n")
    server = AuthbridgeServer(users, rundir / "auth-client", extra_args=["--failure-delay", "0"])
    with server:
        client = Client(rundir / "auth-client")
        client.send(HELLO)
        client.until("DONE")
        client.send(
            f"AUTH\t1\tPLAIN\tservice=smtp\tsecured\tresp={_plain('broken', 'x')}\n".encode()
        )
        # The entry's fault, reported at load: a plain FAIL (535), never a 4xx (issue #17).
        assert client.until("FAIL") == "FAIL\t1\tuser=broken"
        other = Client(rundir / "auth-client")
        other.send(
            HELLO
            + f"AUTH\t1\tPLAIN\tservice=smtp\tsecured\tresp={_plain('userx', 'secret')}\n".encode()
        )
        assert other.until("OK") == "OK\t1\tuser=userx"
        log = wait_for_text(server.stderr_text, "login refused: invalid store entry")
    refused = [
        event
        for event in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
        if event.get("event") == "login refused: invalid store entry"
    ]
    assert refused[0]["user"] == "broken"
    assert refused[0]["where"] == f"{users}:2"
    assert refused[0]["reason"].startswith("user 'broken': PLAIN-MD5")
    assert broken_data not in log
    assert '"result": "tempfail"' not in log


def test_the_readme_demo_command_serves_the_bundled_users(rundir: Path) -> None:
    """README: `authbridge serve --demo`, then `authbridge auth test` (and the doveadm
    alternative) against ./authbridge-demo/, both exactly as the README prints them."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = ".venv/bin/authbridge auth test -a ./authbridge-demo/auth-client demo demopass"
    assert f"\n{command}\n" in readme
    alternative = "doveadm auth test -a ./authbridge-demo/auth-client -x secured demo demopass"
    assert alternative in readme
    log = (rundir / "demo.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "authbridge", "serve", "--demo"],
        cwd=rundir, stderr=log, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        socket_path = rundir / "authbridge-demo" / "auth-client"
        wait_for_unix_socket(socket_path, timeout=15, proc=proc)
        # the README's own command, from the README's directory, no Dovecot involved (the
        # venv's script is this interpreter's `authbridge`)
        ours = subprocess.run(
            [sys.executable, "-m", "authbridge", *command.split()[1:]],
            cwd=rundir, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert ours.returncode == 0, ours.stdout + ours.stderr
        assert ours.stdout == "passdb: demo auth succeeded\nextra fields:\n  user=demo\n"
        doveadm = require_binary("doveadm")
        ok = subprocess.run(
            [doveadm, *alternative.split()[1:]],
            cwd=rundir, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout == ours.stdout  # the same lines from both clients
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.close()
