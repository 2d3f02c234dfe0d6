"""SIGHUP reloads config and stores while clients keep authenticating: zero errors.

Dovecot's SIGHUP replaces its auth process and drops the requests in flight; authbridge
swaps config and stores in place, so persistent connections (Postfix) and requests in
flight survive, and a broken new config is refused while the old one keeps serving.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
from pathlib import Path

from authbridge.core import wire
from tests.support import runtime_dir, wait_for_text, wait_until
from tests.support.authbridge_proc import AuthbridgeServer

CONFIG = """\
[server]
mechanisms = ["plain", "login"]

[[store]]
type = "passwd-file"
path = "{users}"

[policy]
require_secured = false
failure_delay = {delay}
"""


PLAIN_IR = base64.b64encode(b"\0userx\0secret").decode()
LOGIN_AUTH = b"AUTH\t1\tLOGIN\tservice=smtp\tresp=" + base64.b64encode(b"userx") + b"\n"


class _LoadClient(threading.Thread):
    """One persistent connection sending pipelined AUTHs until told to stop."""

    def __init__(self, path: Path, stop: threading.Event, depth: int = 8) -> None:
        super().__init__(daemon=True)
        self.path, self.stop_event, self.depth = path, stop, depth
        self.ok = 0
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(str(self.path))
            sock.sendall(b"VERSION\t1\t0\nCPID\t9\n")
            buf = wire.LineBuffer()
            next_id, outstanding = 1, set[int]()
            while not self.stop_event.is_set() or outstanding:
                while not self.stop_event.is_set() and len(outstanding) < self.depth:
                    line = f"AUTH\t{next_id}\tPLAIN\tservice=smtp\tresp={PLAIN_IR}\n"
                    sock.sendall(line.encode())
                    outstanding.add(next_id)
                    next_id += 1
                data = sock.recv(65536)
                if not data:
                    self.errors.append(f"connection closed with {len(outstanding)} pending")
                    return
                for line in buf.feed(data):
                    kind, _, rest = line.partition("\t")
                    if kind in ("OK", "FAIL"):
                        request_id = int(rest.split("\t")[0])
                        outstanding.discard(request_id)
                        if kind == "OK":
                            self.ok += 1
                        else:
                            self.errors.append(line)
            sock.close()
        except Exception as exc:  # every failure of the client counts as an error
            self.errors.append(f"{type(exc).__name__}: {exc}")


class _ChurnClient(threading.Thread):
    """Exim's pattern: a new connection for every AUTH."""

    def __init__(self, path: Path, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.path, self.stop_event = path, stop
        self.ok = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(10)
                sock.connect(str(self.path))
                sock.sendall(b"VERSION\t1\t0\nCPID\t8\n" + LOGIN_AUTH)
                buf, lines = wire.LineBuffer(), list[str]()
                while not any(line.startswith("CONT") for line in lines):
                    data = sock.recv(65536)
                    assert data, "closed before CONT"
                    lines += buf.feed(data)
                sock.sendall(b"CONT\t1\t" + base64.b64encode(b"secret") + b"\n")
                while not any(line.startswith(("OK", "FAIL")) for line in lines):
                    data = sock.recv(65536)
                    assert data, "closed before the reply"
                    lines += buf.feed(data)
                reply = next(line for line in lines if line.startswith(("OK", "FAIL")))
                if reply.startswith("OK"):
                    self.ok += 1
                else:
                    self.errors.append(reply)
                sock.close()
            except Exception as exc:  # every failure of the client counts as an error
                self.errors.append(f"{type(exc).__name__}: {exc}")


def _wait_for_progress(clients: list[_LoadClient | _ChurnClient], when: str) -> None:
    """Every client completes a few more authentications (or one fails: stop waiting)."""
    start = [c.ok for c in clients]
    wait_until(
        lambda: (
            any(c.errors for c in clients)
            or all(c.ok >= s + 3 for c, s in zip(clients, start, strict=True))
        ),
        timeout=30,
        what=f"every client served {when}",
    )


def test_sighup_under_load_drops_nothing(tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    base = runtime_dir(tmp_path_factory, "reload")
    users = base / "users"
    users.write_text("userx:{PLAIN}secret\n")
    config = base / "authbridge.toml"
    config.write_text(CONFIG.format(users=users, delay=0))
    server = AuthbridgeServer(
        users,
        base / "auth-client",
        mechanisms=("plain", "login"),
        extra_args=["--config", str(config)],
    )
    with server:
        assert server.proc is not None
        stop = threading.Event()
        clients: list[_LoadClient | _ChurnClient] = [
            _LoadClient(server.socket_path, stop) for _ in range(3)
        ]
        clients += [_ChurnClient(server.socket_path, stop) for _ in range(2)]
        for client in clients:
            client.start()
        _wait_for_progress(clients, "before the first reload")
        for round_number in range(6):
            if round_number == 3:
                config.write_text("[policy]\nfailure_delay = 'broken'\n")  # refused
            else:
                users.write_text(f"userx:{{PLAIN}}secret\nnew{round_number}:{{PLAIN}}pw\n")
                config.write_text(CONFIG.format(users=users, delay=round_number * 0.1))
            os.kill(server.proc.pid, signal.SIGHUP)
            # The reload has happened (or was refused) once the log says so ...
            reloads = round_number + 1 if round_number < 3 else round_number
            wait_for_text(server.stderr_text, '"reloaded"', count=reloads)
            if round_number >= 3:
                wait_for_text(server.stderr_text, "reload refused")
            # ... and every client kept being served across it.
            _wait_for_progress(clients, f"after reload {round_number}")
        wait_until(
            lambda: all(c.ok > 20 for c in clients) and sum(c.ok for c in clients) > 200,
            timeout=60,
            what="enough load to prove anything",
        )
        stop.set()
        for client in clients:
            client.join(timeout=20)
        log = server.stderr_text()
    errors = [error for client in clients for error in client.errors]
    total_ok = sum(client.ok for client in clients)
    assert errors == []
    assert all(client.ok > 20 for client in clients), [client.ok for client in clients]
    assert total_ok > 200, f"the load was too light to prove anything ({total_ok} auths)"
    assert log.count('"reloaded"') == 5
    assert log.count("reload refused") == 1
