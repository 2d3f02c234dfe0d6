"""PLAIN ``{SSHA512}`` against a 100k-user PostgreSQL store, beside the passwd-file.

    python benchmarks/sql_bench.py                   # 100k users, 15 s per server
    python benchmarks/sql_bench.py --users 10000 --duration 5 --pool-size 8

Makes one set of users (``userN@example.org`` / ``pwN``, ``{SSHA512}`` from
``authbridge.schemes.generate``, the code behind ``authbridge pw``), writes it as a
passwd-file and loads it into a throwaway PostgreSQL cluster (Debian's binaries run as
the ``postgres`` user on a private UNIX socket, ``tests/sql/pgcluster.py``) with the
schema and query of ``deploy/sql/``. Then ``authbridge serve --dovecot-compat
--failure-delay 0`` runs on each store in turn (auth cache off: every request reaches
the database) under the same ``authbridge bench`` load, and one table row per store
shows auth/s and the client-side p99. Run as root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from authbridge.schemes import generate  # noqa: E402
from tests.sql.conftest import QUERY, make_cluster  # noqa: E402
from tests.sql.pgcluster import PgCluster  # noqa: E402
from tests.support import runtime_dir, wait_for_unix_socket  # noqa: E402


def make_users(count: int) -> list[tuple[str, str, str]]:
    rng = random.Random(9)
    users = []
    for i in range(count):
        name = f"user{i}@example.org"
        password = f"pw{i}-{rng.randrange(10**6)}"
        users.append((name, password, generate("SSHA512", password.encode(), name)))
    return users


def load_postgres(cluster: PgCluster, users: list[tuple[str, str, str]]) -> None:
    with cluster.admin() as conn:
        with (
            conn.cursor() as cur,
            cur.copy("COPY mail_users (username, password) FROM STDIN") as copy,
        ):
            for name, _, hashed in users:
                copy.write_row((name, hashed))
        conn.execute("ANALYZE mail_users")


def tree_cpu(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its live descendants (threads included)."""
    pids, index = [pid], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in task.read_text().split()]
        index += 1
    ticks = 0
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serving(workdir: Path, name: str, store_args: list[str]) -> Iterator[tuple[Path, int]]:
    sock = workdir / f"{name}.sock"
    log = (workdir / f"{name}.log").open("ab")
    command = [
        sys.executable, "-m", "authbridge", "serve", "--dovecot-compat",
        "--failure-delay", "0", "--socket", str(sock), "--socket-mode", "0666",
        "--log-level", "warning", *store_args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        wait_for_unix_socket(sock, 120, proc)
        yield sock, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def bench(sock: Path, creds: Path, args: argparse.Namespace, label: str) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "authbridge", "bench", "--socket", str(sock),
        "--credentials", str(creds), "--mechanism", "PLAIN",
        "-c", str(args.connections), "-d", str(args.depth),
        "-t", str(args.duration), "--warmup", str(args.warmup), "--label", label, "--json",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=20_000, help="users in the credentials")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("-d", "--depth", type=int, default=16)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    workdir = runtime_dir(None, "authbridge-sqlbench")
    cluster: PgCluster | None = None
    try:
        started = time.monotonic()
        users = make_users(args.users)
        passwd = workdir / "users.passwd"
        passwd.write_text("".join(f"{n}:{h}\n" for n, _, h in users))
        creds = workdir / "creds.txt"
        sample = random.Random(1).sample(users, min(args.sample, len(users)))
        creds.write_text("".join(f"{n}:{p}\n" for n, p, _ in sample))
        cluster = make_cluster(workdir / "pg")
        load_postgres(cluster, users)
        print(f"{args.users} users ready in {time.monotonic() - started:.1f} s", file=sys.stderr)

        config = workdir / "sql.toml"
        config.write_text(
            f'[[store]]\ntype = "sql"\ndriver = "postgresql"\ndsn = "{cluster.dsn()}"\n'
            f'password_query = """{QUERY}"""\npool_size = {args.pool_size}\n'
        )
        rows = []
        for label, store_args in (
            ("passwd-file", ["--passwd-file", str(passwd)]),
            (f"postgresql (pool {args.pool_size})", ["--config", str(config)]),
        ):
            with serving(workdir, label.split()[0], store_args) as (sock, pid):
                assert cluster.proc is not None
                before = tree_cpu(pid), tree_cpu(cluster.proc.pid)
                row = bench(sock, creds, args, label)
                after = tree_cpu(pid), tree_cpu(cluster.proc.pid)
                # CPU is measured over warm-up and run alike: scale the count to match.
                done = (row["ok"] + row["fail"]) * (args.duration + args.warmup) / args.duration
                row["server_us"] = (after[0] - before[0]) / max(1.0, done) * 1e6
                row["db_us"] = (after[1] - before[1]) / max(1.0, done) * 1e6
                rows.append(row)
        load = os.getloadavg()[0]
        print(f"\nPLAIN {{SSHA512}}, {args.users} users, {args.connections}x{args.depth}, "
              f"{args.duration:g} s, load average {load:.1f} at the end\n")  # fmt: skip
        print("| store | auth/s | p50 | p99 | authbridge CPU/auth | postgres CPU/auth | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['label']} | {r['rate']:.0f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms"
                f" | {r['server_us']:.0f} us | {r['db_us']:.0f} us | {r['fail'] + r['errors']} |"
            )
        bad = [r for r in rows if r["fail"] or r["errors"] or r["mismatched"]]
        return 1 if bad else 0
    finally:
        if cluster is not None:
            cluster.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
