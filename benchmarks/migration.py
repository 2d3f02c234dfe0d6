"""How many logins it takes to migrate a weak user file to ARGON2ID, and what rehash costs.

    python benchmarks/migration.py migrate --users 10000 --shape passwd --rate 20
    python benchmarks/migration.py migrate --users 10000 --shape exim --max-seconds 600
    python benchmarks/migration.py cpu --users 10000 --logins 20000      # rehash on vs off
    python benchmarks/migration.py write-cost --users 10000              # per rehash write
    python benchmarks/migration.py coverage --users 10000               # first logins

``migrate`` starts a real ``authbridge serve`` with ``[rehash] enabled = true`` (target
ARGON2ID, default parameters) on a file of ``--users`` weak users: ``{PLAIN-MD5}``
passwd-file lines (``--shape passwd``) or the seed article's Exim ``login:md5hash`` lines
(``--shape exim``). Logins come "day" after "day": each day every user logs in once and
``--repeat`` times as many logins go to users drawn from a Zipf law (s = 1.1, a random
rank per user), all shuffled; ``--connections`` clients send them at ``--rate`` logins a
second (0: as fast as the server answers). Every ``--sample`` seconds the file is read
and the users already holding ``{ARGON2ID}`` counted. It prints the number of logins
(and seconds) after which 50, 90, 99 and 100 % of the users, and of the users who had
logged in by then, were migrated; the logins that did not succeed (must be 0); the
rehash results the daemon counted (written, dropped with the queue full, ...); and the
daemon's CPU per login. It stops at 100 % or after ``--max-seconds``.

``cpu`` sends ``--logins`` logins (the same distribution, as fast as answered) to a
daemon with rehash off and to one with rehash on, each on a fresh weak file, and prints
the daemon CPU per login of both: with rehash on, the hashing (in a thread of the daemon)
and the file writes are in it.

``write-cost`` measures, in this process, one rehash write of the file (lock, read,
exchange-rename, fsyncs, reload) for batches of 1 and of 64 users, hashes made in
advance: the file cost per rehashed user, apart from the hash itself, which it times
too (``schemes.generate("ARGON2ID", ...)``).

``coverage`` needs no daemon: the login number by which 50, 90, 99 and 100 % of the
users had logged in at least once in that distribution, i.e. the logins a migration
needs when the rehash keeps up with the first logins (no job dropped).

Everything is on loopback; the users file and the daemon live in a temporary directory.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from authbridge import schemes  # noqa: E402
from authbridge.passdb.exim_file import EximFileStore  # noqa: E402
from authbridge.passdb.passwd_file import PasswdFileStore  # noqa: E402
from authbridge.passdb.rewrite import PasswordChange  # noqa: E402

THRESHOLDS = (50, 90, 99, 100)
MARK = "{ARGON2ID}"


def user_name(n: int) -> str:
    return f"user{n:05d}@example.org"


def password(n: int) -> str:
    return f"pw-{n}-secret"


def write_users(path: Path, users: int, shape: str) -> None:
    lines = []
    for n in range(users):
        md5 = hashlib.md5(password(n).encode()).hexdigest()
        if shape == "passwd":
            lines.append(f"{user_name(n)}:{{PLAIN-MD5}}{md5}::::::\n")
        else:
            lines.append(f"{user_name(n)}:{md5}\n")
    path.write_text("".join(lines))
    path.chmod(0o600)


def days(users: int, repeat: float, rng: random.Random) -> Iterator[int]:
    """Logins, day after day: every user once plus ``repeat`` x users Zipf draws."""
    rank = list(range(users))
    rng.shuffle(rank)  # rank[i]: the user at Zipf rank i
    weights = [1.0 / (i + 1) ** 1.1 for i in range(users)]
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]
    while True:
        day = list(range(users))
        for _ in range(int(users * repeat)):
            day.append(rank[bisect.bisect_left(cumulative, rng.random() * total)])
        rng.shuffle(day)
        yield from day


# ---------------------------------------------------------------------- the daemon


@dataclass
class Daemon:
    directory: Path
    users_file: Path
    shape: str
    rehash: bool
    cache: bool = True
    metrics_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "auth-client"

    def start(self) -> None:
        config = self.directory / "authbridge.toml"
        config.write_text(
            '[server]\nmechanisms = ["plain", "login"]\n'
            "[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n"
            '[log]\nlevel = "warning"\n'
            + ("[rehash]\nenabled = true\n" if self.rehash else "")
            + ("[cache]\nenabled = true\n" if self.cache else "")
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.metrics_port = probe.getsockname()[1]
        store = "--passwd-file" if self.shape == "passwd" else "--exim-file"
        command = [
            sys.executable, "-m", "authbridge", "serve", "--config", str(config),
            "--socket", str(self.socket_path), store, str(self.users_file),
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
        ]  # fmt: skip
        if self.shape == "exim":  # a passwd-file is required; an empty one
            empty = self.directory / "empty"
            empty.write_text("")
            command += ["--passwd-file", str(empty)]
        log = open(self.directory / "daemon.log", "ab")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 60
        while not self.socket_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"daemon did not start: {(self.directory / 'daemon.log').read_text()}"
                )
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rehash_results(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        results: dict[str, float] = {}
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return results
        for line in text.splitlines():
            if line.startswith("authbridge_rehashes_total{"):
                label = line.split('result="', 1)[1].split('"', 1)[0]
                results[label] = float(line.rsplit(" ", 1)[1])
        return results

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


# ---------------------------------------------------------------------- the clients


@dataclass
class Load:
    """Logins handed out to the client threads, paced, and what came back."""

    sequence: Iterator[int]
    rate: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    ok: int = 0
    failed: int = 0
    first_login: dict[int, int] = field(default_factory=dict)  # user -> login number
    stop: bool = False
    started: float = field(default_factory=time.monotonic)

    def next(self) -> tuple[int, int] | None:
        with self.lock:
            if self.stop:
                return None
            try:
                user = next(self.sequence)
            except StopIteration:
                self.stop = True
                return None
            self.sent += 1
            number = self.sent
            self.first_login.setdefault(user, number)
        if self.rate:
            wait = self.started + number / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing of the offered load
        return number, user


def client(load: Load, path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    reader = sock.makefile("rb")
    sock.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
    while not reader.readline().startswith(b"DONE"):
        pass
    request = 0
    while (item := load.next()) is not None:
        _number, user = item
        request += 1
        resp = base64.b64encode(f"\0{user_name(user)}\0{password(user)}".encode()).decode()
        sock.sendall(f"AUTH\t{request}\tPLAIN\tservice=smtp\tsecured\tresp={resp}\n".encode())
        line = reader.readline()
        with load.lock:
            if line.startswith(b"OK\t"):
                load.ok += 1
            else:
                load.failed += 1
    sock.close()


def migrated(path: Path) -> int:
    return path.read_text().count(MARK)


def migrate(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="authbridge-migration-") as temp:
        directory = Path(temp)
        users_file = directory / ("users" if args.shape == "passwd" else "exim-passwd")
        write_users(users_file, args.users, args.shape)
        daemon = Daemon(directory, users_file, args.shape, rehash=True, cache=not args.no_cache)
        daemon.start()
        load = Load(days(args.users, args.repeat, rng), args.rate)
        cpu0 = daemon.cpu_seconds()
        threads = [
            threading.Thread(target=client, args=(load, daemon.socket_path), daemon=True)
            for _ in range(args.connections)
        ]
        for thread in threads:
            thread.start()
        reached: dict[str, dict[str, float]] = {}
        samples = []
        try:
            while True:
                time.sleep(args.sample)
                done = migrated(users_file)
                with load.lock:
                    logins, seen = load.sent, len(load.first_login)
                elapsed = time.monotonic() - load.started
                samples.append((round(elapsed, 1), logins, seen, done))
                for percent in THRESHOLDS:
                    if f"all {percent}" not in reached and done * 100 >= percent * args.users:
                        reached[f"all {percent}"] = {"logins": logins, "seconds": elapsed}
                    key = f"logged-in {percent}"
                    if key not in reached and seen and done * 100 >= percent * seen:
                        reached[key] = {"logins": logins, "seconds": elapsed}
                print(f"{elapsed:7.0f} s  {logins:8d} logins  {seen:6d} users seen  "
                      f"{done:6d} migrated", flush=True)  # fmt: skip
                if done >= args.users or elapsed > args.max_seconds:
                    break
        finally:
            load.stop = True
            for thread in threads:
                thread.join(timeout=30)
            cpu = daemon.cpu_seconds() - cpu0
            results = daemon.rehash_results()
            daemon.stop()
        return {
            "shape": args.shape,
            "cache": not args.no_cache,
            "users": args.users,
            "rate": args.rate,
            "connections": args.connections,
            "repeat": args.repeat,
            "logins": load.sent,
            "ok": load.ok,
            "failed": load.failed,
            "seconds": round(time.monotonic() - load.started, 1),
            "migrated": migrated(users_file),
            "reached": reached,
            "rehash_results": results,
            "daemon_cpu_s": round(cpu, 2),
            "daemon_cpu_ms_per_login": round(1000 * cpu / max(load.ok, 1), 3),
            "samples": samples,
        }


def cpu(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {"users": args.users, "logins": args.logins, "shape": args.shape}
    for rehash in (False, True):
        with tempfile.TemporaryDirectory(prefix="authbridge-migration-") as temp:
            directory = Path(temp)
            users_file = directory / "users"
            write_users(users_file, args.users, args.shape)
            daemon = Daemon(directory, users_file, args.shape, rehash, not args.no_cache)
            daemon.start()
            sequence = itertools.islice(days(args.users, args.repeat, random.Random(args.seed)),
                                        args.logins)  # fmt: skip
            load = Load(sequence, 0)
            cpu0 = daemon.cpu_seconds()
            threads = [
                threading.Thread(target=client, args=(load, daemon.socket_path))
                for _ in range(args.connections)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            answered = time.monotonic() - load.started
            # With rehash on, let the queue drain: its hashing is the cost of those logins.
            last, still = -1.0, 0
            while rehash and still < 3 and time.monotonic() < load.started + args.drain:
                time.sleep(1)
                now = sum(daemon.rehash_results().values())
                still = still + 1 if now == last else 0
                last = now
            spent = daemon.cpu_seconds() - cpu0
            results = daemon.rehash_results()
            written = migrated(users_file)
            daemon.stop()
        key = "on" if rehash else "off"
        out[key] = {
            "ok": load.ok,
            "failed": load.failed,
            "answer_seconds": round(answered, 2),
            "daemon_cpu_s": round(spent, 2),
            "daemon_cpu_us_per_login": round(1e6 * spent / max(load.ok, 1), 1),
            "migrated": written,
            "rehash_results": results,
        }
    return out


def write_cost(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {"users": args.users}
    started = time.perf_counter()
    for _ in range(5):
        schemes.generate("ARGON2ID", b"password", "u", None)
    out["argon2id_hash_ms"] = round((time.perf_counter() - started) / 5 * 1000, 1)
    for shape in ("passwd", "exim"):
        with tempfile.TemporaryDirectory(prefix="authbridge-migration-") as temp:
            path = Path(temp) / "users"
            write_users(path, args.users, shape)
            store: PasswdFileStore | EximFileStore = (
                PasswdFileStore(path) if shape == "passwd" else EximFileStore(path)
            )
            store.load()
            new = schemes.generate("ARGON2ID", b"x", "u", None)
            order = list(range(args.users))
            random.Random(args.seed).shuffle(order)
            position = 0
            for batch in (1, 64):
                rounds = args.rounds
                started = time.perf_counter()
                for _ in range(rounds):
                    changes = []
                    for n in order[position : position + batch]:
                        entry = store.get(user_name(n))
                        assert entry is not None and entry.password is not None
                        changes.append(PasswordChange(user_name(n), entry.password, new))
                    position += batch
                    store.rewrite_passwords(changes)
                each = (time.perf_counter() - started) / rounds
                out[f"{shape}_batch{batch}_ms"] = round(each * 1000, 2)
                out[f"{shape}_batch{batch}_ms_per_user"] = round(each * 1000 / batch, 3)
    return out


def coverage(args: argparse.Namespace) -> dict[str, object]:
    """The login number by which 50/90/99/100 % of the users had logged in at least once:
    the logins a migration needs when the rehash keeps up (no job dropped)."""
    seen: set[int] = set()
    reached: dict[str, int] = {}
    for number, user in enumerate(days(args.users, args.repeat, random.Random(args.seed)), 1):
        seen.add(user)
        for percent in THRESHOLDS:
            if str(percent) not in reached and len(seen) * 100 >= percent * args.users:
                reached[str(percent)] = number
        if len(seen) == args.users:
            break
    return {"users": args.users, "repeat": args.repeat, "first_login_reached": reached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("what", choices=["migrate", "cpu", "write-cost", "coverage"])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--shape", choices=["passwd", "exim"], default="passwd")
    parser.add_argument("--rate", type=float, default=20.0, help="logins/s offered (0: max)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=float, default=2.0, help="Zipf logins per user a day")
    parser.add_argument("--sample", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--logins", type=int, default=20_000, help="cpu: logins per run")
    parser.add_argument(
        "--drain", type=float, default=600.0, help="cpu: s to wait, at most, for the queue"
    )
    parser.add_argument("--no-cache", action="store_true", help="[cache] off (default: on)")
    parser.add_argument("--rounds", type=int, default=20, help="write-cost: writes per batch")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    run = {"migrate": migrate, "cpu": cpu, "write-cost": write_cost, "coverage": coverage}
    figures = run[args.what](args)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
