"""authbridge.daemon.systemd.inherited_sockets with real fd passing.

The environment-only cases run in-process on a dict; everything that needs fds 3, 4, ...
runs in a child process, which receives real sockets the way systemd hands them over:
``_CHILD_PRELUDE`` moves the passed fds to 3.. and sets LISTEN_PID to the child's own pid.
A second set of tests lets ``systemd-socket-activate`` do the handing over itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from authbridge.daemon.systemd import SocketActivationError, inherited_sockets
from tests.support import require_binary

REPO = str(Path(__file__).resolve().parents[2])

# Runs first in every child: put the fds named in PASS_FDS at 3, 4, ... like systemd does.
_CHILD_PRELUDE = textwrap.dedent(
    """
    import fcntl, os
    passed = [int(fd) for fd in os.environ.pop("PASS_FDS").split(",") if fd]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in passed]
    for fd in passed:
        os.close(fd)
    for index, fd in enumerate(high):
        os.dup2(fd, 3 + index)   # dup2 leaves the new fd inheritable, as systemd does
        os.close(fd)
    if os.environ.pop("SET_LISTEN_PID", "") == "self":
        os.environ["LISTEN_PID"] = str(os.getpid())
    """
)

# Reports what inherited_sockets() returned, then answers one connection per socket.
_CHILD_REPORT = textwrap.dedent(
    """
    import json, os, socket, sys
    from authbridge.daemon.systemd import SocketActivationError, inherited_sockets
    try:
        found = inherited_sockets()
    except SocketActivationError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(3)
    report = {
        "pid": os.getpid(),
        "sockets": [
            {
                "name": name,
                "fd": sock.fileno(),
                "family": int(sock.family),
                "type": int(sock.type),
                "listening": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
                "cloexec": not os.get_inheritable(sock.fileno()),
            }
            for name, sock in found
        ],
        "env": {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")},
    }
    print(json.dumps(report), flush=True)
    for name, sock in found:
        conn, _ = sock.accept()
        conn.sendall(name.encode())
        conn.close()
    """
)


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def _spawn(fds: list[int], env: dict[str, str], body: str = _CHILD_REPORT) -> subprocess.Popen[str]:
    env = _child_env({"PASS_FDS": ",".join(map(str, fds)), **env})
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD_PRELUDE + body],
        pass_fds=fds,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"child printed nothing (rc {proc.returncode}): {err}")
    report: dict[str, Any] = json.loads(line)
    return report


def _ask(address: str | tuple[str, int], family: int) -> str:
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(address)
        return conn.recv(100).decode()


def _listening_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def test_two_sockets_handed_to_a_child(tmp_path: Path) -> None:
    unix = _listening_unix(tmp_path / "auth-client")
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port = tcp.getsockname()[1]
    with unix, tcp:
        proc = _spawn(
            [unix.fileno(), tcp.fileno()],
            {"SET_LISTEN_PID": "self", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "auth-client:tcp"},
        )
    try:
        report = _read_report(proc)
        assert [s["name"] for s in report["sockets"]] == ["auth-client", "tcp"]
        assert [s["fd"] for s in report["sockets"]] == [3, 4]
        assert [s["family"] for s in report["sockets"]] == [socket.AF_UNIX, socket.AF_INET]
        assert all(s["type"] == socket.SOCK_STREAM for s in report["sockets"])
        assert all(s["listening"] for s in report["sockets"])
        assert all(s["cloexec"] for s in report["sockets"])
        assert report["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
        # The child really owns the sockets we bound: it answers on both.
        assert _ask(str(tmp_path / "auth-client"), socket.AF_UNIX) == "auth-client"
        assert _ask(("127.0.0.1", port), socket.AF_INET) == "tcp"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_missing_names_default_to_unknown(tmp_path: Path) -> None:
    first = _listening_unix(tmp_path / "a")
    second = _listening_unix(tmp_path / "b")
    with first, second:
        proc = _spawn(
            [first.fileno(), second.fileno()], {"SET_LISTEN_PID": "self", "LISTEN_FDS": "2"}
        )
    try:
        report = _read_report(proc)
        assert [s["name"] for s in report["sockets"]] == ["unknown", "unknown"]
        assert _ask(str(tmp_path / "a"), socket.AF_UNIX) == "unknown"
        assert _ask(str(tmp_path / "b"), socket.AF_UNIX) == "unknown"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_fds_meant_for_another_process_are_left_alone(tmp_path: Path) -> None:
    sock = _listening_unix(tmp_path / "s")
    with sock:
        # LISTEN_PID names our (the parent's) pid: the child only inherited the variables.
        proc = _spawn([sock.fileno()], {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["sockets"] == []
    assert report["env"]["LISTEN_PID"] is None  # still unset, so grandchildren are not fooled


def test_fd_that_is_not_a_socket_is_an_error(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        proc = _spawn([read_end], {"SET_LISTEN_PID": "self", "LISTEN_FDS": "1"})
    finally:
        os.close(read_end)
        os.close(write_end)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 3, err
    assert json.loads(out)["error"] == (
        "socket activation: inherited fd 3 is not a socket; check the .socket unit"
    )


def test_fd_that_is_not_open_is_an_error() -> None:
    proc = _spawn([], {"SET_LISTEN_PID": "self", "LISTEN_FDS": "1"})
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 3, err
    assert "inherited fd 3 is not open" in json.loads(out)["error"]


def test_not_activated_returns_empty() -> None:
    env: dict[str, str] = {"PATH": "/usr/bin"}
    assert inherited_sockets(env) == []
    assert env == {"PATH": "/usr/bin"}


def test_foreign_pid_unsets_only_when_asked() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "OTHER": "y"}
    assert inherited_sockets(env, unset=False) == []
    assert "LISTEN_PID" in env
    assert inherited_sockets(env) == []
    assert env == {"OTHER": "y"}


def test_zero_fds_is_not_activated() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}
    assert inherited_sockets(env) == []
    assert env == {}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTEN_PID": "me", "LISTEN_FDS": "1"}, "LISTEN_PID='me' is not a process id"),
        ({"LISTEN_PID": "<self>", "LISTEN_FDS": "one"}, "LISTEN_FDS='one' is not a number"),
        ({"LISTEN_PID": "<self>", "LISTEN_FDS": "-1"}, "LISTEN_FDS=-1 is negative"),
    ],
)
def test_malformed_variables_raise_and_are_unset(env: dict[str, str], message: str) -> None:
    env = {k: (str(os.getpid()) if v == "<self>" else v) for k, v in env.items()}
    with pytest.raises(SocketActivationError) as info:
        inherited_sockets(env)
    assert str(info.value) == message
    assert env == {}


# --- the real thing: systemd-socket-activate binds, listens, and execs the child -----------


def _wait_for_path(path: Path, proc: subprocess.Popen[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"systemd-socket-activate exited {proc.returncode}: {proc.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} not created")
        time.sleep(0.02)


def _socket_activate(args: list[str]) -> subprocess.Popen[str]:
    activate = require_binary("systemd-socket-activate")
    return subprocess.Popen(
        [activate, *args, sys.executable, "-c", _CHILD_REPORT],
        env=_child_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_systemd_socket_activate_hands_over_a_named_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "auth-client"
    proc = _socket_activate(["--listen", str(path), "--fdname=auth-client"])
    try:
        _wait_for_path(path, proc)
        # systemd-socket-activate execs the child on the first connection; the child then
        # accepts that very connection from the inherited listening socket.
        assert _ask(str(path), socket.AF_UNIX) == "auth-client"
        report = _read_report(proc)
        assert report["pid"] == proc.pid  # exec'd in place, LISTEN_PID was its pid
        assert len(report["sockets"]) == 1
        (only,) = report["sockets"]
        assert (only["fd"], only["family"], only["listening"], only["cloexec"]) == (
            3,
            socket.AF_UNIX,
            1,
            True,
        )
        assert report["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_systemd_socket_activate_two_listeners(tmp_path: Path) -> None:
    path = tmp_path / "auth-client"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = _socket_activate(
        ["-l", str(path), "-l", f"127.0.0.1:{port}", "--fdname=auth-client:tcp"]
    )
    try:
        _wait_for_path(path, proc)
        assert _ask(str(path), socket.AF_UNIX) == "auth-client"
        report = _read_report(proc)
        assert [(s["name"], s["family"]) for s in report["sockets"]] == [
            ("auth-client", socket.AF_UNIX),
            ("tcp", socket.AF_INET),
        ]
        assert _ask(("127.0.0.1", port), socket.AF_INET) == "tcp"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate()
