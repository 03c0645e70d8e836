#!/usr/bin/env python
"""How late this host wakes a sleeping thread, measured beside a latency run.

Every record's end-to-end trip through logd crosses about fifteen thread wake-ups in
sequence (gRPC's I/O threads, the SDK's sender, fetcher and poll threads, the broker's
server and handler threads, the fsync's return), so one late wake-up among them shows
in the record's latency. On this 2-core VM a thread sleeping 1 ms wakes late by 0.1 ms
at p50 but by 2-4 ms at p99.9 even when the machine is idle: the host's part of the
tail, which moves from one minute to the next. ``latency.py`` and ``compare.py`` report
it with their figures, so that runs can be compared knowing the host's state.

``WakeupProbe`` runs this file in a separate process (its own GIL: it neither slows nor
is slowed by the measured client's threads); it sleeps 1 ms at a time until its stdin
closes, then prints one JSON line of the lateness figures. What it measures during a run
includes the run's own load (the cores are shared), as every thread of the run sees it.

    python scripts/host_probe.py [--seconds S]   # a probe on its own, for S seconds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Callable

SLEEP_S = 0.001


def percentiles_ms(samples_s: list[float]) -> dict[str, float]:
    """p50, p99, p99.9 and max of samples in seconds, in ms (NaN when there are none)."""
    if not samples_s:
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan"), "max": float("nan")}
    ordered = sorted(samples_s)
    n = len(ordered)

    def at(fraction: float) -> float:
        return round(ordered[min(n - 1, int(fraction * n))] * 1000.0, 3)

    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": round(ordered[-1] * 1000.0, 3)}


def lateness_summary(late_s: list[float]) -> dict[str, float]:
    """The number of lateness samples and their percentiles in ms."""
    return {"samples": len(late_s), **percentiles_ms(late_s)} if late_s else {"samples": 0}


def probe(stop: threading.Event, on_first_sample: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Sleep ``SLEEP_S`` at a time until ``stop`` is set (at least once); the lateness figures."""
    perf = time.perf_counter
    late: list[float] = []
    while True:
        started = perf()
        time.sleep(SLEEP_S)
        late.append(perf() - started - SLEEP_S)
        if len(late) == 1:
            on_first_sample()
        if stop.is_set():
            return lateness_summary(late)


class WakeupProbe:
    """A probe process for the ``with`` block; ``result`` holds its figures afterwards
    (None if it failed: the measurement it accompanies does not depend on it)."""

    def __init__(self) -> None:
        self.result: dict[str, float] | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "WakeupProbe":
        self._process = subprocess.Popen([sys.executable, __file__, "--until-stdin-closes"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self._process.stdout.readline()  # "sampling": the probe runs from here on
        return self

    def __exit__(self, *exc_info: object) -> None:
        process = self._process
        assert process is not None
        try:
            output, _ = process.communicate(input="", timeout=10)
            self.result = json.loads(output.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            process.kill()
            process.wait()

    def describe(self) -> str:
        r = self.result
        if not r or not r.get("samples"):
            return "host wake-ups: not measured"
        return (f"host wake-ups (1 ms sleeps, separate process): late by p50 {r['p50']} ms, p99 {r['p99']} ms, "
                f"p99.9 {r['p999']} ms, max {r['max']} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--until-stdin-closes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    stop = threading.Event()
    if args.until_stdin_closes:
        def wait_for_eof() -> None:
            sys.stdin.read()
            stop.set()
        threading.Thread(target=wait_for_eof, daemon=True).start()
    else:
        threading.Timer(args.seconds, stop.set).start()
    figures = probe(stop, on_first_sample=(lambda: print("sampling", flush=True)) if args.until_stdin_closes
                    else (lambda: None))
    if args.until_stdin_closes:
        print(json.dumps(figures))
    else:
        print(f"1 ms sleeps over {args.seconds:.0f} s: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
