"""``workers = N``: a supervisor and N real ``authbridge serve`` processes on one socket.

Everything here runs the real daemon and authenticates with Dovecot's own
``doveadm auth test``; worker processes are found through ``/proc``, and crashes, hangs
and supervisor deaths are real signals sent to those PIDs.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from authbridge.config import ConfigError, parse_config
from tests.observability.helpers import http_get, parse_exposition, wait_for
from tests.support import free_tcp_port, require_binary, runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import doveadm_auth

pytestmark = pytest.mark.interop

USERS = "demo:{PLAIN}demopass::::::\n"


def _children(pid: int) -> list[int]:
    """Child processes, whichever thread started them (trio starts them from threads)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in children.read_text().split()]
        except FileNotFoundError:
            continue
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _all_gone(pids: list[int]) -> bool:
    return not any(_alive(p) for p in pids)


def doveadm(sock: Path, user: str = "demo", password: str = "demopass", *extra: str) -> int:
    return doveadm_auth(sock, user, password, "service=smtp", *extra).returncode


class Running:
    """A supervisor under test: its socket, metrics port, log and worker PIDs."""

    def __init__(self, server: AuthbridgeServer, port: int, base: Path) -> None:
        self.server, self.port, self.base = server, port, base

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    @property
    def sock(self) -> Path:
        return self.server.socket_path

    def workers(self) -> list[int]:
        return _children(self.pid)

    def metric(self, name: str, **labels: str) -> float:
        status, text = http_get(self.port, "/metrics")
        assert status == 200, text
        return parse_exposition(text).value(name, **labels)

    def wait_metric(self, name: str, value: float, **labels: str) -> None:
        """Wait until the summed scrape shows ``value`` for the series (TimeoutError if not)."""
        wait_for_value(
            lambda: self.metric(name, **labels),
            lambda seen: seen == value,
            timeout=10,
            what=f"{name}{labels} == {value}",
        )

    def events(self, event: str) -> list[dict[str, object]]:
        out = []
        for line in self.server.stderr_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    out.append(record)
        return out

    def wait_serving(self, workers: int, timeout: float = 30) -> list[int]:
        def serving() -> bool:
            try:
                ready = self.metric("authbridge_workers", state="ready")
            except OSError:
                return False
            return ready == workers and len(self.workers()) == workers

        assert wait_for(serving, timeout), self.server.stderr_text()[-3000:]
        return self.workers()


def _config(base: Path, extra: str = "") -> Path:
    path = base / "authbridge.toml"
    path.write_text(
        "[server]\nworkers = 2\nworker_watchdog = 1.5\n"
        '[policy]\nfailure_delay = 0\n[log]\nformat = "json"\n' + extra
    )
    return path


@pytest.fixture
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Running]]:
    started: list[AuthbridgeServer] = []

    def _start(extra: str = "", users: str = USERS) -> Running:
        base = runtime_dir(tmp_path_factory, "workers")
        (base / "users").write_text(users)
        port = free_tcp_port()
        server = AuthbridgeServer(
            base / "users",
            base / "auth-client",
            extra_args=["--config", str(_config(base, extra)), "--metrics-listen", f"{port}"],
        ).start()
        started.append(server)
        running = Running(server, port, base)
        running.wait_serving(2)
        return running

    yield _start
    for server in started:
        if server.proc is not None:
            pids = _children(server.proc.pid)
            server.stop(timeout=30)
            assert wait_for(partial(_all_gone, pids), 10), "workers outlived the supervisor"


def _spid_of(conn: socket.socket) -> int:
    """The SPID line of the handshake: which process accepted this connection."""
    conn.sendall(b"VERSION\t1\t2\nCPID\t1\n")
    data = b""
    while b"\nDONE\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, data
        data += chunk
    (line,) = [x for x in data.split(b"\n") if x.startswith(b"SPID\t")]
    return int(line.split(b"\t")[1])


def _spid(sock: Path) -> int:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(sock))
        return _spid_of(conn)


def test_both_workers_accept_on_the_one_socket(start: Callable[..., Running]) -> None:
    running = start()
    workers = set(running.workers())
    assert len(workers) == 2 and running.pid not in workers
    seen: set[int] = set()
    for _ in range(400):
        seen.add(_spid(running.sock))
        if seen == workers:
            break
    assert seen == workers


