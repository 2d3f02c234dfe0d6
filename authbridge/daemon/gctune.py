"""Garbage-collector settings for the serving process.

Each authentication allocates a few dozen short-lived container objects. With CPython's
default thresholds (700, 10, 10) that means a young collection every few requests and,
more harmful, full collections that walk every object of the process: the imported
modules and the loaded stores (tens of thousands of objects that never die), which
showed up as 20-80 ms pauses in the legitimate users' latency while an attacker flooded
the server (``benchmarks/flood.py``). Freezing what exists after start-up moves it out
of the collector's sight for good, and a larger young generation lets most request
garbage die by reference counting before any collection looks at it.
"""

from __future__ import annotations

import gc

#: Allocations (minus deallocations) of container objects between young collections.
GEN0_THRESHOLD = 10_000
#: Young collections per middle one, and middle ones per full one (CPython's defaults).
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 10


def tune_after_startup() -> None:
    """Freeze everything allocated so far and make young collections rarer.

    Call once, after the configuration and stores are loaded and just before the event
    loop starts. A reload allocates new stores that are not frozen; they are collected
    normally, which is correct, only a little slower.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
