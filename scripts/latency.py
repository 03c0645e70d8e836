#!/usr/bin/env python
"""End-to-end latency through the logd SDK at a fixed rate: send() to poll() returning it.

    python scripts/latency.py [--rate 5000] [--seconds 10] [--partitions 1] [--linger-ms 1]
                              [--warmup-s 1] [--bootstrap HOST:PORT] [--consumer-process]
                              [--json] [--dump FILE]

Starts its own broker (``bench_common.local_broker``, as ``scripts/bench.py`` does) unless
``--bootstrap`` is given, creates a topic, starts a consumer thread (``assign`` + ``poll``)
(``--consumer-process``: a process of its own, as producer and consumer are usually
deployed; in one process they share one GIL, which adds to each other's tail) and then,
from the main thread, sends record i when it comes due (i / rate seconds after
the start; every record due is sent at each wake-up), noting ``perf_counter()`` just before
``send``. The value starts with the record's index (8 bytes), so the consumer matches each
record to its send time whatever partition it took. Keys come from 10,000 users, values
are ~108 bytes.

Reports, over the records sent after ``--warmup-s``: end-to-end latency (send to the poll
that returned it) and acknowledgement latency (send to its future resolving) as p50, p99,
p99.9 and max in ms. With its own broker (started with ``--metrics-listen``) it also reports
the broker's fsync latency over the run, read from ``logd_fsync_duration_seconds``: the
p50/p99/max bucket bounds, the share over 5 ms and the count over 50 ms: the disk's part
of the tail (an acknowledged record waits for one fsync; while one fsync stalls, every
record sent meanwhile waits for it). With ``--json`` the last line is one JSON object
of those figures; ``--dump FILE`` writes ``send_time_s e2e_ms ack_ms`` per record.
Beside the run, ``host_probe.WakeupProbe`` measures how late the host wakes a sleeping
thread (``host_wakeup_late_ms``): a record crosses about fifteen wake-ups, so the host's
wake-up tail is a floor under the e2e tail, and it moves from minute to minute.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import struct
import sys
import threading
import time
import urllib.request

from bench_common import USERS, create_topic, local_broker, make_values  # scripts/ is on sys.path
from host_probe import WakeupProbe, percentiles_ms

from logd_sdk import Consumer, Producer, TopicPartition

_INDEX = struct.Struct("<Q")


def fsync_buckets(metrics_url: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound s, count) of logd_fsync_duration_seconds."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith("logd_fsync_duration_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    return sorted(buckets)


def fsync_summary(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> dict[str, float]:
    """The run's fsyncs (after - before): count, p50/p99 as bucket upper bounds (ms), share > 5 ms."""
    counts = [(bound, count - dict(before).get(bound, 0.0)) for bound, count in after]
    total = counts[-1][1] if counts else 0.0
    if not total:
        return {"count": 0}

    def bound_ms(fraction: float) -> float:
        return next(round(bound * 1000, 2) for bound, count in counts if count >= fraction * total)

    def over(seconds: float) -> int:
        return int(total - next((count for bound, count in counts if bound >= seconds), total))

    return {"count": int(total), "p50_le_ms": bound_ms(0.5), "p99_le_ms": bound_ms(0.99),
            "over_5ms_share": round(over(0.005) / total, 4), "over_50ms": over(0.05),
            "max_le_ms": bound_ms(1.0)}


