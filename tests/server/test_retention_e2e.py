"""Retention and compaction in a running broker: the background task, driven through the SDK."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from logd_sdk import Admin, Consumer, Producer, TopicPartition

from .helpers import start_server

INTERVAL_MS = 50
SMALL = {"segment.bytes": "1024"}
HOUR_MS = 3_600_000


class Clock:
    """Wall time plus an offset the test moves forward (the broker's and the task's clock)."""

    def __init__(self) -> None:
        self.skew_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.skew_ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(tmp_path: Path, clock: Clock):
    server = start_server(tmp_path / "data", retention_check_interval_ms=INTERVAL_MS, clock_ms=clock)
    yield server
    server.stop()


@pytest.fixture
def admin(server):
    with Admin(server.address) as admin:
        yield admin


def wait_checks(server, count: int = 2) -> None:
    """Block until ``count`` more complete checks of every partition have run."""
    task = server.log_cleaner
    assert task.wait_for_checks(task.stats.checks + count, 10), "the log cleaner task stopped checking"


def wait_until(server, condition, what: str, timeout_s: float = 15) -> None:
    """Wait check by check until ``condition()`` holds (each check may change the logs)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        wait_checks(server, 1)


def produce(address: str, topic: str, records, timestamp_ms: int | None = None) -> None:
    """Send ``(key, value)`` pairs to partition 0 in order, uncompressed so segments fill."""
    with Producer(address, linger_ms=1, batch_size=256, compression="none") as producer:
        futures = [producer.send(topic, value=value, key=key, partition=0, timestamp_ms=timestamp_ms)
                   for key, value in records]
        for future in futures:
            future.result(10)


class ReadingConsumer(threading.Thread):
    """Consumes partition 0 from the earliest offset all along; checks each record's value
    names its offset (``b"v<offset>"``) and that offsets only grow."""

    def __init__(self, address: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(address, auto_offset_reset="earliest", enable_auto_commit=False,
                                 fetch_max_wait_ms=20)
        self.consumer.assign([TopicPartition(topic, 0)])
        self.stop = threading.Event()
        self.offsets: list[int] = []
        self.problems: list[str] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for record in self.consumer.poll(timeout_ms=50):
                    if record.value != b"v%d" % record.offset:
                        self.problems.append(f"offset {record.offset}: {record.value!r}")
                    if self.offsets and record.offset <= self.offsets[-1]:
                        self.problems.append(f"offset {record.offset} after {self.offsets[-1]}")
                    self.offsets.append(record.offset)
        except Exception as exc:  # noqa: BLE001 - any error is a failure
            self.problems.append(repr(exc))
        finally:
            self.consumer.close()

    def finish(self) -> list[str]:
        self.stop.set()
        self.join(10)
        return self.problems


def numbered(start: int, count: int) -> list[tuple[None, bytes]]:
    return [(None, b"v%d" % offset) for offset in range(start, start + count)]


def partition0(admin: Admin, topic: str):
    return admin.describe_topic(topic).partitions[0]


def test_retention_by_time_with_a_consumer_reading_throughout(server, admin):
    """Records older than retention.ms are deleted (the idle active segment rolled so that
    it could go too); the log start offset moves and a consumer reading throughout
    only ever sees the right records; fresh records stay."""
    admin.create_topic("events", config={**SMALL, "retention.ms": "60000"})
    reader = ReadingConsumer(server.address, "events")
    reader.start()
    try:
        produce(server.address, "events", numbered(0, 200), timestamp_ms=int(time.time() * 1000) - HOUR_MS)
        wait_until(server, lambda: partition0(admin, "events").log_start_offset == 200, "old records to go")
        info = partition0(admin, "events")
        assert (info.log_end_offset, info.size_bytes) == (200, 0)
        produce(server.address, "events", numbered(200, 50))
        wait_until(server, lambda: reader.offsets and reader.offsets[-1] == 249, "the consumer to catch up")
        wait_checks(server)
        assert partition0(admin, "events").log_start_offset == 200
    finally:
        problems = reader.finish()
    assert problems == []
    assert reader.offsets[-50:] == list(range(200, 250))
    stats = server.log_cleaner.stats_snapshot()
    assert stats["retention_segments_deleted"] >= 2 and stats["retention_bytes_reclaimed"] > 200 * 10
    assert stats["segments_rolled"] >= 1


def within_retention_bytes(server, topic: str, retention_bytes: int) -> bool:
    """True when deleting the oldest segment would take the partition below the limit."""
    segments = server.broker.topics.require(topic).partitions[0].log.segments()
    return sum(s.size_bytes for s in segments[1:]) < retention_bytes


def test_retention_by_bytes_with_a_consumer_reading_throughout(server, admin):
    """The partition is kept near retention.bytes; the consumer's offsets stay continuous
    above the log start offset."""
    admin.create_topic("sized", config={**SMALL, "retention.bytes": "4000"})
    reader = ReadingConsumer(server.address, "sized")
    reader.start()
    try:
        for start in range(0, 400, 100):
            produce(server.address, "sized", numbered(start, 100))
        wait_until(server, lambda: within_retention_bytes(server, "sized", 4000), "the partition to shrink")
        wait_until(server, lambda: reader.offsets and reader.offsets[-1] == 399, "the consumer to catch up")
    finally:
        problems = reader.finish()
    assert problems == []
    info = partition0(admin, "sized")
    assert info.log_start_offset > 0 and info.size_bytes >= 4000
    with Consumer(server.address, auto_offset_reset="earliest", enable_auto_commit=False) as consumer:
        consumer.assign([TopicPartition("sized", 0)])
        consumer.seek_to_beginning()
        offsets, deadline = [], time.monotonic() + 30
        while (not offsets or offsets[-1] < 399) and time.monotonic() < deadline:
            offsets.extend(r.offset for r in consumer.poll(timeout_ms=1000))
    assert offsets == list(range(info.log_start_offset, 400))


def test_delete_records_moves_the_log_start_offset(server, admin):
    """delete_records moves the log start offset; a consumer below it is reset to it."""
    admin.create_topic("trimmed", config=SMALL)
    produce(server.address, "trimmed", numbered(0, 120))
    tp = TopicPartition("trimmed", 0)
    assert admin.delete_records({tp: 70}) == {tp: 70}
    assert partition0(admin, "trimmed").log_start_offset == 70
    with Consumer(server.address, auto_offset_reset="earliest", enable_auto_commit=False) as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 3)
        records, deadline = [], time.monotonic() + 30
        while not records and time.monotonic() < deadline:
            records = consumer.poll(timeout_ms=1000)
    assert records and records[0].offset == 70 and records[0].value == b"v70"
    wait_checks(server)  # retention (delete policy, 7 days) leaves the rest alone
    assert partition0(admin, "trimmed").log_start_offset == 70


