"""LogService over gRPC: produce, fetch (long-poll, budgets), list offsets, producer ids."""

from __future__ import annotations

import threading
import time

import grpc

from logd_sdk import codec
from logd_sdk.protocol import common_pb2, log_pb2, topics_pb2

from .helpers import RPC_TIMEOUT_S, batch, connect, decode_values, error_of, start_server

Code = grpc.StatusCode


def test_produce_fetch_round_trip(client):
    """Produced batches come back byte-identical apart from the assigned base offsets."""
    client.create("rt", 1)
    first = batch(b"a", b"b", b"c", keys=[b"k1", None, b"k3"])
    second = batch(b"d", codec_id=codec.CODEC_NONE)
    r1 = client.produce("rt", 0, first)
    r2 = client.produce("rt", 0, second)
    assert (r1.error.code, r1.base_offset, r2.base_offset) == (common_pb2.NONE, 0, 3)
    assert r1.log_append_time_ms > 0 and r1.log_start_offset == 0
    fetched = client.fetch("rt", 0, 0)
    assert (fetched.error.code, fetched.high_watermark, fetched.log_start_offset) == (common_pb2.NONE, 4, 0)
    assert fetched.batches == codec.with_base_offset(first, 0) + codec.with_base_offset(second, 3)
    assert decode_values(client.fetch("rt", 0, 1).batches, 1) == [(1, b"b"), (2, b"c"), (3, b"d")]
    assert client.fetch("rt", 0, 4).batches == b""  # at the end: empty, not an error


def test_several_batches_in_one_partition_data(client):
    """Concatenated batches in one request get consecutive offsets."""
    client.create("multi", 1)
    result = client.produce("multi", 0, batch(b"1", b"2") + batch(b"3") + batch(b"4", b"5"))
    assert result.base_offset == 0
    assert decode_values(client.fetch("multi", 0, 0).batches) == [(i, str(i + 1).encode()) for i in range(5)]


def test_multi_partition_produce_reports_each(client):
    """One request spans partitions and topics; failures are per partition and do not block the rest."""
    client.create("m1", 3)
    client.create("m2", 1)
    data = log_pb2.ProduceRequest.PartitionData
    request = log_pb2.ProduceRequest(partitions=[
        data(topic="m1", partition=0, batches=batch(b"a")),
        data(topic="m1", partition=2, batches=batch(b"b", b"c")),
        data(topic="m2", partition=0, batches=batch(b"d")),
        data(topic="nope", partition=0, batches=batch(b"e")),
        data(topic="m1", partition=3, batches=batch(b"f")),
        data(topic="m1", partition=2, batches=batch(b"g")),
    ])
    results = client.log.Produce(request, timeout=RPC_TIMEOUT_S).results
    assert [(r.topic, r.partition, r.error.code, r.base_offset) for r in results[:3]] == [
        ("m1", 0, common_pb2.NONE, 0), ("m1", 2, common_pb2.NONE, 0), ("m2", 0, common_pb2.NONE, 0)]
    assert results[3].error.code == common_pb2.TOPIC_NOT_FOUND and "nope" in results[3].error.message
    assert results[4].error.code == common_pb2.PARTITION_NOT_FOUND
    assert (results[5].error.code, results[5].base_offset) == (common_pb2.NONE, 2)
    assert [p.log_end_offset for p in client.describe("m1").partitions] == [1, 0, 3]


def test_corrupt_and_oversize_batches_are_refused(client):
    """A flipped byte is CORRUPT_BATCH, a batch over max.message.bytes is RECORD_TOO_LARGE; nothing is appended."""
    client.create("bad", 1, max_message_bytes="2000")
    good = batch(b"x" * 100, codec_id=codec.CODEC_NONE)
    flipped = bytearray(good)
    flipped[-1] ^= 0xFF
    truncated = good[:-5]
    large = batch(bytes(3000), codec_id=codec.CODEC_NONE)
    assert client.produce("bad", 0, bytes(flipped)).error.code == common_pb2.CORRUPT_BATCH
    assert client.produce("bad", 0, truncated).error.code == common_pb2.CORRUPT_BATCH
    assert client.produce("bad", 0, good + bytes(flipped)).error.code == common_pb2.CORRUPT_BATCH
    result = client.produce("bad", 0, large)
    assert result.error.code == common_pb2.RECORD_TOO_LARGE and "max.message.bytes" in result.error.message
    assert client.produce("bad", 0, b"").error.code == common_pb2.INVALID_REQUEST
    assert client.describe("bad").partitions[0].log_end_offset == 0
    assert client.produce("bad", 0, good).base_offset == 0  # still serving


