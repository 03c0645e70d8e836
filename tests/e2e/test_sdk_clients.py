"""Producer and Consumer against a real broker: partitioning, order, replay, errors."""

import os
import threading
import time

import mmh3
import pytest

from broker_process import BrokerProcess
from logd_sdk import (
    Admin,
    Consumer,
    NotAssignedError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    Producer,
    Record,
    RecordMetadata,
    RecordTooLargeError,
    TopicNotFoundError,
    TopicPartition,
)


@pytest.fixture(scope="module")
def producer(broker):
    with Producer(broker.address, linger_ms=2) as client:
        yield client


def consume_all(address, partitions, expected, timeout_s=20.0, **kwargs):
    """Poll until ``expected`` records arrived (or the deadline passes)."""
    records = []
    with Consumer(address, auto_offset_reset="earliest", **kwargs) as consumer:
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout_ms=200))
    return records


def test_keyed_records_follow_the_formula_and_keep_per_key_order(broker, admin, producer, topic):
    """Each key lands on mmh3(key) % n and its records are consumed in send order."""
    admin.create_topic(topic, partitions=5)
    keys = [b"user-%d" % i for i in range(50)]
    futures = [(key, seq, producer.send(topic, value=b"%d" % seq, key=key))
               for seq in range(40) for key in keys]
    producer.flush()
    for key, _, future in futures:
        assert future.result().partition == mmh3.hash(key, seed=0, signed=False) % 5
    records = consume_all(broker.address, [TopicPartition(topic, p) for p in range(5)], len(futures))
    assert len(records) == len(futures)
    by_key = {}
    for record in records:
        assert record.partition == mmh3.hash(record.key, seed=0, signed=False) % 5
        by_key.setdefault(record.key, []).append(int(record.value))
    assert all(seqs == list(range(40)) for seqs in by_key.values())


def test_keyless_records_spread_and_explicit_partition_wins(broker, admin, topic):
    """Keyless records use every partition over time; partition= overrides the key."""
    admin.create_topic(topic, partitions=3)
    with Producer(broker.address, batch_size=1024, linger_ms=0) as producer:
        futures = [producer.send(topic, value=b"x" * 100) for _ in range(600)]
        pinned = producer.send(topic, value=b"v", key=b"k", partition=2)
        producer.flush()
    assert {f.result().partition for f in futures} == {0, 1, 2}
    assert pinned.result().partition == 2


def test_keyless_records_sent_one_at_a_time_use_every_partition(broker, admin, topic):
    """Sticky per batch: with the default batch_size, records sent and awaited one by one
    (each its own batch) still spread over every partition, never twice in a row."""
    admin.create_topic(topic, partitions=4)
    with Producer(broker.address) as producer:
        partitions = [producer.send(topic, value=b"x").result(timeout=10).partition for _ in range(40)]
    assert set(partitions) == {0, 1, 2, 3}
    assert all(a != b for a, b in zip(partitions, partitions[1:]))


def test_metadata_offsets_and_record_contents_round_trip(broker, admin, producer, topic):
    """RecordMetadata offsets are consecutive; consumed Records carry key, value, headers."""
    admin.create_topic(topic)
    sent = [
        producer.send(topic, value=b"a", key=b"k1", headers={"trace": b"1"}),
        producer.send(topic, value=None, key=b"k1"),  # a tombstone
        producer.send(topic, value=b"c", headers=[("h", b"1"), ("h", b"2"), ("n", None)]),
        producer.send(topic, value=b"d", timestamp_ms=1234),
    ]
    metadata = [f.result(timeout=10) for f in sent]
    assert all(isinstance(m, RecordMetadata) and m.topic == topic and m.partition == 0 for m in metadata)
    assert [m.offset for m in metadata] == [0, 1, 2, 3]
    assert metadata[3].timestamp_ms == 1234
    records = consume_all(broker.address, [TopicPartition(topic, 0)], 4)
    assert [(r.offset, r.key, r.value, r.headers) for r in records] == [
        (0, b"k1", b"a", [("trace", b"1")]), (1, b"k1", None, []),
        (2, None, b"c", [("h", b"1"), ("h", b"2"), ("n", None)]), (3, None, b"d", [])]
    assert all(type(r) is Record for r in records) and records[3].timestamp_ms == 1234


