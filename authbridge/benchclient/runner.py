"""Spread a plan over worker processes, start them together, merge what they measured."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

from authbridge.benchclient.engine import BenchError, Plan, Worker, WorkerResult
from authbridge.benchclient.workload import Attempt

#: Time the parent gives every worker between "all ready" and the common start.
START_MARGIN = 0.1


@dataclass
class Summary:
    """One workload's numbers, as printed in the table and the JSON output."""

    label: str
    mode: str
    mechanism: str
    connections: int
    depth: int
    processes: int
    seconds: float
    completed: int
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    ok: int
    fail: int
    mismatched: int
    errors: int
    error_messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: array[float] | list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when it is empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _worker_main(
    pipe: multiprocessing.connection.Connection,
    plan: Plan,
    attempts: list[Attempt],
    index: int,
    connections: int,
) -> None:
    try:
        worker = Worker(plan, attempts, index, connections)
        worker.connect_all()
        pipe.send(("ready", None))
        start_at = pipe.recv()
        result = worker.run(start_at)
        pipe.send(("done", result))
    except (OSError, BenchError) as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    except Exception:  # a bug in the client: show it rather than hang the parent
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def run_plan(
    plan: Plan, attempts: list[Attempt], processes: int | None = None, label: str = ""
) -> Summary:
    """Run ``plan`` on ``processes`` worker processes and return the merged summary.

    Raises BenchError when a worker cannot connect or the server misbehaves.
    """
    count = processes or min(plan.connections, os.cpu_count() or 1)
    count = max(1, min(count, plan.connections))
    per_worker = _split(plan.connections, count)
    request_shares = _split(plan.requests, count) if plan.requests is not None else None
    context = multiprocessing.get_context("fork")
    procs: list[tuple[Any, multiprocessing.connection.Connection]] = []
    for index in range(count):
        share = plan
        if request_shares is not None:
            share = Plan(**{**plan.__dict__, "requests": request_shares[index]})
        parent_end, child_end = context.Pipe()
        proc = context.Process(
            target=_worker_main,
            args=(child_end, share, attempts, index, per_worker[index]),
            daemon=True,
        )
        proc.start()
        child_end.close()
        procs.append((proc, parent_end))
    results: list[WorkerResult] = []
    try:
        for _, pipe in procs:
            kind, payload = pipe.recv()
            if kind != "ready":
                raise BenchError(str(payload))
        start_at = time.monotonic() + START_MARGIN
        for _, pipe in procs:
            pipe.send(start_at)
        for _, pipe in procs:
            kind, payload = pipe.recv()
            if kind != "done":
                raise BenchError(str(payload))
            results.append(payload)
    finally:
        for proc, pipe in procs:
            pipe.close()
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    return summarize(plan, results, count, label)


def summarize(plan: Plan, results: list[WorkerResult], processes: int, label: str) -> Summary:
    latencies: list[float] = []
    for result in results:
        latencies.extend(result.latencies)
    latencies.sort()
    measured = sum(r.measured for r in results)
    if plan.requests is None:
        seconds = plan.duration
    else:
        # every completion counts: from the common start to the last answer
        seconds = max((r.window_end for r in results), default=0.0) - min(
            (r.window_start for r in results), default=0.0
        )
        seconds = max(seconds, 1e-9)
    return Summary(
        label=label,
        mode=plan.mode,
        mechanism=plan.mechanism,
        connections=plan.connections,
        depth=plan.depth if plan.mode == "pipeline" else 1,
        processes=processes,
        seconds=round(seconds, 3),
        completed=measured,
        rate=measured / seconds if seconds else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        max_ms=(latencies[-1] if latencies else 0.0) * 1e3,
        ok=sum(r.ok for r in results),
        fail=sum(r.fail for r in results),
        mismatched=sum(r.mismatched for r in results),
        errors=sum(r.errors for r in results),
        error_messages=[m for r in results for m in r.error_messages][:5],
    )


HEADER = (
    f"{'workload':<22} {'mode':<8} {'mech':<8} {'conn':>4}x{'dep':<3} {'proc':>4} "
    f"{'auth/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'ok':>8} {'fail':>7} {'mism':>5} {'err':>4}"
)


def format_row(s: Summary) -> str:
    return (
        f"{s.label[:22]:<22} {s.mode:<8} {s.mechanism:<8} {s.connections:>4}x{s.depth:<3} "
        f"{s.processes:>4} {s.rate:>10.0f} {s.p50_ms:>8.2f} {s.p99_ms:>8.2f} {s.ok:>8} "
        f"{s.fail:>7} {s.mismatched:>5} {s.errors:>4}"
    )
