#!/usr/bin/env python
"""The long crash loop: SIGKILL a real broker under acknowledged load N times, then check.

    python scripts/crash_loop.py [--iterations N] [--seed S] [--producers P] [--partitions K]
                                 [--flush-policy group|always|never] [--work-dir DIR] [--keep]
                                 [--strict-duplicates]

The same run as ``tests/reliability/test_crash_loop.py`` (its engine is
``tests/reliability/crashloop.py``), with as many kills as you like: producers with
acks=all and a polling consumer against ``logd serve``, the broker SIGKILLed at random
moments (sometimes again during its recovery) and restarted, then a Jepsen-style check
of the whole history (every acknowledged send at its offset, one value per offset, no
gaps, contiguous polls, no garbage, per-producer order). Prints the seed first (replay a
failure with ``--seed``) and exits 1 when the history is invalid.

``--strict-duplicates`` also fails on records written twice by a producer retry (expected
to pass once the broker deduplicates idempotent producers).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reliability.crashloop import CrashLoopConfig, run_crash_loop  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=50, help="broker kills (default 50)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--flush-policy", choices=["group", "always", "never"], default="group")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (data, broker log)")
    parser.add_argument("--strict-duplicates", action="store_true")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="logd-crash-loop-"))
    print(f"crash loop: seed {seed}, {args.iterations} kills, work dir {work_dir}", flush=True)
    config = CrashLoopConfig(work_dir, seed, iterations=args.iterations, producers=args.producers,
                             partitions=args.partitions, flush_policy=args.flush_policy,
                             tolerate_duplicates=not args.strict_duplicates,
                             log=lambda line: print(line, flush=True))
    report = run_crash_loop(config)
    print(report.summary())
    valid = report.result.valid
    print(("VALID" if valid else "INVALID") + f" (seed {seed})")
    if valid and not args.keep and args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
