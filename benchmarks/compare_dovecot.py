#!/usr/bin/env python3
"""Real Dovecot 2.3 auth vs authbridge: 100k-user RSS and start-up; rates only on request.

    python benchmarks/compare_dovecot.py                  # 100k users: RSS, start-up
    python benchmarks/compare_dovecot.py --python-client  # and the old rate workloads
    python benchmarks/compare_dovecot.py --only CRAM --profile /tmp/prof   # py-spy profiles

For rates and ratios use ``benchmarks/side_by_side.py``: it drives the servers with the
C load client ``authload``. This script's rate workloads use the Python ``authbridge
bench`` client, which on a 2-core machine takes a core from the server it measures and
deflated every ratio in RESULTS.md; they now run only with ``--python-client`` (or
``--profile``, which needs load while py-spy samples).

It generates the stores (10k {PLAIN}, 10k {SSHA512}, 500 {SHA512-CRYPT}, 100 {BLF-CRYPT}
cost 8, and a separate 100k-user file) and, for each server on the 100k-user file, times
the start-up and measures RSS after a load run. With ``--python-client`` it starts both
servers once and runs every workload against each in turn (the order flips every
workload). Dovecot runs with cache off, failure delay 0, penalty off and no debug
logging (tests/support/dovecot.py); authbridge with --dovecot-compat --failure-delay 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from authbridge.benchclient.engine import Plan, blocking_handshake  # noqa: E402
from authbridge.benchclient.runner import Summary, run_plan  # noqa: E402
from authbridge.benchclient.workload import Credential, prepare  # noqa: E402
from authbridge.core import wire  # noqa: E402
from authbridge.schemes import generate  # noqa: E402
from tests.support.dovecot import DovecotAuth  # noqa: E402

DOVECOT_SETTINGS = ("auth_debug = no", "auth_verbose = no", "auth_cache_size = 0")

# group -> (scheme, users, rounds)
GROUPS: dict[str, tuple[str, int, int | None]] = {
    "plain": ("PLAIN", 10_000, None),
    "ssha": ("SSHA512", 10_000, None),
    "crypt": ("SHA512-CRYPT", 500, None),
    "blf": ("BLF-CRYPT", 100, 8),
}
BIG_USERS = 100_000


@dataclass(frozen=True)
class Workload:
    label: str
    group: str
    mechanism: str
    mode: str
    connections: int
    depth: int
    #: (target ratio authbridge/Dovecot, description)
    target: float


WORKLOADS = (
    Workload("PLAIN {PLAIN} 8x16", "plain", "PLAIN", "pipeline", 8, 16, 0.5),
    Workload("PLAIN {SSHA512} 8x16", "ssha", "PLAIN", "pipeline", 8, 16, 0.5),
    Workload("LOGIN {PLAIN} 8x16", "plain", "LOGIN", "pipeline", 8, 16, 0.5),
    Workload("CRAM-MD5 {PLAIN} 8x16", "plain", "CRAM-MD5", "pipeline", 8, 16, 0.5),
    Workload("churn PLAIN {PLAIN} x8", "plain", "PLAIN", "churn", 8, 1, 0.4),
    Workload("PLAIN {SHA512-CRYPT} 8x4", "crypt", "PLAIN", "pipeline", 8, 4, 1.8),
    Workload("PLAIN {BLF-CRYPT} 8x4", "blf", "PLAIN", "pipeline", 8, 4, 1.8),
)
P99_WORKLOAD = WORKLOADS[0].label
RSS_TARGET_MB = 60.0
STARTUP_TARGET_S = 1.0


# -- stores --------------------------------------------------------------------------


def _hash_one(job: tuple[str, str, str, int | None]) -> str:
    scheme, user, password, rounds = job
    return f"{user}:{generate(scheme, password.encode(), user, rounds)}::::::"


def write_stores(workdir: Path, big: bool = True) -> None:
    """users.passwd (all groups), creds-<group>.txt, big.passwd; kept if already there."""
    store = workdir / "users.passwd"
    if not store.exists():
        jobs = [
            (scheme, f"{group}{i}", f"pw-{group}-{i}", rounds)
            for group, (scheme, count, rounds) in GROUPS.items()
            for i in range(count)
        ]
        with multiprocessing.get_context("fork").Pool() as pool:
            lines = pool.map(_hash_one, jobs, chunksize=64)
        tmp = store.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.rename(store)
        for group, (_, count, _) in GROUPS.items():
            (workdir / f"creds-{group}.txt").write_text(
                "".join(f"{group}{i}:pw-{group}-{i}\n" for i in range(count))
            )
    store.chmod(0o644)
    if not big:
        return
    large = workdir / "big.passwd"
    if not large.exists():
        tmp = large.with_suffix(".tmp")
        with tmp.open("w") as out:
            for i in range(BIG_USERS):
                out.write(_hash_one(("SSHA512", f"big{i}", f"pw-big-{i}", None)) + "\n")
        tmp.rename(large)
    large.chmod(0o644)


def credentials(workdir: Path, group: str) -> list[Credential]:
    lines = (workdir / f"creds-{group}.txt").read_text().splitlines()
    return [Credential(*line.split(":", 1)) for line in lines]


# -- servers -------------------------------------------------------------------------


class Authbridge:
    #: ``--workers``: serving processes (one supervisor more when above 1).
    workers = 1

    def __init__(self, users: Path, sock: Path, log: Path) -> None:
        self.users, self.socket_path, self.log = users, sock, log
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "authbridge", "serve", "--dovecot-compat",
            "--failure-delay", "0", "--passwd-file", str(self.users),
            "--socket", str(self.socket_path), "--socket-mode", "0666",
            "--log-level", "warning", "--workers", str(self.workers),
        ]  # fmt: skip

    def start(self) -> Authbridge:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=log, env=env, start_new_session=True
            )
        wait_accepting(self.socket_path, self.proc, 60.0)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def wait_accepting(path: Path, proc: subprocess.Popen[bytes] | None, timeout: float) -> float:
    """Poll connect() every millisecond; return the monotonic time it first succeeded."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server {proc.pid} exited ({proc.returncode}) before listening")
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(path))
                return time.monotonic()
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not accepting after {timeout}s")
        time.sleep(0.001)


