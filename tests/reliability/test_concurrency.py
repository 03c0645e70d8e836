"""Concurrency: many producers on one partition; fetches racing roll, retention and compaction."""

from __future__ import annotations

import random
import threading
import time

import pytest

from logd_sdk import Producer, codec
from logd_sdk.protocol import common_pb2, topics_pb2

from server.helpers import batch, connect, connect_address, start_server

from .history import OK, History, Read, check

RACE_S = 1.5


@pytest.mark.timeout(60)
def test_many_producers_on_one_partition_get_unique_gap_free_ordered_offsets(tmp_path, seed):
    """Eight SDK producers sending to one partition at once: every acknowledged offset is
    unique, together they cover 0..N-1 without a gap, each producer's records keep their
    send order, and the log holds exactly what was acknowledged."""
    rng = random.Random(seed)
    server = start_server(tmp_path / "data")
    try:
        client = connect(server)
        client.create("hot", 1, segment_bytes="4096")
        history = History()
        errors: list[BaseException] = []

        def produce(name: str, count: int, linger_ms: int) -> None:
            try:
                with Producer(server.address, linger_ms=linger_ms, batch_size=rng.choice([512, 4096])) as producer:
                    for seq in range(count):
                        value = f"{name}-{seq}".encode()
                        entry = history.send(name, 0, value, seq)
                        future = producer.send("hot", value, partition=0)
                        future.add_done_callback(
                            lambda f, e=entry: history.complete(e, OK, f.result(0).offset) if f.exception(0) is None
                            else history.complete(e, "failed", error=repr(f.exception(0))))
                    producer.flush(30_000)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(f"p{i}", 400, rng.choice([0, 1, 5]))) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        end = client.fetch("hot", 0, 0).high_watermark
        final: list[Read] = []
        offset = 0
        while offset < end:
            data = client.fetch("hot", 0, offset, partition_max_bytes=1 << 20).batches
            for position, _ in codec.iter_batches(data):
                for record in codec.decode_batch(data, position)[1]:
                    if record.offset >= offset:
                        final.append(Read(0, record.offset, record.value))
            offset = final[-1].offset + 1
        result = check(history, {0: final})
        assert result.valid, result.summary()
        assert result.stats["acked"] == 3200 == end == len(final), result.summary()
        client.channel.close()
    finally:
        server.stop()


def _value(offset: int) -> bytes:
    return b"o%d-" % offset + b"." * 40


class _Fetchers:
    """Threads fetching random offsets until stopped; every answer is checked on the spot:
    whole CRC-valid batches whose records hold their own offset, or OFFSET_OUT_OF_RANGE."""

    def __init__(self, address: str, topic: str, seed: int, count: int = 4) -> None:
        self.topic = topic
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.fetched = self.out_of_range = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(address, random.Random(f"{seed}-{i}")))
                        for i in range(count)]

    def __enter__(self) -> "_Fetchers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, address: str, rng: random.Random) -> None:
        client = connect_address(address)
        try:
            while not self.stop.is_set():
                probe = client.fetch(self.topic, 0, 0, max_bytes=1)
                end = max(probe.high_watermark, 1)
                # Mostly around the live range (retention moves its start), a few below.
                offset = rng.randrange(max(0, probe.log_start_offset - 3), end + 1)
                data = client.fetch(self.topic, 0, offset, partition_max_bytes=rng.choice([100, 2000, 1 << 20]))
                self._check(offset, data)
        except Exception as exc:  # an RPC failure is a finding too
            with self._lock:
                self.problems.append(f"fetcher died: {exc!r}")
        finally:
            client.channel.close()

    def _check(self, offset: int, data) -> None:
        with self._lock:
            if data.HasField("error") and data.error.code:
                name = common_pb2.ErrorCode.Name(data.error.code)
                if name == "OFFSET_OUT_OF_RANGE":
                    self.out_of_range += 1
                else:
                    self.problems.append(f"fetch at {offset}: {name} {data.error.message}")
                return
            try:
                for position, _ in codec.iter_batches(data.batches):  # CRC-checked
                    for record in codec.decode_batch(data.batches, position)[1]:
                        if record.value is not None and record.value != _value(record.offset):
                            self.problems.append(f"offset {record.offset} holds {record.value[:20]!r}")
                self.fetched += 1
            except codec.CorruptBatchError as exc:
                self.problems.append(f"fetch at {offset}: garbage served: {exc}")


def _produce_numbered(client, topic: str, stop: threading.Event, keys: int | None = None) -> int:
    """Append one record at a time (values name their own offset) until ``stop``."""
    offset = 0
    rng = random.Random(offset)
    while not stop.is_set():
        key = None if keys is None else b"k%d" % rng.randrange(keys)
        result = client.produce(topic, 0, batch(_value(offset), keys=[key], codec_id=codec.CODEC_NONE))
        assert not result.HasField("error") or not result.error.code, result.error
        assert result.base_offset == offset
        offset += 1
    return offset


@pytest.mark.timeout(60)
@pytest.mark.parametrize("race", ["roll+delete_records", "retention", "compaction"])
def test_fetches_racing_roll_retention_and_compaction_never_see_garbage(tmp_path, seed, race):
    """Fetchers at random offsets while the log rolls tiny segments and retention
    (delete_records or retention.bytes) or compaction rewrites and deletes them: every
    answer is whole CRC-valid batches with the right records, or OFFSET_OUT_OF_RANGE."""
    rng = random.Random(seed)
    server = start_server(tmp_path / "data", retention_check_interval_ms=30)
    try:
        client = connect(server)
        config = {"segment_bytes": "1024"}
        if race == "retention":
            config["retention_bytes"] = "3000"
        if race == "compaction":
            config.update(cleanup_policy="compact", min_cleanable_dirty_ratio="0.01")
        client.create("race", 1, **config)
        stop = threading.Event()
        written: list[int] = []
        producer_errors: list[BaseException] = []

        def produce() -> None:
            try:
                written.append(_produce_numbered(client, "race", stop, keys=8 if race == "compaction" else None))
            except BaseException as exc:
                producer_errors.append(exc)

        producer = threading.Thread(target=produce)
        with _Fetchers(server.address, "race", seed) as fetchers:
            producer.start()
            started = time.monotonic()
            # RACE_S at least, and on until enough fetches got data (a busy machine is slow).
            while time.monotonic() - started < (RACE_S if fetchers.fetched >= 30 else 4 * RACE_S):
                if producer_errors:
                    break
                if race == "roll+delete_records":
                    high_watermark = client.fetch("race", 0, 0, max_bytes=1).high_watermark
                    target = max(0, high_watermark - rng.randrange(20, 200))
                    client.topics.DeleteRecords(topics_pb2.DeleteRecordsRequest(targets=[
                        topics_pb2.DeleteRecordsRequest.Target(topic="race", partition=0, offset=target)]), timeout=5)
                stop.wait(0.05)  # pacing of the deleter, not synchronisation
            stop.set()
            producer.join(30)
        assert not producer_errors, producer_errors
        assert written and written[0] > 50, "the producer made no progress"
        assert not fetchers.problems, fetchers.problems[:10]
        assert fetchers.fetched > 20, (fetchers.fetched, fetchers.out_of_range)
        stats = server.log_cleaner.stats_snapshot()
        if race == "retention":
            assert stats["retention_segments_deleted"] > 0, stats
        if race == "compaction":
            assert stats["cleaner_records_removed"] > 0, stats
        client.channel.close()
    finally:
        server.stop()
