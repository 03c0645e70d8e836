#!/usr/bin/env python
"""Where the time goes in bench.py's produce and consume phases: CPU per process, profiles.

    python scripts/profile_phases.py [--records N] [--partitions P] [--pyspy DIR] [--phases produce,consume]

Starts a broker as ``scripts/bench.py`` does, then runs each phase (bench.py's own
``produce`` and ``consume``, without progress output) and prints, per phase: wall time, records/s, CPU seconds of this client process
(and the share of the wall time its main thread, the one calling send/poll, was on a CPU)
and of the broker process (user + system, from /proc), so it is plain which side is the
bottleneck on a 2-core machine. With ``--pyspy DIR`` a ``py-spy record --format raw`` runs
on the broker and on this process during each phase; summarise the files with
``scripts/profile_top.py``.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import consume, produce  # scripts/ is on sys.path when run as a script
from bench_common import create_topic, local_broker, make_values, user_keys

_TICKS = os.sysconf("SC_CLK_TCK")
#: Extra py-spy flags (e.g. PYSPY_FLAGS="--idle --threads" to see where threads wait).
SPY_EXTRA = os.environ.get("PYSPY_FLAGS", "").split()


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class Spy:
    """py-spy on the broker and on this process while a phase runs (or nothing)."""

    def __init__(self, directory: str | None, phase: str, broker_pid: int) -> None:
        self.processes: list[subprocess.Popen] = []
        if directory is None:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        for who, pid in (("broker", broker_pid), ("client", os.getpid())):
            out = Path(directory) / f"{phase}-{who}.txt"
            self.processes.append(subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--format", "raw", "-r", "250", "--nonblocking", *SPY_EXTRA,
                 "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)  # let py-spy attach before the phase starts (not synchronisation of our code)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--pyspy", default=None, help="directory for py-spy raw profiles")
    parser.add_argument("--phases", default="produce,consume")
    args = parser.parse_args()
    with local_broker("logd-profile-") as broker:
        address, broker_pid = broker.address, broker.process.pid
        topic = create_topic(address, "profile", args.partitions)
        keys = user_keys()
        values = make_values(min(args.records, 65_536), 100)
        gc.collect()
        gc.freeze()
        phases = args.phases.split(",")
        if "produce" not in phases:
            produce(address, topic, args.records, values, keys, False)  # data for the consume phase
        for phase in phases:
            spy = Spy(args.pyspy, phase, broker_pid)
            client0, broker0, wall0 = time.process_time(), cpu_s(broker_pid), time.perf_counter()
            main0 = time.thread_time()
            if phase == "produce":
                produce(address, topic, args.records, values, keys, False)
            else:
                consume(address, topic, args.partitions, args.records, False)
            wall = time.perf_counter() - wall0
            client, broker_cpu = time.process_time() - client0, cpu_s(broker_pid) - broker0
            main_cpu = time.thread_time() - main0
            spy.stop()
            print(f"{phase:8} {args.records / wall:>12,.0f} rec/s  wall {wall:6.2f} s  "
                  f"client CPU {client:6.2f} s ({100 * client / wall:3.0f}%; its main thread "
                  f"{100 * main_cpu / wall:3.0f}%)  "
                  f"broker CPU {broker_cpu:6.2f} s ({100 * broker_cpu / wall:3.0f}%)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