def test_alter_config_takes_effect_without_restart(server, admin):
    """With the default retention.ms old records stay; lowering it deletes them at the next check."""
    admin.create_topic("later", config=SMALL)
    produce(server.address, "later", numbered(0, 60), timestamp_ms=int(time.time() * 1000) - 2 * 86_400_000)
    wait_checks(server)
    assert partition0(admin, "later").log_start_offset == 0
    admin.alter_topic_config("later", {"retention.ms": "86400000"})
    wait_until(server, lambda: partition0(admin, "later").log_start_offset == 60, "altered retention to apply")


def read_from_beginning(address: str, topic: str, end_offset: int):
    with Consumer(address, auto_offset_reset="earliest", enable_auto_commit=False) as consumer:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        records, deadline = [], time.monotonic() + 30
        while (not records or records[-1].offset < end_offset - 1) and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout_ms=1000))
    return records


def test_compaction_keeps_the_latest_value_per_key_then_drops_tombstones(server, admin, clock):
    """Many versions per key, read back from the beginning: the latest value of each key,
    offsets increasing, far fewer records than written; tombstones stay until
    delete.retention.ms after they were cleaned, then go."""
    admin.create_topic("table", config={**SMALL, "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
                                        "delete.retention.ms": str(HOUR_MS)})
    model: dict[bytes, bytes | None] = {}
    written = []
    for version in range(25):
        for key in range(12):
            written.append((b"key-%d" % key, b"value-%d-%d" % (key, version)))
    written += [(b"key-%d" % key, None) for key in range(4)]  # tombstones
    produce(server.address, "table", written)
    filler_start = len(written)
    # A later append larger than segment.bytes rolls the segment: all of the above is in
    # closed (cleanable) segments, whatever batches the producer made of it.
    filler = [(b"filler-%d" % i, b"x" * 40) for i in range(60)]
    produce(server.address, "table", filler)
    written += filler
    for key, value in written:
        model[key] = value
    end = len(written)

    def compacted() -> bool:
        keys = [r.key for r in read_from_beginning(server.address, "table", end) if r.offset < filler_start]
        return len(keys) == len(set(keys))

    wait_until(server, compacted, "compaction of everything before the filler")
    records = read_from_beginning(server.address, "table", end)
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets)) and len(records) < end / 2
    assert {r.key: r.value for r in records} == model
    assert [r.value for r in records if r.key == b"key-0"] == [None]  # the tombstone is still there
    clock.skew_ms += HOUR_MS + 1000
    wait_until(server, lambda: not any(r.value is None for r in read_from_beginning(server.address, "table", end)),
               "tombstones to go")
    records = read_from_beginning(server.address, "table", end)
    assert {r.key: r.value for r in records} == {k: v for k, v in model.items() if v is not None}
    stats = server.log_cleaner.stats_snapshot()
    assert stats["cleaner_passes"] >= 2 and stats["cleaner_bytes_reclaimed"] > 0 and stats["errors"] == 0


def test_consumer_offsets_stays_small_under_many_commits(tmp_path, clock):
    """Thousands of commits of a few partitions' offsets: the compacted __consumer_offsets
    stays small, and the committed offsets survive compaction and a restart."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir, retention_check_interval_ms=INTERVAL_MS, clock_ms=clock)
    try:
        with Admin(server.address) as admin:
            admin.create_topic("orders", partitions=3)
        # The coordinator created the topic with 100 MiB segments; small ones make the
        # cleaner's work visible in a test.
        server.broker.alter_topic_config("__consumer_offsets", {**SMALL, "min.cleanable.dirty.ratio": "0.1"})
        partitions = [TopicPartition("orders", p) for p in range(3)]
        with Consumer(server.address, group_id="billing", enable_auto_commit=False) as consumer:
            for i in range(1, 301):
                consumer.commit({tp: i * 10 + tp.partition for tp in partitions})
        offsets_log = server.broker.topics.require("__consumer_offsets").partitions[0].log
        assert offsets_log.log_end_offset >= 300
        wait_until(server, lambda: offsets_log.size_bytes < 6 * 1024, "__consumer_offsets to be compacted")
        assert server.log_cleaner.stats.cleaner_records_removed > 200
    finally:
        server.stop()
    server = start_server(data_dir, retention_check_interval_ms=INTERVAL_MS, clock_ms=clock)
    try:
        with Consumer(server.address, group_id="billing", enable_auto_commit=False) as consumer:
            assert [consumer.committed(tp) for tp in partitions] == [3000, 3001, 3002]
    finally:
        server.stop()
