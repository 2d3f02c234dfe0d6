#!/usr/bin/env python3
"""Issue 18 figures: the cost of the shared penalty on a legitimate login, and what it
does to an attacker spread over two instances.

    python benchmarks/fleet.py latency [--requests 3000]
    python benchmarks/fleet.py flood [--duration 15] [--connections 8]

``latency``: one authbridge with ``backend = "local"``, then one with ``backend =
"redis"`` (a redis-server on a UNIX socket in a temporary directory, as on an MX host
with its Redis local); one connection (Postfix's pattern) sends PLAIN logins with the
right password from a clean ``rip``, one at a time (with ``--under-attack``, while a
second instance, on the Redis in both runs, takes wrong passwords from 2,000
addresses: each failure is then a message to a Redis-backed measured instance);
printed: p50/p99/max of the time
from the write of the AUTH line to its OK, and, for reference, Redis's own MGET round trip
(what a read per login would add; since the mirror, logins read no Redis).

``flood``: two instances (both local, or both on one Redis), default delays (failure
delay 2 s, steps 1/2/4/6 s, spraying on). The attacker keeps ``--connections`` SMTP
sessions' worth of requests in flight against each instance (one request at a time per
connection, as an MTA sends them), alternating instances; two attacks: every guess from
one address, and a spray of one password over ``--accounts`` accounts (20) from 50
addresses. Printed: guesses answered per minute, with shared state and without.
"""

from __future__ import annotations

import argparse
import base64
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.authbridge_proc import AuthbridgeServer  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402

USERS = 200


class Client:
    """The MTA's side, minimal: handshake, then one PLAIN request at a time."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.buffer = b""
        while b"DONE\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        self.buffer = b""
        self.sock.sendall(b"VERSION\t1\t2\nCPID\t1\n")
        self.ids = 0

    def login(self, user: str, password: str, rip: str) -> str:
        self.ids += 1
        resp = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        line = f"AUTH\t{self.ids}\tPLAIN\tservice=smtp\tsecured\trip={rip}\tresp={resp}\n"
        self.sock.sendall(line.encode())
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        reply, _, self.buffer = self.buffer.partition(b"\n")
        return reply.decode().split("\t", 1)[0]


def setup(base: Path) -> tuple[Path, Path]:
    users = base / "users"
    users.write_text("".join(f"u{n}:{{PLAIN}}pw{n}::::::\n" for n in range(USERS)))
    key = base / "key"
    key.write_text("benchmark fleet secret 0123456789\n")
    return users, key


def config(base: Path, name: str, redis: RedisServer | None, key: Path, policy: str) -> Path:
    backend = (
        f'backend = "redis"\nredis_url = "{redis.url}"\npassword_fingerprint_key_file = "{key}"\n'
        if redis is not None
        else ""
    )
    path = base / f"{name}.toml"
    path.write_text(f'[policy]\n{policy}[penalty]\n{backend}[log]\nlevel = "warning"\n')
    return path


def start(base: Path, name: str, users: Path, conf: Path) -> AuthbridgeServer:
    return AuthbridgeServer(
        users, base / f"{name}.sock", extra_args=["--config", str(conf)]
    ).start()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        users, key = setup(base)
        with RedisServer(base / "redis") as redis:
            client = redis.client()
            rtts = []
            for _ in range(args.requests):
                started = time.perf_counter()
                client.mget(["a", "b"])
                rtts.append(time.perf_counter() - started)
            print(
                f"redis MGET alone: p50 {percentile(rtts, 0.5) * 1e3:.3f} ms, "
                f"p99 {percentile(rtts, 0.99) * 1e3:.3f} ms"
            )
            for backend in ("local", "redis", "local", "redis"):
                shared = redis if backend == "redis" else None
                conf = config(base, backend, shared, key, "")
                server = start(base, backend, users, conf)
                client.flushdb()  # each run meets the same attack from scratch
                # The attacked instance is on Redis in both runs: the same load beside the
                # measured instance, whose own backend alone differs.
                attacker = (
                    Attacker(
                        start(base, "attacked", users, config(base, "att", redis, key, NO_DELAY))
                    )
                    if args.under_attack
                    else None
                )
                try:
                    c = Client(server.socket_path)
                    times = []
                    for n in range(args.requests + 200):
                        started = time.perf_counter()
                        reply = c.login(f"u{n % USERS}", f"pw{n % USERS}", f"10.9.{n % 200}.1")
                        if n >= 200:  # warm-up left out
                            times.append(time.perf_counter() - started)
                        assert reply == "OK", reply
                finally:
                    server.stop()
                    if attacker is not None:
                        attacker.stop()
                print(
                    f"backend {backend:5}: p50 {percentile(times, 0.5) * 1e3:.3f} ms, "
                    f"p99 {percentile(times, 0.99) * 1e3:.3f} ms, max {max(times) * 1e3:.1f} ms "
                    f"({len(times)} logins"
                    + (f"; {attacker.guesses} guesses at the other instance)" if attacker else ")")
                )


#: The attacked instance answers FAILs at once, so its guesses reach Redis at full rate.
NO_DELAY = "failure_delay = 0\n"


class Attacker:
    """Wrong passwords from 2,000 addresses at another instance on the same Redis: every
    failure is published, so the measured instance's copy takes a message per guess."""

    def __init__(self, server: AuthbridgeServer, connections: int = 4) -> None:
        self.server, self.guesses, self.done = server, 0, threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(connections)]
        for t in self.threads:
            t.start()

    def _run(self, index: int) -> None:
        c = Client(self.server.socket_path)
        n = index
        while not self.done.is_set():
            c.login(f"u{n % USERS}", f"guess-{n}", f"198.51.{n // 250 % 8}.{n % 250}")
            self.guesses += 1
            n += len(self.threads)

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join()
        self.server.stop()