def consume(address: str, topic: str, partitions: int, count: int, received, arrived, ready, done) -> None:
    """Poll until ``count`` records arrived (``arrived.value``) or ``done`` is set, noting
    each record's arrival time (``perf_counter``) at its index in ``received``. Runs in a
    thread, or in a process of its own (``--consumer-process``: then ``received`` and
    ``arrived`` are shared memory, and ``perf_counter``, CLOCK_MONOTONIC on Linux, is
    the same clock in both processes)."""
    perf = time.perf_counter
    unpack = _INDEX.unpack_from
    consumer = Consumer(address, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        ready.set()
        while arrived.value < count and not done.is_set():
            records = consumer.poll(timeout_ms=200, max_records=10_000)
            now = perf()
            for record in records:
                received[unpack(record.value)[0]] = now
            arrived.value += len(records)
    finally:
        consumer.close()


class _Count:
    value = 0


def run(address: str, topic: str, partitions: int, rate: float, seconds: float, linger_ms: float,
        warmup_s: float, dump: str | None = None, consumer_process: bool = False) -> dict:
    count = max(1, int(rate * seconds))
    keys = [b"user-%05d" % (i % USERS) for i in range(count)]
    pool = make_values(min(count, 4096), 100)
    values = [_INDEX.pack(i) + pool[i % len(pool)] for i in range(count)]
    sent = [0.0] * count
    acked = [0.0] * count
    args = (address, topic, partitions, count)
    if consumer_process:
        spawn = multiprocessing.get_context("spawn")  # no fork of a process with gRPC threads
        received, arrived = spawn.Array("d", count, lock=False), spawn.Value("q", 0, lock=False)
        ready, done = spawn.Event(), spawn.Event()
        worker = spawn.Process(target=consume, args=(*args, received, arrived, ready, done),
                               name="latency-consumer", daemon=True)

        def failure() -> BaseException | None:
            if worker.exitcode in (None, 0):
                return None
            return SystemExit(f"the consumer process exited with {worker.exitcode}")
    else:
        received, arrived, ready, done = [0.0] * count, _Count(), threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def consume_in_thread() -> None:
            try:
                consume(*args, received, arrived, ready, done)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                ready.set()

        worker = threading.Thread(target=consume_in_thread, name="latency-consumer", daemon=True)

        def failure() -> BaseException | None:
            return errors[0] if errors else None
    worker.start()
    started_by = time.monotonic() + 30
    while not ready.wait(0.1) and failure() is None and time.monotonic() < started_by:
        pass  # (a consumer process that died before it was ready is noticed at once)
    if not ready.is_set() or failure() is not None:
        done.set()
        raise failure() or SystemExit("the consumer did not start within 30 s")

    try:
        with Producer(address, linger_ms=linger_ms) as producer:
            producer.partitions_for(topic)  # metadata outside the measurement
            perf = time.perf_counter
            send = producer.send
            started = perf()
            next_index = 0
            while next_index < count:
                now = perf()
                due = min(count, int((now - started) * rate) + 1)
                if due <= next_index:
                    time.sleep(started + next_index / rate - now)  # pacing to the fixed rate
                    continue
                for i in range(next_index, due):
                    sent[i] = perf()
                    send(topic, values[i], keys[i]).add_done_callback(
                        lambda f, i=i: acked.__setitem__(i, perf()))
                next_index = due
            producer.flush()
            deadline = time.monotonic() + 30
            while arrived.value < count and failure() is None and time.monotonic() < deadline:
                worker.join(0.05)
    finally:
        done.set()
        worker.join(5)
    if failure() is not None:
        raise failure()
    if arrived.value < count:
        raise SystemExit(f"only {arrived.value} of {count} records arrived")
    first = min(count - 1, int(rate * warmup_s))
    e2e = [received[i] - sent[i] for i in range(first, count)]
    ack = [acked[i] - sent[i] for i in range(first, count) if acked[i]]
    if dump:
        with open(dump, "w") as out:
            for i in range(first, count):
                out.write(f"{sent[i] - sent[0]:.6f} {(received[i] - sent[i]) * 1000:.3f} "
                          f"{((acked[i] - sent[i]) * 1000) if acked[i] else float('nan'):.3f}\n")
    return {"rate": rate, "seconds": seconds, "partitions": partitions, "linger_ms": linger_ms,
            "consumer_process": consumer_process, "records": count, "measured": count - first,
            "e2e_ms": percentiles_ms(e2e), "ack_ms": percentiles_ms(ack)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="records per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--linger-ms", type=float, default=1.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--consumer-process", action="store_true",
                        help="consume in a process of its own (as deployed) instead of a thread beside the producer")
    parser.add_argument("--dump", default=None, help="write 'send_time_s e2e_ms ack_ms' per record to this file")
    args = parser.parse_args()

    with local_broker("logd-latency-", args.bootstrap, metrics=True) as broker:
        topic = create_topic(broker.address, "latency", args.partitions)
        before = fsync_buckets(broker.metrics_url) if broker.metrics_url else []
        with WakeupProbe() as host:
            figures = run(broker.address, topic, args.partitions, args.rate, args.seconds, args.linger_ms,
                          args.warmup_s, args.dump, args.consumer_process)
        figures["host_wakeup_late_ms"] = host.result
        if broker.metrics_url:
            figures["broker_fsync"] = fsync_summary(before, fsync_buckets(broker.metrics_url))
    e2e, ack = figures["e2e_ms"], figures["ack_ms"]
    print(f"{figures['measured']:,} records at {args.rate:,.0f} rec/s, {args.partitions} partition(s), "
          f"linger {args.linger_ms} ms, consumer in {'its own process' if args.consumer_process else 'a thread'}")
    print(f"end-to-end ms: p50 {e2e['p50']}  p99 {e2e['p99']}  p99.9 {e2e['p999']}  max {e2e['max']}")
    print(f"ack ms:        p50 {ack['p50']}  p99 {ack['p99']}  p99.9 {ack['p999']}  max {ack['max']}")
    if "broker_fsync" in figures:
        fs = figures["broker_fsync"]
        print(f"broker fsyncs: {fs.get('count', 0):,}, p50 <= {fs.get('p50_le_ms')} ms, "
              f"p99 <= {fs.get('p99_le_ms')} ms, {100 * fs.get('over_5ms_share', 0):.2f}% over 5 ms, "
              f"{fs.get('over_50ms', 0)} over 50 ms, max <= {fs.get('max_le_ms')} ms")
    print(host.describe())
    if args.json:
        print(json.dumps(figures))
    return 0

if __name__ == "__main__":
    sys.exit(main())
