#!/usr/bin/env python
"""Summarise a py-spy ``--format raw`` profile: top functions by self and by total samples.

    py-spy record --subprocesses --format raw -r 200 -o prof.txt -- python scripts/bench.py ...
    python scripts/profile_top.py prof.txt [--top 25] [--process SUBSTRING]

Each raw line is ``frame;frame;...;leaf COUNT``; with ``--subprocesses`` the leading
frames name the processes (``process PID:"argv"``). Samples are grouped by the innermost
process frame (the broker's samples apart from the client's), then per function
(``name (file)``, line numbers dropped): *self* counts samples where it is the leaf,
*total* counts samples where it is anywhere on the stack (once per sample). Percentages
are of that process's samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def function_of(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (file.py)``: one entry per function."""
    frame = _FRAME_LINE.sub(")", frame)
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--process", default=None, help="only processes whose frame contains this")
    args = parser.parse_args()

    totals: Counter[str] = Counter()
    self_counts: dict[str, Counter[str]] = defaultdict(Counter)
    total_counts: dict[str, Counter[str]] = defaultdict(Counter)
    with open(args.path) as handle:
        for line in handle:
            match = _LINE.match(line.rstrip("\n"))
            if not match:
                continue
            frames, count = match.group(1).split(";"), int(match.group(2))
            process = "main"
            stack = []
            for frame in frames:
                if frame.startswith("process "):
                    process = frame[:120]
                    stack = []
                else:
                    stack.append(frame)
            if args.process and args.process not in process:
                continue
            totals[process] += count
            if stack:
                self_counts[process][function_of(stack[-1])] += count
            for name in {function_of(frame) for frame in stack}:
                total_counts[process][name] += count
    for process, samples in totals.most_common():
        print(f"\n=== {process}  ({samples} samples)")
        print("  self%  total%  function")
        selfs, alls = self_counts[process], total_counts[process]
        for name, count in selfs.most_common(args.top):
            print(f"  {100 * count / samples:5.1f}  {100 * alls[name] / samples:6.1f}  {name}")
        print("  -- by total --")
        for name, count in alls.most_common(args.top):
            print(f"  {100 * selfs[name] / samples:5.1f}  {100 * count / samples:6.1f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
