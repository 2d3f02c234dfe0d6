#!/usr/bin/env python3
"""Run ``authbridge serve`` under cProfile with a CPU-time clock; dump stats at exit.

py-spy samples wall-clock time, so a send() during which the kernel runs the client
instead of the server looks expensive; this profile counts CPU time only.

    python benchmarks/profile_serve.py --out /tmp/serve.pstats -- \
        --dovecot-compat --failure-delay 0 --passwd-file users --socket /tmp/s
    # ... run the load, then SIGTERM the process ...
    python -m pstats /tmp/serve.pstats    # then: sort tottime, stats 30
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="pstats file to write")
    parser.add_argument("serve_args", nargs=argparse.REMAINDER, help="-- then serve options")
    args = parser.parse_args()
    serve_args = [a for a in args.serve_args if a != "--"]
    from authbridge.cli import main as cli_main

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        return cli_main(["serve", *serve_args])
    finally:
        profiler.disable()
        profiler.dump_stats(str(args.out))


if __name__ == "__main__":
    sys.exit(main())