def test_counts_are_summed_and_survive_a_crashed_worker(start: Callable[..., Running]) -> None:
    running = start()
    for _ in range(6):
        assert doveadm(running.sock, "demo", "demopass", "secured") == 0
    for _ in range(3):
        assert doveadm(running.sock, "demo", "wrong", "secured") == 77
    ok = {"mechanism": "PLAIN", "result": "ok"}
    fail = {"mechanism": "PLAIN", "result": "fail"}
    # A worker counts a request just after its reply has gone out: wait for the scrape.
    running.wait_metric("authbridge_authentications_total", 6, **ok)
    running.wait_metric("authbridge_authentications_total", 3, **fail)

    victim = running.workers()[0]
    os.kill(victim, signal.SIGKILL)
    replaced = running.wait_serving(2)
    assert victim not in replaced
    assert running.metric("authbridge_worker_restarts_total") == 1
    # The dead worker's counts stay in the totals; the replacement adds to them.
    assert running.metric("authbridge_authentications_total", **ok) == 6
    assert doveadm(running.sock, "demo", "demopass", "secured") == 0
    running.wait_metric("authbridge_authentications_total", 7, **ok)
    assert wait_for(lambda: running.metric("authbridge_connections_active") == 0)
    (event,) = running.events("worker exited; starting a replacement")
    assert event["worker_pid"] == victim and event["status"] == -signal.SIGKILL


def test_a_worker_that_stops_answering_is_replaced(start: Callable[..., Running]) -> None:
    running = start()
    frozen = running.workers()[1]
    os.kill(frozen, signal.SIGSTOP)
    try:
        assert wait_for(lambda: frozen not in running.workers(), 30)
        running.wait_serving(2)
    finally:
        if _alive(frozen):
            os.kill(frozen, signal.SIGCONT)
    assert [e["worker_pid"] for e in running.events("worker stopped answering; killing it")] == [
        frozen
    ]
    for _ in range(4):
        assert doveadm(running.sock, "demo", "demopass", "secured") == 0


def test_sighup_reloads_every_worker(start: Callable[..., Running]) -> None:
    running = start()
    # Defaults: plaintext only on secured sessions.
    assert doveadm(running.sock, "demo", "demopass") == 77
    config = running.base / "authbridge.toml"
    text = config.read_text().replace("[policy]\n", "[policy]\nrequire_secured = false\n")
    config.write_text(text)
    os.kill(running.pid, signal.SIGHUP)
    assert wait_for(lambda: len(running.events("reloaded")) == 2, 20)
    assert {e["worker"] for e in running.events("reloaded")} == {0, 1}
    for _ in range(10):  # whichever worker accepts, it has the new policy
        assert doveadm(running.sock, "demo", "demopass") == 0


def test_supervisor_death_takes_the_workers_down(start: Callable[..., Running]) -> None:
    running = start()
    workers = running.workers()
    assert running.server.proc is not None
    running.server.kill()  # SIGKILL: no chance to stop them itself
    assert wait_for(partial(_all_gone, workers), 15)