def test_replay_from_an_offset_and_from_a_time(broker, admin, producer, topic):
    """seek() and offsets_for_times() replay a partition from any offset or time."""
    admin.create_topic(topic)
    for i in range(30):
        producer.send(topic, value=b"%d" % i, timestamp_ms=10_000 + i * 100)
    producer.flush()
    tp = TopicPartition(topic, 0)
    with Consumer(broker.address, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 17)
        assert consumer.position(tp) == 17
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 13 and time.monotonic() < deadline:
            got.extend(consumer.poll(timeout_ms=200))
        assert [r.offset for r in got] == list(range(17, 30))
        assert consumer.position(tp) == 30
        found = consumer.offsets_for_times({tp: 10_000 + 2_050})
        assert found == {tp: 21}
        assert consumer.offsets_for_times({tp: 99_999_999}) == {tp: None}
        consumer.seek(tp, found[tp])
        assert [r.value for r in consumer.poll(timeout_ms=5000, max_records=2)] == [b"21", b"22"]
        consumer.seek_to_beginning()
        assert consumer.poll(timeout_ms=5000, max_records=1)[0].offset == 0
        consumer.seek_to_end()
        assert consumer.position(tp) == 30 and consumer.poll(timeout_ms=100) == []
        assert consumer.beginning_offsets([tp]) == {tp: 0} and consumer.end_offsets([tp]) == {tp: 30}


def test_every_partition_with_a_backlog_gets_its_share_of_the_fetches(broker, admin, producer, topic):
    """A fetch's byte budget fits two partitions' batches here, and all three have a
    backlog: the fetch order rotates, so the third partition is served long before the
    first two are caught up (a fixed order would starve it until then)."""
    admin.create_topic(topic, partitions=3)
    for partition in range(3):
        for i in range(12):  # one ~4 KB batch per record, incompressible
            producer.send(topic, value=os.urandom(4000), partition=partition).result(timeout=10)
    records = consume_all(broker.address, [TopicPartition(topic, p) for p in range(3)], 36,
                          fetch_max_bytes=9000, max_partition_fetch_bytes=4500)
    order = [r.partition for r in records]
    assert sorted(order) == [0] * 12 + [1] * 12 + [2] * 12
    last_of = {p: len(order) - 1 - order[::-1].index(p) for p in range(3)}
    assert order.index(2) < min(last_of[0], last_of[1]) - 6, order


def test_a_batch_larger_than_the_partition_fetch_size_arrives_whole(broker, admin, producer, topic):
    """With the default fetch sizes (1 MiB a partition, 4 MiB a response) a 2 MB record of
    the second partition, behind a backlog in the first, still arrives whole."""
    admin.create_topic(topic, partitions=2, config={"max.message.bytes": str(4 << 20)})
    for _ in range(5):
        producer.send(topic, value=os.urandom(300_000), partition=0).result(timeout=10)
    big = os.urandom(2_000_000)
    producer.send(topic, value=big, partition=1).result(timeout=10)
    records = consume_all(broker.address, [TopicPartition(topic, 0), TopicPartition(topic, 1)], 6)
    assert sorted(r.partition for r in records) == [0] * 5 + [1]
    assert next(r.value for r in records if r.partition == 1) == big


def test_latest_consumer_sees_new_records_quickly(broker, admin, producer, topic):
    """A tailing consumer (auto_offset_reset=latest) gets a record within ms of its ack."""
    admin.create_topic(topic)
    producer.send(topic, value=b"before").result(timeout=10)
    tp = TopicPartition(topic, 0)
    with Consumer(broker.address) as consumer:
        consumer.assign([tp])
        assert consumer.position(tp) == 1
        assert consumer.poll(timeout_ms=200) == []
        producer.send(topic, value=b"after").result(timeout=10)
        acked = time.monotonic()
        records = consumer.poll(timeout_ms=5000)
        latency_s = time.monotonic() - acked
    assert [r.value for r in records] == [b"after"]
    assert latency_s < 2  # well before the poll's 5 s (a loaded 2-core machine needs the margin)


