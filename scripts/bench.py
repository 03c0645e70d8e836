#!/usr/bin/env python
"""Produce then consume N records through the logd SDK and report throughput and latency.

    python scripts/bench.py [--records N] [--partitions P] [--value-size B] [--json] [--bootstrap HOST:PORT]

Starts its own broker (``python -m logd.cli serve`` on a free port, temp data dir) unless
``--bootstrap`` is given. Workload: JSON-like order values of ``--value-size`` bytes, keys
from 10,000 users (so mmh3 partitioning). Reports produce and consume records/s and MB/s
(key + value bytes), produce acknowledgement latency p50/p99 (sampled: every 64th record,
send() to its future resolving) and the broker's peak RSS (VmHWM, own broker only). With
``--json`` the last line is one JSON object with those figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logd_sdk import Admin, Consumer, Producer, TopicPartition

USERS = 10_000
SAMPLE_EVERY = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_broker(data_dir: Path) -> tuple[subprocess.Popen, str]:
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen([sys.executable, "-m", "logd.cli", "serve", "--data-dir", str(data_dir),
                                "--listen", address, "--log-level", "WARNING"], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"broker exited with {process.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == health_pb2.HealthCheckResponse.SERVING:
                    return process, address
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    process.kill()
    raise SystemExit("broker did not become ready in 30 s")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def make_values(count: int, size: int) -> list[bytes]:
    rng = random.Random(7)
    values = []
    for i in range(count):
        text = json.dumps({"order_id": 10_000_000 + i, "user": f"user-{rng.randrange(USERS):05d}",
                           "sku": f"SKU-{rng.randrange(10**6):06d}", "qty": rng.randrange(1, 9),
                           "price": round(rng.uniform(1, 500), 2)}, separators=(",", ":"))
        values.append(text.encode().ljust(size, b" ")[:size])
    return values


class Progress:
    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.started = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < 0.25):
            return
        self.last = now
        width = 30
        filled = int(width * done / max(1, self.total))
        rate = done / max(1e-9, now - self.started)
        sys.stderr.write(f"\r{self.label:8} [{'#' * filled}{'.' * (width - filled)}] {done:>10,}/{self.total:,} "
                         f"{rate:>12,.0f} rec/s")
        sys.stderr.flush()

    def finish(self, done: int) -> None:
        self.update(done, force=True)
        if self.enabled:
            sys.stderr.write("\n")


def produce(address: str, topic: str, records: int, values: list[bytes], keys: list[bytes],
            show: bool) -> tuple[float, int, list[float]]:
    latencies: list[float] = []
    progress = Progress("produce", records, show)
    payload = 0
    perf = time.perf_counter
    with Producer(address, linger_ms=5, batch_size=262144, compression="zstd", acks="all") as producer:
        send = producer.send
        started = perf()
        for i in range(records):
            key = keys[i % USERS]
            value = values[i % len(values)]
            payload += len(key) + len(value)
            if i % SAMPLE_EVERY:
                send(topic, value, key)
            else:
                sent_at = perf()
                send(topic, value, key).add_done_callback(
                    lambda f, t=sent_at: latencies.append(perf() - t))
                progress.update(i)
        producer.flush()
        elapsed = perf() - started
    progress.finish(records)
    return elapsed, payload, latencies


def consume(address: str, topic: str, partitions: int, records: int, show: bool) -> tuple[float, int]:
    progress = Progress("consume", records, show)
    count = payload = 0
    with Consumer(address, auto_offset_reset="earliest", max_poll_records=10_000) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        started = time.perf_counter()
        while count < records:
            batch = consumer.poll(timeout_ms=10_000)
            if not batch:
                raise SystemExit(f"consumer stalled at {count} of {records} records")
            count += len(batch)
            for record in batch:
                payload += len(record.value) + len(record.key)
            progress.update(count)
        elapsed = time.perf_counter() - started
    progress.finish(count)
    return elapsed, payload


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()

    data_dir = None
    broker = None
    address = args.bootstrap
    if address is None:
        data_dir = Path(tempfile.mkdtemp(prefix="logd-bench-"))
        broker, address = start_broker(data_dir)
    try:
        topic = f"bench-{int(time.time() * 1000)}"
        with Admin(address) as admin:
            admin.create_topic(topic, partitions=args.partitions)
        keys = [b"user-%05d" % i for i in range(USERS)]
        values = make_values(min(args.records, 65_536), args.value_size)
        show = sys.stderr.isatty() or not args.json
        gc.collect()
        gc.freeze()  # keep the value pool out of every GC pass: measure the SDK, not the fixture
        produce_s, produce_bytes, latencies = produce(address, topic, args.records, values, keys, show)
        gc.collect()
        gc.freeze()  # the benchmark's own objects (value pool, samples) are not the SDK's GC work
        consume_s, consume_bytes = consume(address, topic, args.partitions, args.records, show)
        figures = {
            "records": args.records, "partitions": args.partitions, "value_size": args.value_size,
            "produce_rps": round(args.records / produce_s),
            "consume_rps": round(args.records / consume_s),
            "produce_mb_s": round(produce_bytes / produce_s / 1e6, 1),
            "consume_mb_s": round(consume_bytes / consume_s / 1e6, 1),
            "ack_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
            "ack_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "broker_rss_mb": round(peak_rss_mb(broker.pid), 1) if broker else None,
        }
        print(f"produce: {figures['produce_rps']:,} rec/s, {figures['produce_mb_s']} MB/s "
              f"(ack p50 {figures['ack_p50_ms']} ms, p99 {figures['ack_p99_ms']} ms)")
        print(f"consume: {figures['consume_rps']:,} rec/s, {figures['consume_mb_s']} MB/s")
        print(f"broker peak RSS: {figures['broker_rss_mb']} MB")
        if args.json:
            print(json.dumps(figures))
        return 0
    finally:
        if broker is not None:
            broker.send_signal(signal.SIGTERM)
            try:
                broker.wait(30)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
