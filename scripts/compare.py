#!/usr/bin/env python3
"""logd side by side with Redis Streams, RabbitMQ Streams and NATS JetStream, from Python.

Every system gets the same records (N keyed ~108-byte JSON orders from 10,000 users,
generated once from a fixed seed) and the same three measurements: produce rec/s with
the best batching its Python client offers (timed until every ack/confirm), consume
rec/s from the beginning, and end-to-end latency p50/p99 at a fixed 5,000 rec/s. Each
server is started by this script on 127.0.0.1, on a free port, in a temp dir, and
stopped by PID; a system whose server or client is missing is skipped with the reason.
See ``scripts/peers/`` (one module per system) for what each measurement does exactly.

    python -m pip install -e '.[bench]'
    apt-get install -y redis-server rabbitmq-server nats-server
    python scripts/compare.py [--records N] [--systems logd,redis-always,...]
                              [--latency-seconds S] [--chart compare.png] [--json]

Output: progress on stderr; on stdout the table, the fairness notes and, with ``--json``,
one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the peers package beside this file

from peers import SYSTEMS, make_target  # noqa: E402
from peers.base import Settings, measure  # noqa: E402
from peers.harness import say  # noqa: E402
from peers.report import fairness_notes, format_table, to_json_object, write_chart  # noqa: E402
from peers.workload import DEFAULT_RECORDS, DEFAULT_SEED, DEFAULT_USERS, generate  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="records per system (default 1,000,000)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, from: {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the latency phase (default 10)")
    parser.add_argument("--latency-rate", type=float, default=5000.0, help="records/s in the latency phase")
    parser.add_argument("--linger-ms", type=float, default=1.0, help="logd producer linger in the latency phase")
    parser.add_argument("--chart", type=Path, default=Path("compare.png"), help="PNG chart path (default compare.png)")
    parser.add_argument("--no-chart", action="store_true", help="write no chart")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--work-dir", type=Path, help="parent of the servers' temp dirs (default: system temp)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--start-timeout", type=float, default=90.0, help="seconds for a server to become ready")
    parser.add_argument("--quiet", action="store_true", help="no per-phase progress lines")
    args = parser.parse_args(argv)
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in args.systems if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.records < 1 or args.latency_seconds <= 0 or args.latency_rate <= 0:
        parser.error("--records, --latency-seconds and --latency-rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(latency_rate_per_s=args.latency_rate, latency_seconds=args.latency_seconds,
                        linger_ms=args.linger_ms, start_timeout_s=args.start_timeout,
                        show_progress=not args.quiet)
    say(f"generating {args.records:,} records (seed {args.seed})")
    workload = generate(args.records, DEFAULT_USERS, args.seed)
    say(f"  {workload.count:,} records, values {workload.value_bytes_mean:.1f} bytes on average, "
        f"{len(set(workload.keys)):,} distinct keys")
    # The records are held in memory only so that making them is not timed; a real client
    # does not hold its whole input. Out of the garbage collector's way (for every system
    # alike): else each full collection walks its two lists of a million items, and every
    # client whose objects live a while (futures, confirmations) sets off full collections.
    gc.freeze()
    workdir = Path(tempfile.mkdtemp(prefix="logd-compare-", dir=args.work_dir))
    started = time.monotonic()
    measurements = []
    try:
        for name in args.systems:
            measurements.append(measure(make_target(name), workload, settings, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"done in {time.monotonic() - started:.0f} s")

    print()
    print(f"{workload.count:,} records of ~{workload.value_bytes_mean:.0f} bytes, keys from {workload.users:,} users; "
          f"{platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(format_table(measurements))
    print()
    print(fairness_notes(measurements, workload.count, settings.latency_rate_per_s, settings.linger_ms))
    chart = None
    if not args.no_chart and any(m.status == "ok" for m in measurements):
        try:
            write_chart(measurements, args.chart, f"{workload.count:,} records, ~108-byte values, Python clients")
            chart = str(args.chart)
            print(f"\nchart: {chart}")
        except ImportError as exc:
            print(f"\nno chart: matplotlib is missing ({exc}); pip install matplotlib (or '.[bench]')")
    if args.json:
        print(json.dumps(to_json_object(measurements, records=workload.count,
                                        value_bytes_mean=workload.value_bytes_mean,
                                        users=workload.users, seed=workload.seed,
                                        latency_rate_per_s=settings.latency_rate_per_s,
                                        latency_seconds=settings.latency_seconds, linger_ms=settings.linger_ms,
                                        chart=chart)))
    return 0 if all(m.status != "failed" for m in measurements) else 1


if __name__ == "__main__":
    sys.exit(main())
