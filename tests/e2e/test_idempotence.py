"""The idempotent producer end to end: a reply lost after the append costs no duplicate.

The SDK talks to the broker through ``proxy.TcpProxy``, which can throw away the
broker's replies while the requests still arrive: the broker appends, the client never
hears of it, times out or loses the connection, and retries the same batch (same
producer id and sequence numbers). The log is read straight from the broker.
"""

from __future__ import annotations

import time

import grpc
import pytest

from broker_process import BrokerProcess
from logd.broker.producer_state import SNAPSHOT_FILE
from logd_sdk import (
    Admin, BrokerUnavailableError, LogdTimeoutError, OutOfOrderSequenceError, Producer, ProducerFencedError,
)
from logd_sdk import codec
from logd_sdk.protocol import log_pb2, log_pb2_grpc
from proxy import TcpProxy

DEADLINE_S = 30.0


def wait_until(condition, what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling interval


def log_end_offset(address: str, topic: str) -> int:
    with Admin(address) as admin:
        return admin.describe_topic(topic).partitions[0].log_end_offset


def read_log(address: str, topic: str) -> list[tuple[int, bytes, codec.BatchHeader]]:
    """(offset, value, batch header) of every record of partition 0, straight from the broker."""
    records = []
    offset = 0
    with grpc.insecure_channel(address) as channel:
        stub = log_pb2_grpc.LogServiceStub(channel)
        while True:
            request = log_pb2.FetchRequest(partitions=[
                log_pb2.FetchRequest.PartitionRequest(topic=topic, partition=0, offset=offset)])
            (data,) = stub.Fetch(request, timeout=10).partitions
            for position, _ in codec.iter_batches(data.batches):
                header, decoded = codec.decode_batch(data.batches, position)
                records.extend((r.offset, r.value, header) for r in decoded if r.offset >= offset)
            if not records or records[-1][0] + 1 >= data.high_watermark:
                return records
            offset = records[-1][0] + 1


def values(address: str, topic: str) -> list[bytes]:
    return [value for _, value, _ in read_log(address, topic)]


def producer(address: str, **options) -> Producer:
    settings = dict(linger_ms=0, request_timeout_ms=5000, delivery_timeout_ms=60000, retry_backoff_ms=50,
                    retry_backoff_max_ms=500, max_block_ms=10000)
    settings.update(options)
    return Producer(address, **settings)


def lose_one_reply(broker_address: str, topic: str, *, enable_idempotence: bool) -> tuple[int, list[bytes]]:
    """Send one record whose reply is lost after the append, then let the client retry on
    a new connection. Returns the record's acknowledged offset and the log's values."""
    with TcpProxy(broker_address) as proxy, producer(proxy.address, enable_idempotence=enable_idempotence) as p:
        p.send(topic, b"warm-up").result(DEADLINE_S)  # connection, metadata, producer id in place
        proxy.drop_replies()
        future = p.send(topic, b"once")
        wait_until(lambda: log_end_offset(broker_address, topic) == 2, "the broker to append")
        proxy.sever()  # the client sees its connection reset, mid-call: UNAVAILABLE
        offset = future.result(DEADLINE_S).offset
    return offset, values(broker_address, topic)


def test_a_reply_lost_after_the_append_costs_no_duplicate(broker, topic):
    """The retry of an appended batch whose reply was lost is answered with its offset and not written again."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    offset, found = lose_one_reply(broker.address, topic, enable_idempotence=True)
    assert (offset, found) == (1, [b"warm-up", b"once"])


def test_without_idempotence_the_same_loss_duplicates(broker, topic):
    """Control: with enable_idempotence=False the same lost reply leaves two copies (the
    scenario above really makes the client resend an appended batch)."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    offset, found = lose_one_reply(broker.address, topic, enable_idempotence=False)
    assert found == [b"warm-up", b"once", b"once"] and offset == 2
    assert all(header.producer_id == codec.NO_PRODUCER_ID for _, _, header in read_log(broker.address, topic))


def test_a_request_that_times_out_is_retried_without_duplicating(broker, topic):
    """Replies blackholed: the call hits its deadline and is retried (its reply lost too),
    then retried again on a fresh connection; every retry is a duplicate, one copy stays."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    with TcpProxy(broker.address) as proxy, producer(proxy.address, request_timeout_ms=500) as p:
        p.send(topic, b"warm-up").result(DEADLINE_S)
        calls = proxy.calls_started
        proxy.drop_replies()
        future = p.send(topic, b"once")
        proxy.wait_for_calls(calls + 2, DEADLINE_S)  # the first try and a retry after its deadline
        assert log_end_offset(broker.address, topic) == 2
        proxy.sever()
        assert future.result(DEADLINE_S).offset == 1
        assert proxy.calls_started >= calls + 3
        assert p.send(topic, b"after").result(DEADLINE_S).offset == 2
    assert values(broker.address, topic) == [b"warm-up", b"once", b"after"]


def test_a_batch_appended_just_before_a_kill_9_is_not_written_again(tmp_path):
    """The broker appends a batch, is SIGKILLed before its reply reaches the client, and
    restarts; the retried batch is recognised from the log's batch headers and answered
    with its original offsets: exactly one copy of each record."""
    broker = BrokerProcess(tmp_path / "data", tmp_path / "broker.log").start()
    try:
        with Admin(broker.address) as admin:
            admin.create_topic("orders")
        with TcpProxy(broker.address) as proxy, producer(proxy.address, linger_ms=100,
                                                          delivery_timeout_ms=90000) as p:
            warm = [p.send("orders", b"warm-%d" % i) for i in range(3)]
            assert [f.result(DEADLINE_S).offset for f in warm] == [0, 1, 2]
            proxy.drop_replies()
            futures = [p.send("orders", b"kill-%d" % i) for i in range(5)]  # one batch (linger)
            wait_until(lambda: log_end_offset(broker.address, "orders") == 8, "the broker to append")
            broker.kill()
            assert not any(f.done() for f in futures)  # appended, fsynced, never acknowledged
            # No snapshot was written (no roll, no clean shutdown): the batch headers are
            # all the restarted broker has to recognise the retry.
            assert not (tmp_path / "data" / "orders-0" / SNAPSHOT_FILE).exists()
            proxy.sever()
            broker.start()
            assert [f.result(60).offset for f in futures] == [3, 4, 5, 6, 7]
            assert p.send("orders", b"after").result(DEADLINE_S).offset == 8
        records = read_log(broker.address, "orders")
        assert [value for _, value, _ in records] == [b"warm-%d" % i for i in range(3)] + \
            [b"kill-%d" % i for i in range(5)] + [b"after"]
        assert [offset for offset, _, _ in records] == list(range(9))
    finally:
        broker.kill()


def test_batches_carry_the_producer_id_and_consecutive_sequences(broker, topic):
    """The SDK numbers each partition's batches: base sequence = records sent before."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    with producer(broker.address, linger_ms=50) as p:
        for size in (3, 1, 4):
            futures = [p.send(topic, b"x") for _ in range(size)]
            p.flush()
            assert all(f.exception() is None for f in futures)
    headers = {offset: header for offset, _, header in read_log(broker.address, topic)}
    batches = sorted({(h.base_offset, h.producer_id, h.producer_epoch, h.base_sequence) for h in headers.values()})
    assert [(base, sequence) for base, _, _, sequence in batches] == [(0, 0), (3, 3), (4, 4)]
    assert len({(pid, epoch) for _, pid, epoch, _ in batches}) == 1 and batches[0][1] >= 0


def test_a_sequence_gap_fails_the_batch_with_a_typed_error_and_the_producer_recovers(broker, topic):
    """When the broker reports OUT_OF_ORDER_SEQUENCE the record's future fails with
    OutOfOrderSequenceError; the producer takes a new producer id and goes on."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    with producer(broker.address) as p:
        assert p.send(topic, b"a").result(DEADLINE_S).offset == 0
        (_, _, header), = read_log(broker.address, topic)
        # Someone else writes with this producer id and sequences 1-2: the producer's next
        # batch (sequence 1) now leaves a gap in the broker's view.
        intruder = codec.encode_batch([(1, None, b"x1", None), (1, None, b"x2", None)],
                                      producer_id=header.producer_id, producer_epoch=header.producer_epoch,
                                      base_sequence=1)
        with grpc.insecure_channel(broker.address) as channel:
            request = log_pb2.ProduceRequest(partitions=[
                log_pb2.ProduceRequest.PartitionData(topic=topic, partition=0, batches=intruder)])
            (result,) = log_pb2_grpc.LogServiceStub(channel).Produce(request, timeout=10).results
            assert result.base_offset == 1
        with pytest.raises(OutOfOrderSequenceError, match="expected sequence 3, got 1"):
            p.send(topic, b"b").result(DEADLINE_S)
        assert p.send(topic, b"c").result(DEADLINE_S).offset == 3
    records = read_log(broker.address, topic)
    assert [value for _, value, _ in records] == [b"a", b"x1", b"x2", b"c"]
    assert records[-1][2].producer_id != header.producer_id and records[-1][2].base_sequence == 0


def inject(address: str, topic: str, data: bytes) -> log_pb2.ProduceResponse.PartitionResult:
    with grpc.insecure_channel(address) as channel:
        request = log_pb2.ProduceRequest(partitions=[
            log_pb2.ProduceRequest.PartitionData(topic=topic, partition=0, batches=data)])
        (result,) = log_pb2_grpc.LogServiceStub(channel).Produce(request, timeout=10).results
        return result


def test_a_fenced_producer_gets_a_typed_error_and_recovers(broker, topic):
    """A newer epoch of the producer's id fences it: ProducerFencedError, then a new producer id."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    with producer(broker.address) as p:
        assert p.send(topic, b"a").result(DEADLINE_S).offset == 0
        (_, _, header), = read_log(broker.address, topic)
        newer = codec.encode_batch([(1, None, b"newer", None)], producer_id=header.producer_id,
                                   producer_epoch=header.producer_epoch + 1, base_sequence=0)
        assert inject(broker.address, topic, newer).base_offset == 1
        with pytest.raises(ProducerFencedError):
            p.send(topic, b"b").result(DEADLINE_S)
        assert p.send(topic, b"c").result(DEADLINE_S).offset == 2
    assert values(broker.address, topic) == [b"a", b"newer", b"c"]


def test_a_batch_that_failed_with_an_unknown_outcome_does_not_swallow_the_next_one(broker, topic):
    """A batch appended whose every reply was lost fails at its delivery timeout; the
    producer cannot know it was written, so it must not number the next batch with the
    same sequences (the broker would take it for a duplicate and drop it): it takes a new
    producer id."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    with TcpProxy(broker.address) as proxy, producer(proxy.address, request_timeout_ms=300,
                                                      delivery_timeout_ms=1500) as p:
        p.send(topic, b"warm-up").result(DEADLINE_S)
        proxy.drop_replies()
        lost = p.send(topic, b"lost")
        assert isinstance(lost.exception(DEADLINE_S), (LogdTimeoutError, BrokerUnavailableError))
        proxy.sever()
        assert p.send(topic, b"next").result(DEADLINE_S).offset == 2
    records = read_log(broker.address, topic)
    assert [value for _, value, _ in records] == [b"warm-up", b"lost", b"next"]
    assert records[2][2].producer_id != records[0][2].producer_id