def test_empty_requests_are_invalid_request(client):
    for call in (lambda: client.log.Produce(log_pb2.ProduceRequest(), timeout=RPC_TIMEOUT_S),
                 lambda: client.log.Fetch(log_pb2.FetchRequest(), timeout=RPC_TIMEOUT_S),
                 lambda: client.log.ListOffsets(log_pb2.ListOffsetsRequest(), timeout=RPC_TIMEOUT_S)):
        assert error_of(call)[:2] == (Code.INVALID_ARGUMENT, "INVALID_REQUEST")


def test_fetch_errors_per_partition(client):
    """Out-of-range offsets, unknown topics and partitions are reported per partition at once."""
    client.create("fe", 1)
    client.produce("fe", 0, batch(b"a", b"b"))
    started = time.monotonic()
    assert client.fetch("fe", 0, 3, max_wait_ms=5000).error.code == common_pb2.OFFSET_OUT_OF_RANGE
    assert client.fetch("fe", 0, -1, max_wait_ms=5000).error.code == common_pb2.OFFSET_OUT_OF_RANGE
    assert client.fetch("ghost", 0, 0, max_wait_ms=5000).error.code == common_pb2.TOPIC_NOT_FOUND
    assert client.fetch("fe", 1, 0, max_wait_ms=5000).error.code == common_pb2.PARTITION_NOT_FOUND
    assert time.monotonic() - started < 4  # errors do not wait for max_wait_ms
    out_of_range = client.fetch("fe", 0, 3)
    assert "3" in out_of_range.error.message


def test_long_poll_wakes_when_data_arrives(client, server):
    """A fetch waiting at the log end answers within a few ms of a produce to that partition."""
    client.create("tail", 2)
    answer: dict = {}

    def poll():
        request = log_pb2.FetchRequest(partitions=[
            log_pb2.FetchRequest.PartitionRequest(topic="tail", partition=0, offset=0),
            log_pb2.FetchRequest.PartitionRequest(topic="tail", partition=1, offset=0)], max_wait_ms=20_000)
        answer["response"] = client.log.Fetch(request, timeout=30)
        answer["at"] = time.monotonic()

    thread = threading.Thread(target=poll)
    thread.start()
    partition = server.broker.topics.get("tail").partitions[1]
    deadline = time.monotonic() + 10
    while partition.waiter_count == 0:  # the fetch is parked, waiting for data
        assert time.monotonic() < deadline and "response" not in answer
        time.sleep(0.001)
    acked = time.monotonic()
    client.produce("tail", 1, batch(b"hello"))
    thread.join(timeout=10)
    assert not thread.is_alive()
    latency_ms = (answer["at"] - acked) * 1000
    assert latency_ms < 5000, latency_ms  # woken by the append, not at max_wait_ms (20 s)
    (p0, p1) = answer["response"].partitions
    assert p0.batches == b"" and decode_values(p1.batches) == [(0, b"hello")]


def test_long_poll_times_out_empty(client):
    """With no data, a fetch answers empty after about max_wait_ms."""
    client.create("quiet", 1)
    started = time.monotonic()
    fetched = client.fetch("quiet", 0, 0, max_wait_ms=200)
    elapsed = time.monotonic() - started
    assert fetched.batches == b"" and fetched.error.code == common_pb2.NONE
    assert 0.18 <= elapsed < 3, elapsed


def test_long_poll_respects_call_deadline(client):
    """A max_wait_ms longer than the call's deadline still answers (empty) before the deadline."""
    client.create("dl", 1)
    fetched = client.fetch("dl", 0, 0, max_wait_ms=60_000, timeout=3)
    assert fetched.batches == b""


def test_fetch_budgets(client):
    """max_bytes bounds the response by whole batches, except one first batch larger than the budget."""
    client.create("budget", 2)
    for i in range(10):
        client.produce("budget", 0, batch(bytes([i]) * 1000, codec_id=codec.CODEC_NONE))
        client.produce("budget", 1, batch(bytes([i]) * 1000, codec_id=codec.CODEC_NONE))
    size = len(batch(bytes(1000), codec_id=codec.CODEC_NONE))
    assert len(client.fetch("budget", 0, 0, partition_max_bytes=3 * size + 10).batches) == 3 * size
    assert len(client.fetch("budget", 0, 0, partition_max_bytes=10).batches) == size  # one oversized first batch
    request = log_pb2.FetchRequest(partitions=[
        log_pb2.FetchRequest.PartitionRequest(topic="budget", partition=0, offset=0, max_bytes=1 << 20),
        log_pb2.FetchRequest.PartitionRequest(topic="budget", partition=1, offset=0, max_bytes=1 << 20),
    ], max_bytes=5 * size + 10)
    p0, p1 = client.log.Fetch(request, timeout=RPC_TIMEOUT_S).partitions
    assert (len(p0.batches), len(p1.batches)) == (5 * size, 0)
    assert p1.high_watermark == 10
    request.max_bytes = 7 * size
    p0, p1 = client.log.Fetch(request, timeout=RPC_TIMEOUT_S).partitions
    assert (len(p0.batches), len(p1.batches)) == (7 * size, 0)
    request.partitions[0].offset = 8
    p0, p1 = client.log.Fetch(request, timeout=RPC_TIMEOUT_S).partitions
    assert (len(p0.batches), len(p1.batches)) == (2 * size, 5 * size)


