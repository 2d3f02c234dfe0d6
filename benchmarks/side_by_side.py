#!/usr/bin/env python3
"""Side by side with real Dovecot 2.3, driven by a C load client that leaves the server its CPU.

    python benchmarks/side_by_side.py                # full: two servers' worth of minutes
    python benchmarks/side_by_side.py --runs 2       # the issue's table, two runs
    python benchmarks/side_by_side.py --quick        # smoke run (~2 minutes)
    python benchmarks/side_by_side.py --only "PLAIN {PLAIN},churn" --servers dovecot,compat
    python benchmarks/side_by_side.py --floors       # also the trio floors of shared/research

The load client is ``authload`` (C, epoll, a few µs of CPU per request), built from
``../shared/tools/authload.c`` (beside the repository; ``--authload-src`` or
``$AUTHLOAD_SRC`` to point elsewhere) into a cache directory with ``gcc -O2 ... -lcrypto``,
or given prebuilt with ``--authload`` / ``$AUTHLOAD``. The Python ``authbridge bench``
client needs a core of its own on this 2-core machine and deflated every ratio measured
with it (``compare_dovecot.py``).

Servers run one after the other, each alone (the others are stopped): real Dovecot 2.3
auth (passwd-file, failure delay 0, penalty off, cache off, ``auth_verbose = no``),
authbridge in its default mode at info level, ``--dovecot-compat`` at warning level, and
default mode with 2 workers at info level; every one serves the same users file and gets
the same workloads. Every run starts every server once; with ``--runs 2`` the second run
takes the servers in reverse order. Then the instruction-count yardstick
(``benchmarks/instructions.py``, valgrind), which the machine's load cannot move.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

# The stores, Dovecot's settings and the process helpers are compare_dovecot.py's.
from compare_dovecot import (  # noqa: E402
    DOVECOT_SETTINGS,
    code_state,
    tree_cpu,
    wait_accepting,
    write_stores,
)

AUTHLOAD_SRC_DEFAULT = REPO.parent / "shared" / "tools" / "authload.c"
FLOORS_DEFAULT = REPO.parent / "shared" / "research" / "floors"
INSTALL_HINT = "apt-get install gcc libssl-dev"


# -- workloads and servers -------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    label: str
    #: users group of compare_dovecot.GROUPS: plain, ssha, crypt, blf
    group: str
    mechanism: str
    connections: int
    depth: int
    churn: bool
    #: cheap (8x16 on a cheap scheme), churn, or hash (an expensive scheme)
    kind: str


WORKLOADS: tuple[Workload, ...] = (
    Workload("PLAIN {PLAIN} 8x16", "plain", "PLAIN", 8, 16, False, "cheap"),
    Workload("PLAIN {SSHA512} 8x16", "ssha", "PLAIN", 8, 16, False, "cheap"),
    Workload("LOGIN {PLAIN} 8x16", "plain", "LOGIN", 8, 16, False, "cheap"),
    Workload("LOGIN {SSHA512} 8x16", "ssha", "LOGIN", 8, 16, False, "cheap"),
    # CRAM-MD5 needs the plaintext (or CRAM-MD5 credentials): {SSHA512} users cannot use it.
    Workload("CRAM-MD5 {PLAIN} 8x16", "plain", "CRAM-MD5", 8, 16, False, "cheap"),
    Workload("churn x16 PLAIN {PLAIN}", "plain", "PLAIN", 16, 1, True, "churn"),
    Workload("PLAIN {SHA512-CRYPT} 8x4", "crypt", "PLAIN", 8, 4, False, "hash"),
    Workload("PLAIN {BLF-CRYPT} 8x4", "blf", "PLAIN", 8, 4, False, "hash"),
)


@dataclass(frozen=True)
class ServerSpec:
    key: str
    title: str
    #: dovecot, authbridge or floor
    kind: str
    args: tuple[str, ...] = ()
    workers: int = 1
    #: a floor answers PLAIN against {PLAIN} entries only
    plain_only: bool = False


SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec("dovecot", "Dovecot 2.3 auth", "dovecot"),
    ServerSpec("default", "authbridge, default mode, info", "authbridge", ("--log-level", "info")),
    ServerSpec(
        "compat",
        "authbridge, --dovecot-compat, warning",
        "authbridge",
        ("--dovecot-compat", "--log-level", "warning"),
    ),
    ServerSpec(
        "workers2",
        "authbridge, 2 workers, info",
        "authbridge",
        ("--log-level", "info", "--workers", "2"),
        workers=2,
    ),
)
FLOORS: tuple[ServerSpec, ...] = (
    ServerSpec("floor_trio", "floor_trio.py (not a product)", "floor", plain_only=True),
    ServerSpec("floor_raw", "floor_raw.py (not a product)", "floor", plain_only=True),
)

#: Targets of issue 16 (ratio authbridge/Dovecot, same run).
TARGET_CHEAP_INFO = 0.7
TARGET_CHEAP_WARNING = 1.0
TARGET_CHURN = 0.5
TARGET_HASH = 1.7
TARGET_P99 = 1.5
TARGET_WORKERS_CHEAP = 1.5


def target_for(server: ServerSpec, workload: Workload) -> float | None:
    """The minimum ratio to Dovecot the issue asks of ``server`` on ``workload``."""
    if server.kind != "authbridge":
        return None
    if workload.kind == "churn":
        return TARGET_CHURN
    if workload.kind == "hash":
        return TARGET_HASH
    return TARGET_CHEAP_WARNING if "warning" in server.args else TARGET_CHEAP_INFO


# -- the load client ---------------------------------------------------------------------


class AuthloadError(RuntimeError):
    """authload could not be built or run; the message says what to install or fix."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "authbridge-bench"


