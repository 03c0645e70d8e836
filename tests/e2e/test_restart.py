"""Durability across broker restarts: topics, data, and clients that ride through them."""

import os
import signal
import time

import pytest

from logd_sdk import Admin, Consumer, CorruptRecordError, IllegalStateError, Producer, TopicPartition, codec


def test_restart_keeps_topics_and_data(broker, topic):
    """After SIGTERM and a restart on the same data dir, topics, configs and records remain."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=2, config={"retention.ms": "123456"})
    with Producer(broker.address) as producer:
        acked = [producer.send(topic, value=b"%d" % i, key=b"k%d" % (i % 7)) for i in range(500)]
        producer.flush()
        acked = [f.result() for f in acked]
    assert broker.stop() == 0  # graceful shutdown exits 0
    broker.start()
    with Admin(broker.address) as admin:
        description = admin.describe_topic(topic)
    assert description.config["retention.ms"] == "123456"
    assert sum(p.log_end_offset for p in description.partitions) == 500
    with Consumer(broker.address, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 500 and time.monotonic() < deadline:
            got.extend(consumer.poll(timeout_ms=200))
    assert sorted((r.partition, r.offset) for r in got) == sorted((m.partition, m.offset) for m in acked)


def test_acknowledged_records_survive_kill_9(broker, topic):
    """Records whose futures resolved are there after SIGKILL and recovery."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    with Producer(broker.address) as producer:
        offsets = [producer.send(topic, value=b"%d" % i).result(timeout=10).offset for i in range(50)]
    broker.kill()
    broker.start()
    with Admin(broker.address) as admin:
        assert admin.describe_topic(topic).partitions[0].log_end_offset >= offsets[-1] + 1


def test_producer_and_consumer_ride_through_a_restart(broker, topic):
    """Sends during a restart are retried (UNAVAILABLE) and delivered; the consumer resumes."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    tp = TopicPartition(topic, 0)
    with Producer(broker.address, linger_ms=0, delivery_timeout_ms=60000) as producer, \
            Consumer(broker.address, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        producer.send(topic, value=b"before").result(timeout=10)
        broker.stop()
        during = producer.send(topic, value=b"during")  # metadata cached: queued and retried
        broker.start()
        assert during.result(timeout=30).offset == 1
        values = []
        deadline = time.monotonic() + 20
        while len(values) < 2 and time.monotonic() < deadline:
            values.extend(r.value for r in consumer.poll(timeout_ms=200))
    assert values == [b"before", b"during"]


def test_close_with_a_timeout_returns_in_time_while_the_broker_hangs(broker, topic):
    """close(timeout_ms) keeps to its timeout with a request in flight to a broker that does
    not answer (it waited 5 s more for the sender thread), and the unanswered record fails
    with IllegalStateError."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    producer = Producer(broker.address, linger_ms=0)
    producer.send(topic, b"warm").result(10)
    os.kill(broker.pid, signal.SIGSTOP)  # our own broker subprocess, resumed below
    try:
        future = producer.send(topic, b"unanswered")
        deadline = time.monotonic() + 10
        while producer._sender._blocking_since is None:  # the request is in flight
            assert time.monotonic() < deadline, "the record was never sent"
            time.sleep(0.005)  # polling interval
        started = time.monotonic()
        producer.close(timeout_ms=300)
        assert time.monotonic() - started < 3  # the timeout and the sender noticing, not 5 s more
        with pytest.raises(IllegalStateError):
            future.result(1)
    finally:
        os.kill(broker.pid, signal.SIGCONT)


def test_records_before_a_batch_corrupted_on_disk_are_returned_before_its_error(broker, topic):
    """A fetch answer holding good batches then one whose CRC fails used to raise at once
    and drop the good ones: a consumer never got past them. Kafka returns them first."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=1)
    with Producer(broker.address, compression="none") as producer:
        for batch in range(3):  # offsets 0-9, 10-19, 20-29: one batch each
            for i in range(10):
                producer.send(topic, value=b"rec-%d" % (batch * 10 + i))
            producer.flush()
    assert broker.stop() == 0
    (segment,) = (broker.data_dir / f"{topic}-0").glob("*.log")
    data = bytearray(segment.read_bytes())
    position, header = list(codec.iter_batches(bytes(data)))[2]
    data[position + header.size - 1] ^= 0xFF  # the third batch's last byte: its CRC fails
    segment.write_bytes(bytes(data))
    broker.start()
    with Consumer(broker.address, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition(topic, 0)])
        got = []
        deadline = time.monotonic() + 20
        with pytest.raises(CorruptRecordError, match="at offset 20"):
            while time.monotonic() < deadline:
                got.extend(record.offset for record in consumer.poll(timeout_ms=200))
        assert got == list(range(20))
