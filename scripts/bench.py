#!/usr/bin/env python
"""Produce then consume N records through the logd SDK and report throughput and latency.

    python scripts/bench.py [--records N] [--partitions P] [--value-size B] [--json] [--bootstrap HOST:PORT]
                            [--group-consumers K]

Starts its own broker (``python -m logd.cli serve`` on a free port, temp data dir) unless
``--bootstrap`` is given. Workload: JSON-like order values of ``--value-size`` bytes, keys
from 10,000 users (so mmh3 partitioning). Reports produce and consume records/s and MB/s
(key + value bytes), produce acknowledgement latency p50/p99 (sampled: every 64th record,
send() to its future resolving) and the broker's peak RSS (VmHWM, own broker only). With
``--json`` the last line is one JSON object with those figures.

Group mode (``--group-consumers K``): K consumer processes (this script with the internal
``--group-member`` flag) subscribe to the topic in one group and consume the N records
together; reported: total records/s from the start signal until every partition was
read to its end (joining included) and the duplicates. Then, with a producer running, one
member leaves and a new process joins, three times: reported are leave -> group Stable,
join -> the new member's first record, and join -> group Stable (medians; Stable is
polled with DescribeGroup every 5 ms). Member events travel as JSON lines on stdout and
times are ``time.monotonic()``, which is system-wide on Linux.
"""

from __future__ import annotations

import argparse
import gc
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_common import USERS, create_topic, local_broker, make_values, user_keys  # scripts/ is on sys.path

from logd_sdk import Admin, Consumer, Producer, TopicPartition

SAMPLE_EVERY = 64


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


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


# -- group mode ------------------------------------------------------------------------------------

def group_member(address: str, topic: str, group: str) -> int:
    """One member process: waits for "go" on stdin, consumes, reports JSON lines on stdout;
    "leave" on stdin closes the consumer (commit, leave the group) and exits."""
    def emit(event: str, **fields) -> None:
        print(json.dumps({"ev": event, "t": time.monotonic(), **fields}), flush=True)

    consumer = Consumer(address, group_id=group, auto_offset_reset="earliest", max_poll_records=10_000,
                        session_timeout_ms=10_000, auto_commit_interval_ms=1000)
    emit("ready")
    if sys.stdin.readline().strip() != "go":
        return 1
    leave = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), leave.set()), daemon=True).start()
    emit("joined")
    consumer.subscribe([topic])
    count = payload = 0
    next_offsets: dict[int, int] = {}
    reported = 0.0
    while not leave.is_set():
        batch = consumer.poll(timeout_ms=50)
        if batch:
            if not count:
                emit("first")
            count += len(batch)
            for record in batch:
                payload += len(record.value) + len(record.key)
                next_offsets[record.partition] = record.offset + 1
        if time.monotonic() - reported > 0.05:
            reported = time.monotonic()
            emit("progress", count=count, payload=payload, next=next_offsets)
    consumer.close()
    emit("closed", count=count, payload=payload, next=next_offsets)
    return 0