def test_iteration_and_polling_from_another_thread(broker, admin, producer, topic):
    """`for record in consumer` yields records produced concurrently; close ends it."""
    admin.create_topic(topic, partitions=2)
    consumer = Consumer(broker.address, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    seen = []
    finished = threading.Event()

    def reader():
        for record in consumer:
            seen.append(record.value)
            if len(seen) == 200:
                break
        finished.set()

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(200):
        producer.send(topic, value=b"%d" % i)
    producer.flush()
    assert finished.wait(20)
    thread.join(5)
    consumer.close()
    assert sorted(int(v) for v in seen) == list(range(200))


def test_iteration_never_skips_or_commits_records_it_has_not_yielded(broker, admin, producer, topic):
    """`for record in consumer` holds a whole poll's records, whose positions already moved:
    position() and commit() point at the next record to be yielded, seeking one partition
    keeps the other's records still to come, and close() commits no further."""
    admin.create_topic(topic, partitions=2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    for tp in tps:
        for i in range(10):
            producer.send(topic, value=b"%d-%d" % (tp.partition, i), partition=tp.partition)
    producer.flush()

    def next_offsets(records):  # per partition: the offset after the last record yielded, else 0
        return {tp: max((r.offset + 1 for r in records if r.partition == tp.partition), default=0) for tp in tps}

    with Consumer(broker.address, group_id="g-" + topic, auto_offset_reset="earliest") as consumer:
        consumer.assign(tps)
        iterator = iter(consumer)
        yielded = [next(iterator) for _ in range(3)]
        expected = next_offsets(yielded)
        assert {tp: consumer.position(tp) for tp in tps} == expected
        consumer.commit()
        assert {tp: consumer.committed(tp) for tp in tps} == expected
        sought = TopicPartition(topic, yielded[0].partition)
        (other,) = [tp for tp in tps if tp != sought]
        consumer.seek(sought, 0)
        assert consumer.position(other) == expected[other]  # its records are still to come
        rest = [next(iterator) for _ in range(10 + 10 - expected[other])]
        assert sorted(r.offset for r in rest if r.partition == sought.partition) == list(range(10))
        assert sorted(r.offset for r in rest if r.partition == other.partition) == list(range(expected[other], 10))

    with Consumer(broker.address, group_id="g2-" + topic, auto_offset_reset="earliest") as consumer:
        consumer.assign(tps)
        iterator = iter(consumer)
        yielded = [next(iterator) for _ in range(3)]
    with Consumer(broker.address, group_id="g2-" + topic) as reader:
        assert {tp: reader.committed(tp) or 0 for tp in tps} == next_offsets(yielded)


def test_offset_out_of_range_policies(broker, admin, producer, topic):
    """auto_offset_reset none raises OffsetOutOfRangeError; earliest moves to the log start."""
    admin.create_topic(topic, config={"segment.bytes": "1024"})
    for i in range(50):
        producer.send(topic, value=b"%02d" % i)
    producer.flush()
    tp = TopicPartition(topic, 0)
    admin.delete_records({tp: 20})
    with Consumer(broker.address, auto_offset_reset="none") as consumer:
        consumer.assign([tp])
        with pytest.raises(OffsetOutOfRangeError):
            consumer.poll(timeout_ms=1000)  # no position at all
        consumer.seek(tp, 5)
        deadline = time.monotonic() + 10
        with pytest.raises(OffsetOutOfRangeError):
            while time.monotonic() < deadline:
                consumer.poll(timeout_ms=200)
        consumer.seek(tp, 45)
        assert [r.offset for r in consumer.poll(timeout_ms=5000)] == [45, 46, 47, 48, 49]
    with Consumer(broker.address, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 5)
        records = consumer.poll(timeout_ms=5000, max_records=1)
        assert records[0].offset == 20
        consumer.seek(tp, 10_000)
        assert consumer.poll(timeout_ms=5000, max_records=1)[0].offset == 20


def test_producer_refusals(broker, admin, producer, topic):
    """Missing topics, partitions and oversized records are refused with typed errors."""
    admin.create_topic(topic, partitions=2, config={"max.message.bytes": "2048"})
    with pytest.raises(TopicNotFoundError):
        producer.send(topic + "-missing", value=b"x")
    with pytest.raises(PartitionNotFoundError):
        producer.send(topic, value=b"x", partition=2)
    with pytest.raises(RecordTooLargeError):
        producer.send(topic, value=b"x" * 5000)
    with pytest.raises(TypeError):
        producer.send(topic, value="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        producer.send(topic, value=b"v", key="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        producer.send(topic, value=b"v", headers={1: b"x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        producer.send(topic, value=b"v", headers=[("k", "text")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at most 65535 headers"):  # was struct.error, untyped
        producer.send(topic, value=b"v", headers=[("h", b"")] * 65536)
    # Many small records batch up past max.message.bytes only as separate batches.
    futures = [producer.send(topic, value=b"y" * 500, partition=0) for _ in range(20)]
    assert [f.result(timeout=10).offset for f in futures] == list(range(20))


def test_records_to_a_topic_deleted_meanwhile_fail_with_topic_not_found(broker, admin, topic):
    """A batch for a topic deleted after its metadata was cached fails its futures."""
    admin.create_topic(topic)
    with Producer(broker.address, linger_ms=0) as producer:
        producer.send(topic, value=b"a").result(timeout=10)
        admin.delete_topic(topic)
        with pytest.raises(TopicNotFoundError):
            producer.send(topic, value=b"b").result(timeout=10)
        with pytest.raises(TopicNotFoundError):  # the cache was dropped: refused at send
            producer.send(topic, value=b"c")


def test_an_incompressible_record_at_the_size_limit_is_accepted_with_zstd(broker, admin, topic):
    """zstd's framing made an incompressible batch larger than its records: the largest
    record the producer's own check lets through was refused by the broker. A batch
    that compression does not shrink now goes uncompressed."""
    admin.create_topic(topic, config={"max.message.bytes": "4096"})
    with Producer(broker.address, compression="zstd") as producer:
        for size in range(4096, 3900, -1):  # down to the largest value the producer accepts
            try:
                future = producer.send(topic, value=os.urandom(size))
            except RecordTooLargeError:
                continue
            assert future.result(timeout=10).offset == 0
            break
        else:
            pytest.fail("the producer refused every size")


def test_consumer_refusals(broker, admin, topic):
    """Bad seeks fail at once; polling a missing topic raises TopicNotFoundError."""
    admin.create_topic(topic)
    tp = TopicPartition(topic, 0)
    with Consumer(broker.address) as consumer:
        with pytest.raises(NotAssignedError):
            consumer.poll(timeout_ms=10)
        consumer.assign([tp])
        with pytest.raises(ValueError):
            consumer.seek(tp, -1)
        with pytest.raises(NotAssignedError):
            consumer.seek(TopicPartition(topic, 1), 0)
        with pytest.raises(NotAssignedError):
            consumer.position(TopicPartition("other", 0))
        consumer.assign([TopicPartition(topic + "-missing", 0)])
        with pytest.raises(TopicNotFoundError):
            consumer.poll(timeout_ms=5000)
    with pytest.raises(ValueError):
        Consumer(broker.address, auto_offset_reset="sometimes")
    assert admin.describe_topic(topic).name == topic  # still serving


def test_concurrent_closes_do_the_work_once_and_each_returns_when_it_is_done(broker, admin, topic):
    """A second close() from another thread used to run on_revoke and the commit again
    (consumer) or return at once with records unresolved (producer)."""
    admin.create_topic(topic, partitions=2)
    producer = Producer(broker.address, linger_ms=50)
    futures = [producer.send(topic, b"v%d" % i, key=b"k%d" % i) for i in range(5000)]
    resolved_at_return = []

    def close_producer():
        producer.close()
        resolved_at_return.append(all(future.done() for future in futures))

    closers = [threading.Thread(target=close_producer) for _ in range(2)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(30)
    assert resolved_at_return == [True, True]

    revoked = []
    consumer = Consumer(broker.address, group_id="g-" + topic, auto_offset_reset="earliest")
    consumer.subscribe([topic], on_revoke=revoked.append)
    deadline = time.monotonic() + 20
    while len(consumer.assignment()) < 2 and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
    assert len(consumer.assignment()) == 2
    closers = [threading.Thread(target=consumer.close) for _ in range(2)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(30)
    assert len(revoked) == 1 and not any(closer.is_alive() for closer in closers)


def test_close_called_again_from_on_revoke_returns(broker, admin, topic):
    """on_revoke runs inside close(); a close() from it used to wait for the outer close
    forever (and before that, recursed)."""
    admin.create_topic(topic, partitions=1)
    consumer = Consumer(broker.address, group_id="g-" + topic)
    revoked = []

    def on_revoke(partitions):
        revoked.append(partitions)
        consumer.close()

    consumer.subscribe([topic], on_revoke=on_revoke)
    deadline = time.monotonic() + 20
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
    closer = threading.Thread(target=consumer.close)
    closer.start()
    closer.join(30)
    assert not closer.is_alive() and revoked == [[TopicPartition(topic, 0)]]


def test_close_with_the_broker_down_returns_within_seconds(tmp_path):
    """A group member's auto-commit before leaving used to wait default_api_timeout_ms
    (60 s) for a dead broker, and the fetcher outlived close() retrying a lookup; the
    commit and the leave now get a few seconds each and close() closes the transport
    before waiting for the fetcher."""
    broker = BrokerProcess(tmp_path / "data", tmp_path / "broker.log").start()
    try:
        with Admin(broker.address) as admin:
            admin.create_topic("t", partitions=1)
        # request_timeout_ms caps the close budget below CLOSE_TIMEOUT_MS: a quicker test
        consumer = Consumer(broker.address, group_id="g", auto_offset_reset="earliest", request_timeout_ms=2000)
        consumer.subscribe(["t"])
        deadline = time.monotonic() + 20
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100)
        assert consumer.assignment()
        broker.kill()
        started = time.monotonic()
        consumer.close()
        assert time.monotonic() - started < 20  # 2 s for the commit, 2 s for the leave, and the join
        assert not consumer._fetcher.is_alive()
    finally:
        broker.kill()


def test_a_consumer_rides_through_its_topic_being_deleted_and_created_again(broker, admin, topic):
    """A deleted topic's TOPIC_NOT_FOUND used to stick to its partitions: poll raised it at
    once, for ever (hundreds of thousands of times a minute), even after the topic was
    created again, and the consumer's other topics got nothing either. poll now reports
    it once per lookup (backing off), the other topics go on, and once the topic is back
    the consumer resumes per auto_offset_reset."""
    other = topic + "-other"
    admin.create_topic(topic)
    admin.create_topic(other)
    with Producer(broker.address, linger_ms=1) as producer, \
            Consumer(broker.address, auto_offset_reset="earliest", retry_backoff_ms=50) as consumer:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(other, 0)])
        producer.send(topic, b"old").result(timeout=10)
        admin.delete_topic(topic)
        admin.create_topic(topic)  # the same name again: it starts empty, at offset 0
        admin.delete_topic(topic)
        errors, got = 0, []

        def poll_until(done, what):
            nonlocal errors
            deadline = time.monotonic() + 20
            while not done() and time.monotonic() < deadline:
                try:
                    got.extend((r.topic, r.value) for r in consumer.poll(timeout_ms=200))
                except TopicNotFoundError:
                    errors += 1
            assert done(), what

        producer.send(other, b"still flowing").result(timeout=10)
        poll_until(lambda: (other, b"still flowing") in got, "the other topic's record while the topic is gone")
        admin.create_topic(topic)
        producer.send(topic, b"new").result(timeout=10)
        poll_until(lambda: (topic, b"new") in got, "the new topic's record")
        assert errors < 100, errors  # reported per lookup with a backoff, not in a loop