def build_authload(source: Path, cache_dir: Path) -> Path:
    """Compile ``source`` once per content into ``cache_dir``; return the binary's path."""
    if not source.is_file():
        raise AuthloadError(
            f"authload source {source} not found: pass --authload-src or set AUTHLOAD_SRC "
            "(or a prebuilt binary with --authload / AUTHLOAD)"
        )
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    binary = cache_dir / f"authload-{digest}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    gcc = shutil.which("gcc")
    if gcc is None:
        raise AuthloadError(f"gcc is not installed; to build authload: {INSTALL_HINT}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    result = subprocess.run(
        [gcc, "-O2", "-o", str(tmp), str(source), "-lcrypto"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise AuthloadError(
            f"building {source} failed (needs gcc and OpenSSL's headers: {INSTALL_HINT}):\n"
            + result.stderr[-2000:]
        )
    tmp.rename(binary)
    return binary


def find_authload(args: argparse.Namespace) -> Path:
    given = args.authload or os.environ.get("AUTHLOAD")
    if given:
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AuthloadError(f"--authload {path} is not an executable file")
        return path
    source = args.authload_src or os.environ.get("AUTHLOAD_SRC") or AUTHLOAD_SRC_DEFAULT
    return build_authload(Path(source), args.cache_dir)


_FIELD = re.compile(r"(\w+)=([^\s]+)")


@dataclass
class Result:
    ok: int = 0
    fail: int = 0
    err: int = 0
    rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    connects: int = 0
    #: server CPU (all its processes) per answered request in the measured window, µs
    server_cpu_us: float = 0.0
    #: authload's CPU over its whole run / its wall time (1.0 = one core)
    client_cpu_share: float = 0.0


def parse_authload(line: str) -> Result:
    """authload's one summary line: ``... ok=N fail=N err=N rate=N/s p50=Xms p99=Xms ...``."""
    fields = dict(_FIELD.findall(line))
    if "rate" not in fields:
        raise ValueError(f"not an authload summary line: {line!r}")

    def ms(key: str) -> float:
        return float(fields.get(key, "0").removesuffix("ms"))

    return Result(
        ok=int(fields.get("ok", 0)),
        fail=int(fields.get("fail", 0)),
        err=int(fields.get("err", 0)),
        rate=float(fields["rate"].removesuffix("/s")),
        p50_ms=ms("p50"),
        p99_ms=ms("p99"),
        max_ms=ms("max"),
        connects=int(fields.get("connects", 0)),
    )


def authload_command(
    binary: Path, sock: Path, creds: Path, workload: Workload, duration: float, warmup: float
) -> list[str]:
    cmd = [
        str(binary), "-s", str(sock), "-U", str(creds), "-m", workload.mechanism,
        "-c", str(workload.connections), "-d", str(workload.depth),
        "-t", f"{duration:g}", "-w", f"{warmup:g}",
    ]  # fmt: skip
    if workload.churn:
        cmd.append("--churn")
    return cmd


def run_authload(
    binary: Path,
    sock: Path,
    creds: Path,
    workload: Workload,
    duration: float,
    warmup: float,
    server_pid: int,
) -> Result:
    """One authload run; the server's CPU is sampled at the ends of the measured window."""
    cmd = authload_command(binary, sock, creds, workload, duration, warmup)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Sample the server's CPU where authload's measured window begins and ends.
    time.sleep(warmup)
    cpu0 = tree_cpu(server_pid)
    time.sleep(duration)
    cpu1 = tree_cpu(server_pid)
    try:
        out, errout = proc.communicate(timeout=duration + warmup + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AuthloadError(f"authload did not finish: {' '.join(cmd)}") from None
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in out.splitlines() if "rate=" in line]
    if not lines:
        raise AuthloadError(
            f"authload printed no summary (exit {proc.returncode}): {errout.strip()[-500:]}"
        )
    result = parse_authload(lines[-1])
    answered = result.ok + result.fail
    result.server_cpu_us = (cpu1 - cpu0) / answered * 1e6 if answered else 0.0
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.client_cpu_share = client / wall if wall else 0.0
    return result


# -- running servers ---------------------------------------------------------------------


class Running:
    """One started server: its main PID and how to stop it."""

    def __init__(self, spec: ServerSpec, sock: Path, pid: int, stop: Callable[[], None]) -> None:
        self.spec, self.sock, self.pid, self._stop = spec, sock, pid, stop

    def stop(self) -> None:
        self._stop()


def _popen_stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_server(spec: ServerSpec, users: Path, workdir: Path, floors: Path) -> Running:
    sock = workdir / f"{spec.key}.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    if spec.kind == "dovecot":
        from tests.support.dovecot import DovecotAuth

        dovecot = DovecotAuth(
            users, sock, workdir=workdir / "dovecot", extra_settings=DOVECOT_SETTINGS
        ).start()
        assert dovecot.proc is not None
        return Running(spec, sock, dovecot.proc.pid, dovecot.stop)
    if spec.kind == "authbridge":
        cmd = [
            sys.executable, "-m", "authbridge", "serve", "--passwd-file", str(users),
            "--socket", str(sock), "--socket-mode", "0666", "--failure-delay", "0",
            *spec.args,
        ]  # fmt: skip
    else:
        cmd = [sys.executable, str(floors / f"{spec.key}.py"), str(sock), str(users)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with (workdir / f"{spec.key}.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, env=env, start_new_session=True, cwd=workdir
        )
    try:
        wait_accepting(sock, proc, 60.0)
    except BaseException:
        _popen_stop(proc)
        raise
    return Running(spec, sock, proc.pid, lambda: _popen_stop(proc))


# -- the run -----------------------------------------------------------------------------


@dataclass
class Measured:
    """Every result of the run: results[server key][workload label] = one Result per run."""

    servers: list[ServerSpec]
    workloads: list[Workload]
    results: dict[str, dict[str, list[Result]]] = field(default_factory=dict)
    #: lines of benchmarks/instructions.py
    instructions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, server: str, workload: str, result: Result) -> None:
        self.results.setdefault(server, {}).setdefault(workload, []).append(result)

    def get(self, server: str, workload: str) -> list[Result]:
        return self.results.get(server, {}).get(workload, [])


def applies(server: ServerSpec, workload: Workload) -> bool:
    return not server.plain_only or (workload.group == "plain" and workload.mechanism == "PLAIN")


def select(items: Sequence[Workload], only: str | None) -> list[Workload]:
    if not only:
        return list(items)
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    chosen = [w for w in items if any(s in w.label for s in wanted)]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no workload: {[w.label for w in items]}")
    return chosen


def select_servers(keys: str | None, floors: bool) -> list[ServerSpec]:
    pool = list(SERVERS) + list(FLOORS)
    if keys:
        wanted = [k.strip() for k in keys.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in {s.key for s in pool}]
        if unknown:
            raise SystemExit(f"unknown --servers {unknown}; known: {[s.key for s in pool]}")
        return [s for s in pool if s.key in wanted]
    return list(SERVERS) + (list(FLOORS) if floors else [])


def measure(
    args: argparse.Namespace,
    binary: Path,
    workdir: Path,
    servers: list[ServerSpec],
    workloads: list[Workload],
) -> Measured:
    measured = Measured(servers, workloads)
    users = workdir / "users.passwd"
    for run in range(args.runs):
        order = servers if run % 2 == 0 else list(reversed(servers))
        for spec in order:
            chosen = [w for w in workloads if applies(spec, w)]
            if not chosen:
                continue
            server = start_server(spec, users, workdir, args.floors_dir)
            try:
                for workload in chosen:
                    creds = workdir / f"creds-{workload.group}.txt"
                    r = run_authload(
                        binary, server.sock, creds, workload, args.duration, args.warmup,
                        server.pid,
                    )  # fmt: skip
                    measured.add(spec.key, workload.label, r)
                    print(
                        f"  run {run + 1} {spec.key:<10} {workload.label:<26} "
                        f"{r.rate:>9.0f}/s p50 {r.p50_ms:.3f} ms p99 {r.p99_ms:.3f} ms "
                        f"ok={r.ok} fail={r.fail} err={r.err} server {r.server_cpu_us:.1f} "
                        f"µs/auth, authload {r.client_cpu_share:.0%} of a core",
                        flush=True,
                    )
            finally:
                server.stop()
    return measured


# -- the instruction-count yardstick -----------------------------------------------------


_INSTR = re.compile(r"(\d[\d,.]*)k instructions per (\w+)")
#: seconds one instructions.py call may take (two valgrind runs; slow on a busy machine)
INSTRUCTIONS_TIMEOUT = 1800.0


def _error_line(text: str) -> str:
    """The line of a failed run worth quoting: the exception, else the last non-valgrind one."""
    said = [line.strip().lstrip("|").strip() for line in text.splitlines()]
    said = [line for line in said if line and not line.startswith("==") and line.strip("+-|")]
    errors = [line for line in said if re.match(r"[\w.]*(Error|Exception|Exit)\b", line)]
    return ((errors or said)[-1:] or ["?"])[0][:200]


def instruction_counts(levels: Sequence[str]) -> list[str]:
    """Lines of ``benchmarks/instructions.py`` per level, with its churn mode if it has one."""
    script = HERE / "instructions.py"
    if shutil.which("valgrind") is None:
        return ["(valgrind not installed: apt-get install valgrind; no instruction counts)"]
    helptext = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=False
    ).stdout
    variants: list[list[str]] = [[]]
    churn_flag = next(
        (f for f in ("--churn", "--per-connection", "--connections") if f in helptext), None
    )
    if churn_flag:
        variants.append([churn_flag])
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:
        # instructions.py runs valgrind on the real interpreter (the venv's symlink
        # resolved), which does not see the venv; its user site can be pointed there.
        env.setdefault("PYTHONUSERBASE", sys.prefix)
    lines: list[str] = []
    for level in levels:
        for extra in variants:
            what = f"instructions.py --log-level {level} {' '.join(extra)}".strip()
            try:
                result = subprocess.run(
                    [sys.executable, str(script), "--log-level", level, *extra],
                    capture_output=True,
                    text=True,
                    check=False,
                    env=env,
                    timeout=INSTRUCTIONS_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                lines.append(f"{what}: no answer within {INSTRUCTIONS_TIMEOUT:.0f} s")
                print(f"  {lines[-1]}", flush=True)
                continue
            found = [line for line in result.stdout.splitlines() if _INSTR.search(line)]
            if result.returncode != 0 or not found:
                lines.append(f"{what}: failed ({_error_line(result.stderr + result.stdout)})")
            else:
                lines += [line.replace(str(REPO), ".") for line in found]
            print(f"  {lines[-1]}", flush=True)
    if not churn_flag:
        lines.append("(instructions.py has no per-connection mode yet: per request only)")
    return lines


# -- the report --------------------------------------------------------------------------


def _k(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"


def _span(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "–"
    low, high = min(values), max(values)
    one = fmt.format(low)
    return one if fmt.format(high) == one else f"{one}–{fmt.format(high)}"


def _rate_span(values: Sequence[float]) -> str:
    if not values:
        return "–"
    low, high = _k(min(values)), _k(max(values))
    return low if low == high else f"{low}–{high}"


def ratios(m: Measured, server: str, workload: str, base: str = "dovecot") -> list[float]:
    """Per-run ratios server/base (same run only)."""
    ours, theirs = m.get(server, workload), m.get(base, workload)
    return [a.rate / b.rate for a, b in zip(ours, theirs, strict=False) if b.rate]


def p99_ratios(m: Measured, server: str, workload: str) -> list[float]:
    ours, theirs = m.get(server, workload), m.get("dovecot", workload)
    return [a.p99_ms / b.p99_ms for a, b in zip(ours, theirs, strict=False) if b.p99_ms]


def verdict(values: Sequence[float], minimum: float | None = None, maximum: float | None = None
            ) -> str:  # fmt: skip
    """Judged on the worst run."""
    if not values:
        return ""
    if minimum is not None:
        return " ✓" if min(values) >= minimum else " ✗"
    if maximum is not None:
        return " ✓" if max(values) <= maximum else " ✗"
    return ""


def render(m: Measured, meta: dict[str, str]) -> str:
    out: list[str] = []
    servers = [s for s in m.servers if s.key in m.results]
    out.append(f"## Side by side ({meta.get('when', '')})")
    out.append("")
    for key, value in meta.items():
        if key != "when":
            out.append(f"- {key}: {value}")
    out += [f"- {note}" for note in m.notes]
    out.append("")
    out.append("### Rates (auth/s; × = ratio to Dovecot in the same run; range over runs; "
               "✓/✗ = issue target, worst run)")  # fmt: skip
    out.append("")
    out.append("| workload | " + " | ".join(s.title for s in servers) + " |")
    out.append("|---|" + "---:|" * len(servers))
    for w in m.workloads:
        cells = []
        for s in servers:
            results = m.get(s.key, w.label)
            if not results:
                cells.append("–")
                continue
            cell = _rate_span([r.rate for r in results])
            if s.key != "dovecot":
                rs = ratios(m, s.key, w.label)
                if rs:
                    cell += f" ({_span(rs, '{:.2f}')}×){verdict(rs, target_for(s, w))}"
            if sum(r.err for r in results):
                cell += f" **err {sum(r.err for r in results)}**"
            cells.append(cell)
        out.append(f"| {w.label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        f"Targets: 8x16 ≥ {TARGET_CHEAP_INFO}× at info, ≥ {TARGET_CHEAP_WARNING}× at warning; "
        f"churn ≥ {TARGET_CHURN}×; SHA512-CRYPT/BLF-CRYPT 8x4 ≥ {TARGET_HASH}×."
    )
    pipelined = [w for w in m.workloads if w.kind == "cheap"]
    if pipelined:
        out.append("")
        out.append(f"### Latency at 8x16 (ms, p50 / p99; p99 × Dovecot's, target ≤ {TARGET_P99}×)")
        out.append("")
        out.append("| workload | " + " | ".join(s.title for s in servers) + " |")
        out.append("|---|" + "---:|" * len(servers))
        for w in pipelined:
            cells = []
            for s in servers:
                results = m.get(s.key, w.label)
                if not results:
                    cells.append("–")
                    continue
                cell = (f"{_span([r.p50_ms for r in results], '{:.2f}')} / "
                        f"{_span([r.p99_ms for r in results], '{:.2f}')}")  # fmt: skip
                if s.key != "dovecot":
                    pr = p99_ratios(m, s.key, w.label)
                    if pr:
                        maximum = TARGET_P99 if s.kind == "authbridge" else None
                        cell += f" ({_span(pr, '{:.2f}')}×){verdict(pr, maximum=maximum)}"
                cells.append(cell)
            out.append(f"| {w.label} | " + " | ".join(cells) + " |")
    if "workers2" in m.results and "default" in m.results:
        out.append("")
        out.append("### 2 workers / one process (both default mode, info; same run)")
        out.append("")
        out.append("| workload | ratio | target |")
        out.append("|---|---:|---:|")
        for w in m.workloads:
            rs = ratios(m, "workers2", w.label, base="default")
            if rs:
                minimum = TARGET_WORKERS_CHEAP if w.kind == "cheap" else 1.0
                out.append(f"| {w.label} | {_span(rs, '{:.2f}')}×{verdict(rs, minimum)} "
                           f"| ≥ {minimum}× |")  # fmt: skip
    out.append("")
    out.append("### Server CPU per answered request (µs, all its processes, measured window)")
    out.append("")
    out.append("| workload | " + " | ".join(s.title for s in servers) + " |")
    out.append("|---|" + "---:|" * len(servers))
    for w in m.workloads:
        cells = [_span([r.server_cpu_us for r in m.get(s.key, w.label)], "{:.1f}")
                 for s in servers]  # fmt: skip
        out.append(f"| {w.label} | " + " | ".join(cells) + " |")
    shares = [r.client_cpu_share for per in m.results.values() for rs in per.values() for r in rs]
    if shares:
        out.append("")
        out.append(f"authload's own CPU: median {statistics.median(shares):.0%}, "
                   f"max {max(shares):.0%} of one core.")  # fmt: skip
    if m.instructions:
        out.append("")
        out.append("### Instructions (valgrind, benchmarks/instructions.py)")
        out.append("")
        out += [f"- {line}" for line in m.instructions]
    return "\n".join(out) + "\n"


# -- command line ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs to prove it works")
    parser.add_argument("--duration", type=float, help="measured seconds per workload (5; quick 1)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds first (1; quick 0.3)")
    parser.add_argument("--runs", type=int, default=1, help="whole runs (2 for the issue's table)")
    parser.add_argument("--only", help="comma-separated substrings of workload labels")
    parser.add_argument(
        "--servers",
        help="comma-separated keys: dovecot, default, compat, workers2, floor_trio, floor_raw",
    )
    parser.add_argument("--floors", action="store_true", help="also the two trio floors")
    parser.add_argument("--floors-dir", type=Path, default=FLOORS_DEFAULT)
    parser.add_argument("--authload", help="a prebuilt authload binary ($AUTHLOAD)")
    parser.add_argument(
        "--authload-src", help=f"authload.c to build ($AUTHLOAD_SRC; {AUTHLOAD_SRC_DEFAULT})"
    )
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--no-instructions", action="store_true", help="skip valgrind counts")
    parser.add_argument("--workdir", type=Path, help="keep the stores here (reused)")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 1.0 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 1.0
    if args.runs < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--runs must be >= 1, --duration > 0, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = select(WORKLOADS, args.only)
    servers = select_servers(args.servers, args.floors)
    try:
        binary = find_authload(args)
    except AuthloadError as exc:
        print(f"side_by_side: {exc}", file=sys.stderr)
        return 2
    made_tmp = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="authbridge-sbs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the Dovecot auth process runs unprivileged
    try:
        started = time.monotonic()
        write_stores(workdir, big=False)
        load = os.getloadavg()
        meta = {
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "authbridge": code_state(),
            "load client": f"{binary} (C, epoll)",
            "load average before": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"on {os.cpu_count()} cores",
            "per workload": f"{args.duration:g} s measured after {args.warmup:g} s warm-up, "
            f"{args.runs} run(s)",
            "users": "10k {PLAIN}, 10k {SSHA512}, 500 {SHA512-CRYPT}, 100 {BLF-CRYPT} cost 8",
        }
        print(f"stores ready in {workdir} ({time.monotonic() - started:.1f} s); "
              f"load client {binary}", flush=True)  # fmt: skip
        measured = measure(args, binary, workdir, servers, workloads)
        measured.notes += [
            "authload sends `secured` and `rip=127.0.0.1` with every AUTH, so default mode's "
            "policy (require_secured, allowed_networks) accepts it unchanged",
            "every authbridge runs with --failure-delay 0; Dovecot with auth_failure_delay = 0, "
            "penalty off, auth_cache_size = 0, auth_verbose = no",
            "CRAM-MD5 needs the plaintext: no CRAM-MD5 run on {SSHA512} users",
            "latency is authload's: from writing AUTH to reading OK/FAIL (churn: the "
            "handshake is not included)",
        ]
        if not args.no_instructions:
            print("instruction counts (valgrind; about a minute each):", flush=True)
            levels = ("info",) if args.quick else ("info", "warning")
            measured.instructions = instruction_counts(levels)
        report = render(measured, meta)
        print()
        print(report)
        if args.markdown:
            args.markdown.write_text(report)
        if args.json:
            payload = {
                "meta": meta,
                "results": {
                    server: {w: [dataclasses.asdict(r) for r in rs] for w, rs in per.items()}
                    for server, per in measured.results.items()
                },
                "instructions": measured.instructions,
            }
            args.json.write_text(json.dumps(payload, indent=2))
        print(f"total {time.monotonic() - started:.0f} s")
    finally:
        if made_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