def attack(servers: list[AuthbridgeServer], connections: int, duration: float, spray: int) -> int:
    """Guesses answered in ``duration``; ``spray``: that many accounts from 50 addresses
    (0: one address, five accounts)."""
    answered = [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def worker(index: int) -> None:
        c = Client(servers[index % len(servers)].socket_path)
        n = index
        while time.monotonic() < stop:
            if spray:
                user, rip = f"u{n % spray}", f"192.0.2.{10 + n % 50}"
                password = "Winter2026!"
            else:
                user, rip, password = f"u{n % 5}", "192.0.2.66", f"guess-{index}-{n}"
            reply = c.login(user, password, rip)
            if time.monotonic() <= stop:
                with lock:
                    answered[0] += 1
            assert reply == "FAIL", reply
            n += connections * len(servers)

    threads = [
        threading.Thread(target=worker, args=(i,)) for i in range(connections * len(servers))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answered[0]


def flood(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        users, key = setup(base)
        with RedisServer(base / "redis") as redis:
            for spray in (0, args.accounts):
                for shared in (False, True):
                    redis.client().flushdb()
                    names = [f"{'s' if shared else 'l'}{i}{int(spray)}" for i in range(2)]
                    servers = [
                        start(base, n, users, config(base, n, redis if shared else None, key, ""))
                        for n in names
                    ]
                    try:
                        count = attack(servers, args.connections, args.duration, spray)
                    finally:
                        for s in servers:
                            s.stop()
                    what = f"spray {spray} accounts" if spray else "one address"
                    state = "shared (redis)" if shared else "local (none)"
                    per_minute = count * 60 / args.duration
                    print(f"{what:20} {state:15} {per_minute:8.0f} guesses answered per minute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency", help="a legitimate login's latency, local vs redis")
    lat.add_argument("--requests", type=int, default=3000, help="logins per backend")
    lat.add_argument(
        "--under-attack",
        action="store_true",
        help="meanwhile, wrong passwords from 2,000 addresses at a second instance",
    )
    fl = sub.add_parser("flood", help="an attacker over two instances, shared vs not")
    fl.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    fl.add_argument("--connections", type=int, default=8, help="attack connections per instance")
    fl.add_argument("--accounts", type=int, default=20, help="accounts sprayed (from 50 addresses)")
    args = parser.parse_args()
    latency(args) if args.what == "latency" else flood(args)


if __name__ == "__main__":
    main()
