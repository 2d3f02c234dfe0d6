#!/usr/bin/env python3
"""Summarise a py-spy ``--format raw`` profile: top self and inclusive functions.

py-spy record -p PID -d 10 -f raw -o prof.raw   # while a benchmark runs
python benchmarks/stack_summary.py prof.raw [--top 25] [--filter authbridge]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``file.py:func`` (line numbers merged)."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    parts = path.split("/")
    tail = "/".join(parts[-2:]) if "authbridge" in path else parts[-1]
    return f"{tail}:{match.group('func')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--filter", default="", help="only inclusive rows containing this")
    args = parser.parse_args(argv)
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";")]
        # drop the thread/process root frames py-spy adds
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} samples")
    print("\nself time:")
    for name, count in self_time.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\ninclusive time:")
    shown = 0
    for name, count in inclusive.most_common():
        if args.filter in name:
            print(f"  {100 * count / total:5.1f}%  {name}")
            shown += 1
            if shown >= args.top:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