def test_fetch_from_middle_of_batch(client):
    """A fetch from an offset inside a batch returns that whole batch; the reader skips below it."""
    client.create("mid", 1)
    client.produce("mid", 0, batch(b"a", b"b", b"c"))
    fetched = client.fetch("mid", 0, 2)
    assert decode_values(fetched.batches) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert decode_values(fetched.batches, 2) == [(2, b"c")]


def test_list_offsets(client):
    """Earliest, latest and by-time lookups; a time after every record gives -1."""
    client.create("lo", 1)
    client.produce("lo", 0, batch(b"a", b"b", timestamp_ms=1_000))
    client.produce("lo", 0, batch(b"c", timestamp_ms=2_000))
    client.produce("lo", 0, batch(b"d", timestamp_ms=3_000))
    assert client.list_offset("lo", 0, -2).offset == 0
    assert client.list_offset("lo", 0, -1).offset == 4
    by_time = client.list_offset("lo", 0, 1_500)
    assert (by_time.offset, by_time.timestamp_ms) == (2, 2_000)
    assert (client.list_offset("lo", 0, 0).offset, client.list_offset("lo", 0, 0).timestamp_ms) == (0, 1_000)
    assert client.list_offset("lo", 0, 3_000).offset == 3
    after = client.list_offset("lo", 0, 3_001)
    assert (after.error.code, after.offset, after.timestamp_ms) == (common_pb2.NONE, -1, -1)
    assert client.list_offset("lo", 0, -3).error.code == common_pb2.INVALID_REQUEST
    assert client.list_offset("lo", 5, -1).error.code == common_pb2.PARTITION_NOT_FOUND
    assert client.list_offset("nope", 0, -1).error.code == common_pb2.TOPIC_NOT_FOUND


def test_init_producer_id_increases(client):
    ids = [client.log.InitProducerId(log_pb2.InitProducerIdRequest(), timeout=RPC_TIMEOUT_S) for _ in range(3)]
    assert [r.producer_id for r in ids] == sorted({r.producer_id for r in ids})
    assert all(r.producer_epoch == 0 for r in ids)


def test_concurrent_producers_get_disjoint_offsets(client):
    """Producers in parallel threads get every offset exactly once."""
    client.create("par", 1)
    offsets: list[int] = []
    lock = threading.Lock()

    def produce():
        for _ in range(20):
            result = client.produce("par", 0, batch(b"a", b"b"))
            with lock:
                offsets.extend((result.base_offset, result.base_offset + 1))

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(offsets) == list(range(160))


def test_delete_topic_answers_waiting_fetch(client, server):
    """A fetch parked on a topic that gets deleted answers at once with TOPIC_NOT_FOUND."""
    client.create("doomed", 1)
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.setdefault("r", client.fetch("doomed", 0, 0, max_wait_ms=20_000)))
    thread.start()
    partition = server.broker.topics.get("doomed").partitions[0]
    deadline = time.monotonic() + 10
    while partition.waiter_count == 0:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    started = time.monotonic()
    client.topics.DeleteTopic(topics_pb2.DeleteTopicRequest(name="doomed"), timeout=RPC_TIMEOUT_S)
    thread.join(timeout=10)
    assert time.monotonic() - started < 2
    assert answer["r"].error.code == common_pb2.TOPIC_NOT_FOUND


def test_waiting_fetches_never_take_every_worker(data_dir):
    """With more parked fetches than spare workers, the extra fetches answer at once and produce still works."""
    server = start_server(data_dir, max_workers=20)  # 2 fetches may wait (2 streams), 16 workers stay free
    client = connect(server)
    try:
        client.create("busy", 1)
        threads = [threading.Thread(target=client.fetch, args=("busy", 0, 0),
                                    kwargs={"max_wait_ms": 20_000}) for _ in range(2)]
        for thread in threads:
            thread.start()
        partition = server.broker.topics.get("busy").partitions[0]
        deadline = time.monotonic() + 10
        while partition.waiter_count < 2:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        started = time.monotonic()
        assert client.fetch("busy", 0, 0, max_wait_ms=20_000).batches == b""  # no slot left: at once
        assert time.monotonic() - started < 2
        assert client.produce("busy", 0, batch(b"x")).base_offset == 0
        for thread in threads:
            thread.join(timeout=10)
            assert not thread.is_alive()
    finally:
        client.channel.close()
        server.stop()