class GroupMembers:
    """The member processes of one group and a queue of their events (index, event)."""

    def __init__(self, address: str, topic: str, group: str) -> None:
        self.address, self.topic, self.group = address, topic, group
        self.processes: list[subprocess.Popen] = []
        self.events: queue.Queue = queue.Queue()
        self.last: dict[int, dict] = {}  # index -> last progress/closed event

    def spawn(self) -> int:
        index = len(self.processes)
        process = subprocess.Popen([sys.executable, __file__, "--group-member", self.topic, self.group,
                                    "--bootstrap", self.address], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.processes.append(process)
        threading.Thread(target=self._read, args=(index, process), daemon=True).start()
        return index

    def _read(self, index: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.events.put((index, json.loads(line)))
        self.events.put((index, {"ev": "exit", "t": time.monotonic()}))

    def send(self, index: int, command: str) -> None:
        self.processes[index].stdin.write(command.encode() + b"\n")
        self.processes[index].stdin.flush()

    def wait_for(self, wanted: dict[int, str], timeout_s: float = 60.0) -> dict[int, dict]:
        """Events until each index in ``wanted`` sent the named one; returns those."""
        found: dict[int, dict] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(wanted):
            index, event = self.next_event(deadline)
            if wanted.get(index) == event["ev"] and index not in found:
                found[index] = event
        return found

    def next_event(self, deadline: float) -> tuple[int, dict]:
        try:
            index, event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise SystemExit("group members stalled") from None
        if event["ev"] == "exit" and self.processes[index].poll() not in (None, 0):
            raise SystemExit(f"group member {index} failed")
        if event["ev"] in ("progress", "closed"):
            self.last[index] = event
        return index, event

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_stable(admin: Admin, group: str, members: int, timeout_s: float = 60.0) -> float:
    """The monotonic time at which the group was seen Stable with ``members`` members."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        description = admin.describe_group(group)
        if description.state == ("Stable" if members else "Empty") and len(description.members) == members:
            return time.monotonic()
        time.sleep(0.005)  # polling interval of DescribeGroup
    raise SystemExit(f"group {group} not stable with {members} members in {timeout_s} s")


def group_consume(address: str, topic: str, records: int, k: int, show: bool) -> dict:
    group = f"{topic}-group"
    members = GroupMembers(address, topic, group)
    try:
        with Admin(address) as admin:
            ends = {p.partition: p.log_end_offset for p in admin.describe_topic(topic).partitions}
            for _ in range(k):
                members.spawn()
            members.wait_for({i: "ready" for i in range(k)})
            started = time.monotonic()
            for i in range(k):
                members.send(i, "go")
            progress = Progress("consume", records, show)
            joined: dict[int, float] = {}
            first: dict[int, float] = {}
            while True:
                index, event = members.next_event(time.monotonic() + 60)
                joined.setdefault(index, event["t"]) if event["ev"] == "joined" else None
                first.setdefault(index, event["t"]) if event["ev"] == "first" else None
                reached = {p: max((int(e["next"].get(str(p), 0)) for e in members.last.values()), default=0)
                           for p in ends}
                progress.update(sum(e["count"] for e in members.last.values()))
                if all(reached[p] >= end for p, end in ends.items()):
                    break
            elapsed = time.monotonic() - started
            consumed = sum(e["count"] for e in members.last.values())
            payload = sum(e["payload"] for e in members.last.values())
            progress.finish(consumed)
            after_join_s = elapsed - (min(first.values()) - started)
            figures = {"group_consumers": k, "consume_rps": round(records / elapsed),
                       "consume_mb_s": round(payload / elapsed / 1e6, 1), "group_duplicates": consumed - records,
                       "consume_rps_from_first_record": round(records / after_join_s),
                       "start_join_to_first_ms_max": round(max(first[i] - joined[i] for i in first) * 1000, 1)}
            figures.update(rebalance_latency(admin, members, address, topic, k))
            for i, process in enumerate(members.processes):
                if process.poll() is None:
                    members.send(i, "leave")
            for process in members.processes:
                process.wait(30)
            return figures
    finally:
        members.stop()


def rebalance_latency(admin: Admin, members: GroupMembers, address: str, topic: str, k: int,
                      rounds: int = 3) -> dict:
    """Under production, one member leaves and a new one joins, ``rounds`` times (medians)."""
    wait_stable(admin, members.group, k)
    stop = threading.Event()

    def produce_steadily() -> None:
        with Producer(address, linger_ms=5) as producer:
            i = 0
            while not stop.wait(0.0005):  # ~2000 records/s: the group has work while it changes
                producer.send(topic, value=b"steady-%d" % i, key=b"k%d" % (i % 1000))
                i += 1

    producer = threading.Thread(target=produce_steadily, daemon=True)
    producer.start()
    leave_ms, join_first_ms, join_stable_ms = [], [], []
    try:
        for _ in range(rounds):
            leaving = next(i for i, p in enumerate(members.processes) if p.poll() is None)
            left_at = time.monotonic()
            members.send(leaving, "leave")
            members.wait_for({leaving: "closed"})
            leave_ms.append((wait_stable(admin, members.group, k - 1) - left_at) * 1000)
            joining = members.spawn()
            members.wait_for({joining: "ready"})
            members.send(joining, "go")
            joined = members.wait_for({joining: "joined"})[joining]["t"]
            stable = wait_stable(admin, members.group, k)
            first = members.wait_for({joining: "first"})[joining]["t"]
            join_first_ms.append((first - joined) * 1000)
            join_stable_ms.append((stable - joined) * 1000)
    finally:
        stop.set()
        producer.join(30)
    return {"leave_to_stable_ms": round(statistics.median(leave_ms), 1),
            "join_to_first_record_ms": round(statistics.median(join_first_ms), 1),
            "join_to_stable_ms": round(statistics.median(join_stable_ms), 1)}


def print_group_figures(figures: dict) -> None:
    print(f"group of {figures['group_consumers']} consumer processes: {figures['consume_rps']:,} rec/s in total "
          f"(joining included; {figures['consume_rps_from_first_record']:,} from the first record), "
          f"{figures['group_duplicates']} duplicates; slowest join -> first record at start "
          f"{figures['start_join_to_first_ms_max']} ms")
    print(f"rebalance under load (median of 3): member leaves -> group stable "
          f"{figures['leave_to_stable_ms']} ms; member joins -> its first record "
          f"{figures['join_to_first_record_ms']} ms, -> group stable {figures['join_to_stable_ms']} ms")


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
    parser.add_argument("--group-consumers", type=int, default=0, metavar="K",
                        help="consume with K consumer processes in one group (see the module docstring)")
    parser.add_argument("--group-member", nargs=2, metavar=("TOPIC", "GROUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.group_member:
        return group_member(args.bootstrap, *args.group_member)

    with local_broker("logd-bench-", args.bootstrap) as broker:
        address = broker.address
        topic = create_topic(address, "bench", args.partitions)
        keys = user_keys()
        values = make_values(min(args.records, 65_536), args.value_size)
        show = sys.stderr.isatty() or not args.json
        gc.collect()
        gc.freeze()  # keep the value pool out of every GC pass: measure the SDK, not the fixture
        produce_s, produce_bytes, latencies = produce(address, topic, args.records, values, keys, show)
        gc.collect()
        gc.freeze()  # the benchmark's own objects (value pool, samples) are not the SDK's GC work
        group_figures = {}
        if args.group_consumers > 0:
            group_figures = group_consume(address, topic, args.records, args.group_consumers, show)
            consume_s = args.records / group_figures["consume_rps"]
            consume_bytes = group_figures.pop("consume_mb_s") * 1e6 * consume_s
        else:
            consume_s, consume_bytes = consume(address, topic, args.partitions, args.records, show)
        peak_rss = peak_rss_mb(broker.process.pid) if broker.process else None
    figures = {
        "records": args.records, "partitions": args.partitions, "value_size": args.value_size,
        "produce_rps": round(args.records / produce_s),
        "consume_rps": round(args.records / consume_s),
        "produce_mb_s": round(produce_bytes / produce_s / 1e6, 1),
        "consume_mb_s": round(consume_bytes / consume_s / 1e6, 1),
        "ack_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "ack_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "broker_rss_mb": round(peak_rss, 1) if peak_rss is not None else None,
        **group_figures,
    }
    print(f"produce: {figures['produce_rps']:,} rec/s, {figures['produce_mb_s']} MB/s "
          f"(ack p50 {figures['ack_p50_ms']} ms, p99 {figures['ack_p99_ms']} ms)")
    print(f"consume: {figures['consume_rps']:,} rec/s, {figures['consume_mb_s']} MB/s")
    if group_figures:
        print_group_figures(figures)
    print(f"broker peak RSS: {figures['broker_rss_mb']} MB")
    if args.json:
        print(json.dumps(figures))
    return 0

if __name__ == "__main__":
    sys.exit(main())