def test_a_worker_that_cannot_start_fails_the_start(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = runtime_dir(tmp_path_factory, "workers-bad")
    sock = base / "auth-client"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "authbridge",
            "serve",
            "--socket",
            str(sock),
            "--workers",
            "2",
            "--passwd-file",
            str(base / "missing.passwd"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "missing.passwd" in proc.stderr
    assert "before serving" in proc.stderr
    assert not sock.exists()


def test_systemd_socket_activation_with_workers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    activate = require_binary("systemd-socket-activate")
    base = runtime_dir(tmp_path_factory, "workers-activated")
    (base / "users").write_text(USERS)
    sock = base / "auth-client"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [
            activate,
            "-l",
            str(sock),
            sys.executable,
            "-m",
            "authbridge",
            "serve",
            "--workers",
            "2",
            "--passwd-file",
            str(base / "users"),
            "--failure-delay",
            "0",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_for(sock.exists, 10)
        for _ in range(5):
            assert doveadm(sock, "demo", "demopass", "secured") == 0
        assert len(_children(proc.pid)) == 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "systemd:" in err  # the workers served the socket systemd handed over
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ("4", 4), ('"auto"', os.cpu_count() or 1), ('"3"', 3)],
)
def test_workers_setting(value: str, expected: int) -> None:
    config = parse_config(f"[server]\nworkers = {value}\n", "t.toml")
    assert config.server.workers == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "must be between 1 and 64"),
        ("65", "must be between 1 and 64"),
        ('"many"', 'expected a number of processes or "auto"'),
        ("true", 'expected a number or "auto", got bool'),
        ("1.5", 'expected a number or "auto", got float'),
    ],
)
def test_bad_workers_setting_names_file_line_and_key(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[server]\n\nworkers = {value}\n", "t.toml")
    assert str(info.value) == f"t.toml:3: server.workers: {problem}"


def test_worker_watchdog_must_be_positive() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[server]\nworker_watchdog = 0\n", "t.toml")
    assert str(info.value) == "t.toml:2: server.worker_watchdog: must be greater than 0"


def test_a_burst_of_connections_is_spread_over_the_workers(start: Callable[..., Running]) -> None:
    """Eight MTA processes connecting at once must not all land on one worker."""
    running = start()
    conns = []
    try:
        for _ in range(8):
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(10)
            conn.connect(str(running.sock))
            conns.append(conn)
        spids = [_spid_of(conn) for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    per_worker = [spids.count(pid) for pid in running.workers()]
    assert sum(per_worker) == 8
    assert max(per_worker) - min(per_worker) <= 2, per_worker


def _listening_inodes(path: Path) -> set[str]:
    """Socket inodes listening on the UNIX path ``path`` (from /proc/net/unix)."""
    found = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 = accepting
        if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & 0x10000:
            found.add(fields[6])
    return found


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def test_only_the_supervisor_waits_on_the_listening_socket(start: Callable[..., Running]) -> None:
    """A new connection wakes the supervisor and the one worker it hands it to: no worker
    holds the listening socket, so none can be woken by an accept."""
    running = start()
    listening = _listening_inodes(running.sock)
    assert len(listening) == 1
    assert listening <= _socket_inodes(running.pid)
    for worker in running.workers():
        assert not listening & _socket_inodes(worker)


def _handshake_or_close(conn: socket.socket) -> int | None:
    """The SPID of the worker that serves ``conn``, or None if it was closed instead."""
    try:
        conn.sendall(b"VERSION\t1\t2\nCPID\t1\n")
    except BrokenPipeError:
        return None
    data = b""
    while b"\nDONE\n" not in data:
        try:
            chunk = conn.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        data += chunk
    (line,) = [x for x in data.split(b"\n") if x.startswith(b"SPID\t")]
    return int(line.split(b"\t")[1])


def test_connections_queued_to_a_worker_that_dies_are_closed_not_lost(
    start: Callable[..., Running],
) -> None:
    """A frozen worker still takes its share until it is found out; when it dies, the
    clients it never served see their connections close (no hang), and the next
    connections are served by a live worker."""
    running = start()
    frozen, live = running.workers()
    os.kill(frozen, signal.SIGSTOP)
    conns = []
    try:
        for _ in range(4):
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(20)
            conn.connect(str(running.sock))
            conns.append(conn)
        # The live worker greets its share at once; the frozen one's share waits in its
        # queue. Turns alternate, so once two are greeted, a frozen one was handed out.
        assert wait_for(lambda: len(select.select(conns, [], [], 0)[0]) >= 2, 20)
        os.kill(frozen, signal.SIGKILL)
        outcomes = [_handshake_or_close(conn) for conn in conns]
    finally:
        for conn in conns:
            conn.close()
        if _alive(frozen):
            os.kill(frozen, signal.SIGKILL)
    assert None in outcomes, outcomes  # some went to the frozen worker, and were closed
    assert set(outcomes) <= {None, live}, outcomes
    for _ in range(4):  # served by the live worker at once, or by the replacement later
        assert doveadm(running.sock, "demo", "demopass", "secured") == 0


def test_a_replacement_that_cannot_load_the_store_keeps_being_retried(
    start: Callable[..., Running],
) -> None:
    """A broken store file must not take the service down with a crashed worker: the
    live worker keeps its last good copy and serves, the replacement is retried (with a
    growing pause) until the file is fixed."""
    running = start()
    users = running.base / "users"
    good = users.read_text()
    users.write_text(good + "mallory:\0broken\n")  # a NUL byte: the whole file is refused
    victim, survivor = running.workers()
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(running.events("worker exited; starting a replacement")) >= 2, 30)
    assert survivor in running.workers()
    refused = "store reload failed; the last good copy keeps serving"
    assert wait_for(lambda: len(running.events(refused)) >= 1, 10)
    for _ in range(4):  # the survivor serves from its last good copy all along
        assert doveadm(running.sock, "demo", "demopass", "secured") == 0
    users.write_text(good)
    replaced = running.wait_serving(2, timeout=60)
    assert survivor in replaced and victim not in replaced
    assert doveadm(running.sock, "demo", "demopass", "secured") == 0
