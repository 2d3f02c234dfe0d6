#!/usr/bin/env python3
"""How steady is this machine's CPU? A yardstick for reading latency percentiles.

    python benchmarks/cpu_jitter.py [SECONDS]

Runs a fixed unit of pure-Python arithmetic (about 0.1 ms) over and over and prints
percentiles of the CPU time and wall time each unit took. On a quiet, dedicated core
they stay close to the median; on a shared VM, single units can take tens of times
longer, and every server's latency tail (Dovecot's too) inherits that. Run it beside
``flood.py`` to see what the machine does to a CPU-bound process under that load.
"""

from __future__ import annotations

import sys
import time


def unit() -> int:
    total = 0
    for i in range(2000):
        total += i * i
    return total


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    cpu: list[float] = []
    wall: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c0, w0 = time.thread_time(), time.perf_counter()
        unit()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    cpu.sort()
    wall.sort()
    for name, values in (("cpu", cpu), ("wall", wall)):
        figures = "  ".join(
            f"{label} {percentile(values, share) * 1e6:7.0f} us"
            for label, share in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))
        )
        print(f"{name:>4}: {figures}   ({len(values)} units)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