def one_auth(path: Path, user: str, password: str) -> bool:
    sock = blocking_handshake(str(path), "PLAIN", 60.0)
    with sock:
        blob = wire.b64encode(b"\x00" + user.encode() + b"\x00" + password.encode())
        sock.sendall(wire.join_line("AUTH", "1", "PLAIN", "service=smtp", f"resp={blob}"))
        buffer = wire.LineBuffer()
        while True:
            data = sock.recv(65536)
            if not data:
                return False
            for line in buffer.feed(data):
                if line.startswith(("OK\t1", "FAIL\t1")):
                    return line.startswith("OK")


def tree_pids(pid: int) -> list[int]:
    pids = [pid]
    for index in range(len(pids) + 1000):
        if index >= len(pids):
            break
        for task in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in task.read_text().split()]
    return pids


def status_kb(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages split between the processes sharing them."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
    except OSError:
        return "?"


# -- the run -------------------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its live descendants."""
    ticks = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def start_py_spy(
    pid: int, directory: Path, workload: Workload, seconds: float
) -> subprocess.Popen[bytes] | None:
    """Sample the authbridge server while it runs ``workload`` (raw stacks for flamegraphs)."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("  (py-spy not installed: pip install py-spy; no profile)")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in workload.label.lower()).strip("-")
    out = directory / f"{slug}.raw"
    return subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "200",
         "-f", "raw", "-o", str(out), "--nonblocking", "--subprocesses"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


@dataclass
class Row:
    workload: Workload
    dovecot: Summary
    authbridge: Summary
    #: server CPU microseconds per completed authentication
    dovecot_cpu_us: float = 0.0
    authbridge_cpu_us: float = 0.0

    @property
    def ratio(self) -> float:
        return self.authbridge.rate / self.dovecot.rate if self.dovecot.rate else 0.0


def run_workload(
    sock: Path, workload: Workload, workdir: Path, duration: float, warmup: float, procs: int
) -> Summary:
    attempts = prepare(credentials(workdir, workload.group), workload.mechanism, 0.0)
    plan = Plan(
        target=str(sock),
        mechanism=workload.mechanism,
        mode=workload.mode,  # type: ignore[arg-type]
        connections=workload.connections,
        depth=workload.depth,
        duration=duration,
        warmup=warmup,
        requests=None,
    )
    return run_plan(plan, attempts, procs, workload.label)


@contextlib.contextmanager
def servers(workdir: Path, users: Path) -> Iterator[tuple[DovecotAuth, Authbridge]]:
    dovecot = DovecotAuth(
        users, workdir / "dovecot.sock", workdir=workdir / "dovecot",
        extra_settings=DOVECOT_SETTINGS,
    )  # fmt: skip
    ab = Authbridge(users, workdir / "authbridge.sock", workdir / "authbridge.log")
    dovecot.start()
    try:
        ab.start()
        try:
            yield dovecot, ab
        finally:
            ab.stop()
    finally:
        dovecot.stop()


def measure_big(workdir: Path, runs: int, load_seconds: float) -> dict[str, dict[str, float]]:
    """Start each server on the 100k-user file: time to listen, to first OK, and RSS."""
    big = workdir / "big.passwd"
    creds = [Credential(f"big{i}", f"pw-big-{i}") for i in range(0, BIG_USERS, 7)]
    out: dict[str, dict[str, float]] = {}
    for name in ("dovecot", "authbridge"):
        listen: list[float] = []
        first_ok: list[float] = []
        rss_idle = rss_load = rss_main = pss_load = 0.0
        for run in range(runs):
            sock = workdir / f"big-{name}.sock"
            t0 = time.monotonic()
            if name == "dovecot":
                server: DovecotAuth | Authbridge = DovecotAuth(
                    big, sock, workdir=workdir / "big-dovecot", extra_settings=DOVECOT_SETTINGS
                )
                # DovecotAuth.start() waits for the socket itself; time it from outside
                server.start()
                t_listen = time.monotonic()
                assert isinstance(server, DovecotAuth) and server.proc is not None
                pid = server.proc.pid
            else:
                server = Authbridge(big, sock, workdir / "big-authbridge.log")
                server.start()
                t_listen = time.monotonic()
                pid = server.pid
            try:
                ok = one_auth(sock, f"big{BIG_USERS - 1}", f"pw-big-{BIG_USERS - 1}")
                t_ok = time.monotonic()
                if not ok:
                    raise RuntimeError(f"{name}: the 100k-user store refused a right password")
                listen.append(t_listen - t0)
                first_ok.append(t_ok - t0)
                if run == runs - 1:
                    pids = tree_pids(pid)
                    rss_idle = sum(status_kb(p, "VmRSS") for p in pids) / 1024
                    plan = Plan(str(sock), "PLAIN", "pipeline", 8, 16, load_seconds, 0.0, None)
                    run_plan(plan, prepare(creds, "PLAIN", 0.0), None, "rss-load")
                    pids = tree_pids(pid)
                    rss_load = sum(status_kb(p, "VmHWM") for p in pids) / 1024
                    rss_main = max(status_kb(p, "VmHWM") for p in pids) / 1024
                    pss_load = sum(pss_kb(p) for p in pids) / 1024
                    out.setdefault(name, {})["processes"] = len(pids)
                    out[name]["tree"] = "; ".join(
                        f"{proc_name(p)} {status_kb(p, 'VmHWM') / 1024:.1f}MB" for p in pids
                    )  # type: ignore[assignment]
            finally:
                server.stop()
        out.setdefault(name, {}).update(
            listen_s=statistics.median(listen),
            first_ok_s=statistics.median(first_ok),
            rss_idle_mb=rss_idle,
            rss_peak_mb=rss_load,
            rss_largest_process_mb=rss_main,
            pss_after_load_mb=pss_load,
        )
    return out


def print_table(rows: list[Row], big: dict[str, dict[str, float]] | None) -> None:
    if rows:
        print_rates(rows)
    if big:
        print_big(big)


def print_rates(rows: list[Row]) -> None:
    print()
    print(
        f"{'workload':<26} {'dovecot/s':>10} {'authbr/s':>10} {'ratio':>6} {'target':>7} "
        f"{'met':>4} {'dc p99':>8} {'ab p99':>8} {'dc us':>6} {'ab us':>6} {'err':>4}"
    )
    for row in rows:
        met = "yes" if row.ratio >= row.workload.target else "NO"
        errors = sum(s.errors + s.mismatched for s in (row.dovecot, row.authbridge))
        print(
            f"{row.workload.label:<26} {row.dovecot.rate:>10.0f} {row.authbridge.rate:>10.0f} "
            f"{row.ratio:>6.2f} {'>=' + str(row.workload.target):>7} {met:>4} "
            f"{row.dovecot.p99_ms:>7.2f}m {row.authbridge.p99_ms:>7.2f}m "
            f"{row.dovecot_cpu_us:>6.0f} {row.authbridge_cpu_us:>6.0f} "
            f"{errors:>4}"
        )
    print("(dc us / ab us: server CPU time per authentication, all server processes)")
    for row in rows:
        if row.workload.label == P99_WORKLOAD and row.dovecot.p99_ms:
            factor = row.authbridge.p99_ms / row.dovecot.p99_ms
            met = "yes" if factor <= 3.0 else "NO"
            print(f"p99 at 8x16 (PLAIN): authbridge/Dovecot = {factor:.2f} (target <= 3): {met}")


def print_big(big: dict[str, dict[str, float]]) -> None:
    if big:
        print()
        print(f"100k users ({BIG_USERS} x {{SSHA512}}); RSS summed over the process tree,")
        print("PSS = the same with shared pages split between processes (after the load):")
        print(
            f"{'server':<11} {'listening':>10} {'first OK':>9} {'RSS idle':>9} "
            f"{'RSS peak':>9} {'PSS':>8} {'procs':>5}"
        )
        for name, m in big.items():
            print(
                f"{name:<11} {m['listen_s']:>9.3f}s {m['first_ok_s']:>8.3f}s "
                f"{m['rss_idle_mb']:>7.1f}MB {m['rss_peak_mb']:>7.1f}MB "
                f"{m['pss_after_load_mb']:>6.1f}MB {m['processes']:>5.0f}"
            )
        ab = big["authbridge"]
        print(
            f"authbridge RSS peak {ab['rss_peak_mb']:.1f} MB (target <= {RSS_TARGET_MB:.0f}): "
            f"{'yes' if ab['rss_peak_mb'] <= RSS_TARGET_MB else 'NO'}; start-up to first OK "
            f"{ab['first_ok_s']:.3f} s (target < {STARTUP_TARGET_S:.0f}): "
            f"{'yes' if ab['first_ok_s'] < STARTUP_TARGET_S else 'NO'}"
        )
        for name, m in big.items():
            print(f"  {name} processes: {m['tree']}")


def code_state() -> str:
    """Which authbridge was measured: the commit, and whether the package has local edits."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "authbridge"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    edited = [line[3:] for line in dirty if line.strip()]
    return head + (f" + uncommitted edits in {', '.join(edited)}" if edited else "")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short durations, one start-up")
    parser.add_argument("--duration", type=float, help="measured seconds per workload and server")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each measure")
    parser.add_argument("--client-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", help="comma-separated substrings of workload labels")
    parser.add_argument("--skip-big", action="store_true", help="no 100k-user RSS/start-up")
    parser.add_argument(
        "--python-client",
        action="store_true",
        help="run the rate workloads with the Python client (it takes a core from the "
        "server: use side_by_side.py for ratios)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="authbridge serving processes (default 1)"
    )
    parser.add_argument("--workdir", type=Path, help="keep stores here (reused when present)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy raw profiles of authbridge per workload into DIR "
        "(summarise with benchmarks/stack_summary.py)",
    )
    args = parser.parse_args(argv)
    Authbridge.workers = args.workers
    duration = args.duration or (2.0 if args.quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    made_tmp = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="authbridge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the Dovecot auth process runs unprivileged
    try:
        started = time.monotonic()
        write_stores(workdir, big=not args.skip_big)
        print(f"stores ready in {workdir} ({time.monotonic() - started:.1f} s)", flush=True)
        load = os.getloadavg()
        state = code_state()
        print(f"authbridge measured: {state}, workers = {args.workers}")
        print(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        workloads = [
            w
            for w in WORKLOADS
            if not args.only or any(s.strip() in w.label for s in args.only.split(","))
        ]
        if not (args.python_client or args.profile):
            workloads = []
            print("rate workloads skipped (--python-client to run them; side_by_side.py "
                  "measures rates with the C client)")  # fmt: skip
        rows: list[Row] = []
        with contextlib.ExitStack() as stack:
            if workloads:
                dovecot, ab = stack.enter_context(servers(workdir, workdir / "users.passwd"))
            for index, workload in enumerate(workloads):
                order = ("dovecot", "authbridge") if index % 2 == 0 else ("authbridge", "dovecot")
                results: dict[str, Summary] = {}
                cpu_us: dict[str, float] = {}
                for name in order:
                    sock = dovecot.socket_path if name == "dovecot" else ab.socket_path
                    assert dovecot.proc is not None
                    pid = dovecot.proc.pid if name == "dovecot" else ab.pid
                    cpu0 = tree_cpu(pid)
                    spy = None
                    if args.profile and name == "authbridge":
                        spy = start_py_spy(pid, args.profile, workload, duration + warmup)
                    results[name] = s = run_workload(
                        sock, workload, workdir, duration, warmup, args.client_processes
                    )
                    if spy is not None:
                        spy.wait(30)
                    cpu_us[name] = (tree_cpu(pid) - cpu0) / max(1, s.ok + s.fail) * 1e6
                    print(
                        f"  {workload.label:<26} {name:<10} {s.rate:>9.0f} auth/s "
                        f"p50 {s.p50_ms:.2f} ms p99 {s.p99_ms:.2f} ms "
                        f"ok={s.ok} fail={s.fail} err={s.errors} "
                        f"server CPU {cpu_us[name]:.0f} us/auth",
                        flush=True,
                    )
                rows.append(
                    Row(
                        workload,
                        results["dovecot"],
                        results["authbridge"],
                        cpu_us["dovecot"],
                        cpu_us["authbridge"],
                    )
                )
        big = None if args.skip_big else measure_big(workdir, 1 if args.quick else 3, duration)
        print_table(rows, big)
        print(f"\ntotal {time.monotonic() - started:.0f} s")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "rows": [
                            {
                                "workload": r.workload.label,
                                "target": r.workload.target,
                                "ratio": r.ratio,
                                "dovecot_cpu_us": r.dovecot_cpu_us,
                                "authbridge_cpu_us": r.authbridge_cpu_us,
                                "dovecot": r.dovecot.as_dict(),
                                "authbridge": r.authbridge.as_dict(),
                            }
                            for r in rows
                        ],
                        "big": big,
                        "load_before": load,
                        "code": state,
                    },
                    indent=2,
                )
            )
    finally:
        if made_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
