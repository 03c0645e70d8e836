#!/usr/bin/env python
"""Does the log cleaner yield to traffic? Produce/fetch latency, idle vs. while compacting.

Steps:

1. Build a data directory holding topic ``bench`` (one partition, ``cleanup.policy=delete``,
   ``retention.ms=-1``): ``--gigabytes`` of uncompressed records with random
   ``--value-bytes`` values over ``--keys`` keys, written straight through the storage
   engine (fast), in segments of ``--segment-mb``.
2. Start a broker on it in a subprocess (``logd.server.app.serve``; retention checks every
   500 ms), so that the measuring client does not share the broker's GIL.
3. Idle phase (``--idle-s``): a probe loop, ``--rate`` rounds per second, each round one
   Produce of one small record to bench-0, one Fetch of the tail of bench-0 and one Fetch
   of 64 KiB at a random offset in the older part of bench-0, over raw gRPC stubs.
4. ``alter_topic_config(cleanup.policy=compact, min.cleanable.dirty.ratio=0.01)``, which
   the broker applies without a restart; the same probe runs while the cleaner works:
   between its "cleaning" and "cleaned in" log lines for bench-0 (at most
   ``--max-compact-s``).
5. Idle again (``--idle-s``): the idle figures combine both idle phases, so that drift in
   the machine's load (a shared disk's fsync latency) counts on both sides.
6. Print p50/p99/max per operation and phase, p99 compacting / p99 idle, the cleaner's
   time and the partition size before and after.

Usage: ``python scripts/bench_cleaner.py`` (small, ~100 MB) or ``--gigabytes 1`` (the
issue's figure; several minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from logd.broker import Broker
from logd_sdk import Admin, codec
from logd_sdk.protocol import log_pb2, log_pb2_grpc

TOPIC = "bench"
RECORDS_PER_BATCH = 200


def build(data_dir: Path, gigabytes: float, value_bytes: int, keys: int, segment_mb: int) -> tuple[int, int]:
    """Write the partition through the storage engine; returns (records, bytes)."""
    broker = Broker(data_dir, flush_policy="never").open()
    try:
        broker.create_topic(TOPIC, 1, {"cleanup.policy": "delete", "retention.ms": "-1",
                                       "segment.bytes": str(segment_mb << 20)})
        log = broker.topics.require(TOPIC).partitions[0].log
        rng = random.Random(42)
        target = int(gigabytes * (1 << 30))
        now_ms = int(time.time() * 1000) - 60_000
        started = time.monotonic()
        while log.size_bytes < target:
            records = [(now_ms, b"key-%d" % rng.randrange(keys), os.urandom(value_bytes), None)
                       for _ in range(RECORDS_PER_BATCH)]
            log.append_unflushed(codec.encode_batch(records, codec=codec.CODEC_NONE))
        log.roll()  # everything built is cleanable; the probe writes to a fresh active segment
        print(f"built {log.size_bytes / 2**20:.0f} MiB, {log.log_end_offset} records in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        return log.log_end_offset, log.size_bytes
    finally:
        broker.close()


class BrokerProcess:
    """``logd.server.app.serve`` in a subprocess; its log lines are watched for the cleaner's."""

    def __init__(self, data_dir: Path, flush_policy: str, duty_cycle: float | None, slice_ms: float | None) -> None:
        # The cleaner's pacing is not a broker flag: override its defaults for tuning runs.
        overrides = {k: v for k, v in (("duty_cycle", duty_cycle), ("slice_ms", slice_ms)) if v is not None}
        code = ("import sys, functools\nfrom pathlib import Path\nfrom logd.storage import cleaner\n"
                f"cleaner.CleanerConfig = functools.partial(cleaner.CleanerConfig, **{overrides!r})\n"
                "from logd.server.app import serve\n"
                f"sys.exit(serve(Path(sys.argv[1]), '127.0.0.1:0', flush_policy={flush_policy!r}, "
                "retention_check_interval_ms=500, ready_callback=lambda a: print('READY', a, flush=True)))\n")
        self.process = subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.cleaning_started = threading.Event()
        self.cleaning_done = threading.Event()
        self.cleaned_line = ""
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"the broker did not start: {line!r} {self.process.stderr.read()}")
        self.address = line.split()[1]
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        for line in self.process.stderr:
            if f"{TOPIC}-0" not in line:
                continue
            if "cleaning, dirty offsets" in line:
                self.cleaning_started.set()
            elif re.search(r"cleaned in \d+ passes", line):
                self.cleaned_line = line.strip()
                self.cleaning_done.set()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Probe:
    """Rounds of produce / fetch-tail / fetch-old at a fixed rate; latencies in ms per op."""

    def __init__(self, address: str, rate: float, old_end: int) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = log_pb2_grpc.LogServiceStub(self.channel)
        self.interval_s = 1 / rate
        self.old_end = old_end
        self.rng = random.Random(7)
        self.tail = 0

    def _produce(self) -> None:
        batch = codec.encode_batch([(int(time.time() * 1000), b"probe", b"x" * 100, None)], codec=codec.CODEC_NONE)
        request = log_pb2.ProduceRequest(partitions=[
            log_pb2.ProduceRequest.PartitionData(topic=TOPIC, partition=0, batches=batch)])
        (result,) = self.stub.Produce(request, timeout=30).results
        assert not result.error.code, result.error
        self.tail = result.base_offset

    def _fetch(self, offset: int, max_bytes: int) -> None:
        request = log_pb2.FetchRequest(partitions=[log_pb2.FetchRequest.PartitionRequest(
            topic=TOPIC, partition=0, offset=offset, max_bytes=max_bytes)], max_wait_ms=0, max_bytes=max_bytes)
        self.stub.Fetch(request, timeout=30)

    def run(self, until) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {"produce": [], "fetch_tail": [], "fetch_old": []}
        operations = [("produce", self._produce), ("fetch_tail", lambda: self._fetch(self.tail, 16384)),
                      ("fetch_old", lambda: self._fetch(self.rng.randrange(self.old_end // 2), 65536))]
        next_round = time.monotonic()
        while not until():
            for name, operation in operations:
                started = time.perf_counter()
                operation()
                samples[name].append((time.perf_counter() - started) * 1000)
            next_round += self.interval_s
            pause = next_round - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the load, not synchronisation
            else:
                next_round = time.monotonic()
        return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=0.1)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--segment-mb", type=int, default=64)
    parser.add_argument("--rate", type=float, default=50.0, help="probe rounds per second")
    parser.add_argument("--idle-s", type=float, default=15.0)
    parser.add_argument("--max-compact-s", type=float, default=900.0)
    parser.add_argument("--flush-policy", default="group", choices=("group", "always", "never"),
                        help="the broker's; 'never' leaves fsync noise out of the produce figures")
    parser.add_argument("--duty-cycle", type=float, default=None, help="override the cleaner's default")
    parser.add_argument("--slice-ms", type=float, default=None, help="override the cleaner's default")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cleaner-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        records, size_before = build(data_dir, args.gigabytes, args.value_bytes, args.keys, args.segment_mb)
        broker = BrokerProcess(data_dir, args.flush_policy, args.duty_cycle, args.slice_ms)
        try:
            probe = Probe(broker.address, args.rate, records)
            deadline = time.monotonic() + args.idle_s
            idle = probe.run(lambda: time.monotonic() >= deadline)
            with Admin(broker.address) as admin:
                admin.alter_topic_config(TOPIC, {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})
                if not broker.cleaning_started.wait(30):
                    raise RuntimeError("the cleaner did not start within 30 s")
                started = time.monotonic()
                deadline = started + args.max_compact_s
                busy = probe.run(lambda: broker.cleaning_done.is_set() or time.monotonic() >= deadline)
                compact_s = time.monotonic() - started
                size_after = admin.describe_topic(TOPIC).partitions[0].size_bytes
            deadline = time.monotonic() + args.idle_s
            idle_after = probe.run(lambda: time.monotonic() >= deadline)
            for name, samples in idle_after.items():
                idle[name] += samples
        finally:
            broker.stop()

    report = {"gigabytes": args.gigabytes, "flush_policy": args.flush_policy, "duty_cycle": args.duty_cycle,
              "slice_ms": args.slice_ms, "records": records, "size_before_bytes": size_before,
              "size_after_bytes": size_after, "compacting_s": round(compact_s, 1),
              "finished": bool(broker.cleaned_line), "cleaner": broker.cleaned_line}
    print(f"\n{'operation':12} {'phase':11} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name in idle:
        for phase, samples in (("idle", idle[name]), ("compacting", busy[name])):
            print(f"{name:12} {phase:11} {len(samples):6d} {percentile(samples, 0.5):8.2f} "
                  f"{percentile(samples, 0.99):8.2f} {max(samples, default=float('nan')):8.2f}")
        ratio = percentile(busy[name], 0.99) / percentile(idle[name], 0.99)
        report[f"{name}_p99_idle_ms"] = round(percentile(idle[name], 0.99), 2)
        report[f"{name}_p99_compacting_ms"] = round(percentile(busy[name], 0.99), 2)
        report[f"{name}_p99_ratio"] = round(ratio, 2)
        print(f"{name:12} p99 compacting / idle = {ratio:.2f}")
    print(f"\ncompaction: {compact_s:.1f} s, {size_before / 2**20:.0f} MiB -> {size_after / 2**20:.0f} MiB; "
          f"{broker.cleaned_line or 'not finished within --max-compact-s'}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
