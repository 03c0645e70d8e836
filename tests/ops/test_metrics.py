"""The Prometheus endpoint: figures scraped over HTTP against what the test did."""

from __future__ import annotations

import socket

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logd.server import BrokerServer
from logd.server.metrics import count_records
from logd.storage import files
from logd_sdk import codec
from logd_sdk.protocol import topics_pb2

from server.helpers import batch, error_of
from .helpers import (
    FakeClock, commit, describe_group, groups_stub, join, scrape, scrape_text, start_metrics_server, value,
)

T0_MS = 1_700_000_000_000
ALLOWED_LABELS = {"topic", "partition", "group", "method", "code", "version", "le"}  # le: histogram buckets


@pytest.fixture
def clock():
    return FakeClock(T0_MS + 60_000)


@pytest.fixture
def server(tmp_path, clock):
    server = start_metrics_server(tmp_path / "data", clock_ms=clock, retention_check_interval_ms=600_000)
    yield server
    server.stop()


def _plain_batch(records: int, timestamp_ms: int = T0_MS) -> bytes:
    return batch(*[b"v" * 50] * records, timestamp_ms=timestamp_ms, codec_id=codec.CODEC_NONE)


def _fetch_all(client, topic: str, partition: int, end: int) -> int:
    """Fetch from 0 to ``end`` in whole batches; returns the bytes received."""
    offset = received = 0
    while offset < end:
        data = client.fetch(topic, partition, offset, max_bytes=4096, partition_max_bytes=4096).batches
        assert data
        received += len(data)
        for _, header in codec.iter_batches(data):
            offset = header.base_offset + header.last_offset_delta + 1
    return received


def test_records_and_bytes_in_and_out_and_partition_gauges(server, client, tmp_path):
    """Per-partition counters equal what was produced and fetched, and the gauges equal the log's state."""
    client.create("orders", 2, segment_bytes="1024")
    sent = [_plain_batch(5) for _ in range(20)]
    for data in sent:
        client.produce("orders", 0, data)
    client.produce("orders", 1, _plain_batch(2) + _plain_batch(4))  # two batches in one request
    received = _fetch_all(client, "orders", 0, 100)

    samples = scrape(server.metrics_address)
    p0, p1 = {"topic": "orders", "partition": 0}, {"topic": "orders", "partition": 1}
    assert value(samples, "logd_partition_records_in_total", **p0) == 100
    assert value(samples, "logd_partition_bytes_in_total", **p0) == sum(map(len, sent))
    assert value(samples, "logd_partition_records_in_total", **p1) == 6
    assert value(samples, "logd_partition_records_out_total", **p0) == 100
    assert value(samples, "logd_partition_bytes_out_total", **p0) == received
    assert value(samples, "logd_partition_records_out_total", **p1) == 0  # never fetched
    assert value(samples, "logd_partition_log_end_offset", **p0) == 100
    assert value(samples, "logd_partition_log_end_offset", **p1) == 6
    assert value(samples, "logd_partition_log_start_offset", **p0) == 0
    sizes = {p.partition: p.size_bytes for p in client.describe("orders").partitions}
    assert value(samples, "logd_partition_size_bytes", **p0) == sizes[0] == sum(map(len, sent))
    segment_files = list((tmp_path / "data" / "orders-0").glob("*.log"))
    assert len(segment_files) > 3  # segment.bytes 1024 made it roll
    assert value(samples, "logd_partition_segments", **p0) == len(segment_files)


def test_deleted_topic_leaves_no_series(server, client):
    """After delete_topic its partitions' series (gauges and counters) are gone from the next scrape."""
    client.create("short-lived", 1)
    client.produce("short-lived", 0, _plain_batch(3))
    assert value(scrape(server.metrics_address), "logd_partition_records_in_total",
                 topic="short-lived", partition=0) == 3
    client.topics.DeleteTopic(topics_pb2.DeleteTopicRequest(name="short-lived"), timeout=10)
    text = scrape_text(server.metrics_address)
    assert 'topic="short-lived"' not in text


def test_group_lag_and_oldest_unconsumed_age(server, client, clock):
    """Committed offset, lag and the age of the record at the committed offset follow commits and the clock."""
    client.create("events", 1)
    for i in range(10):
        client.produce("events", 0, _plain_batch(1, timestamp_ms=T0_MS + i * 1000))
    groups = groups_stub(client.channel)
    commit(groups, "billing", "events", 0, 4)
    labels = {"group": "billing", "topic": "events", "partition": 0}

    samples = scrape(server.metrics_address)
    assert value(samples, "logd_group_committed_offset", **labels) == 4
    assert value(samples, "logd_group_lag_records", **labels) == 6
    (described,) = describe_group(groups, "billing").offsets
    assert described.lag == 6  # the same figure as `logd group describe`
    # Record 4 was created at T0 + 4 s; the clock says T0 + 60 s.
    assert value(samples, "logd_group_oldest_unconsumed_age_seconds", **labels) == pytest.approx(56.0)
    assert value(samples, "logd_group_members", group="billing") == 0

    clock.advance(5000)  # nobody consumes: the oldest unconsumed record ages
    assert value(scrape(server.metrics_address), "logd_group_oldest_unconsumed_age_seconds",
                 **labels) == pytest.approx(61.0)

    commit(groups, "billing", "events", 0, 7)
    samples = scrape(server.metrics_address)
    assert value(samples, "logd_group_lag_records", **labels) == 3
    assert value(samples, "logd_group_oldest_unconsumed_age_seconds", **labels) == pytest.approx(58.0)

    commit(groups, "billing", "events", 0, 10)
    samples = scrape(server.metrics_address)
    assert value(samples, "logd_group_lag_records", **labels) == 0
    assert value(samples, "logd_group_oldest_unconsumed_age_seconds", **labels) == 0


def test_members_counted_without_member_labels(server, client):
    """A joined member shows in logd_group_members, and no logd series carries a label beyond the bounded set."""
    client.create("jobs", 2)
    client.produce("jobs", 0, _plain_batch(2))
    groups = groups_stub(client.channel)
    joined = join(groups, "workers", ["jobs"])
    assert joined.member_id
    samples = scrape(server.metrics_address)
    assert value(samples, "logd_group_members", group="workers") == 1
    for name, labels in samples:
        if name.startswith("logd_"):
            assert {key for key, _ in labels} <= ALLOWED_LABELS, (name, labels)
    assert joined.member_id not in scrape_text(server.metrics_address)


def test_rpc_requests_errors_and_latency(server, client):
    """Each RPC is counted per method, failures per status code, and each unary call is timed; unknown methods make no series."""
    for _ in range(2):
        code, name, _ = error_of(lambda: client.describe("missing"))
        assert name == "TOPIC_NOT_FOUND"
    client.create("ok", 1)
    unknown = client.channel.unary_unary("/logd.v1.Nope/Nothing")
    with pytest.raises(grpc.RpcError) as info:
        unknown(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    samples = scrape(server.metrics_address)
    describe = "logd.v1.TopicService/DescribeTopic"
    create = "logd.v1.TopicService/CreateTopic"
    assert value(samples, "logd_rpc_requests_total", method=describe) == 2
    assert value(samples, "logd_rpc_errors_total", method=describe, code=code.name) == 2
    assert value(samples, "logd_rpc_latency_seconds_count", method=describe) == 2
    assert value(samples, "logd_rpc_requests_total", method=create) == 1
    assert not [key for key in samples if key[0] == "logd_rpc_errors_total" and ("method", create) in key[1]]
    assert not [key for key in samples if any("Nope" in str(v) for _, v in key[1])]


def test_requests_on_a_produce_stream_count_as_produce_calls(server, client):
    """A produce stream counts once; each request on it counts and is timed as a Produce,
    and the request that ends it with an error counts as a failed Produce."""
    from logd_sdk.protocol import log_pb2

    client.create("streamed", 1)
    good = log_pb2.ProduceRequest(partitions=[log_pb2.ProduceRequest.PartitionData(
        topic="streamed", partition=0, batches=_plain_batch(3))])
    responses = client.log.ProduceStream(iter([good, good, log_pb2.ProduceRequest()]), timeout=10)
    answered = []
    with pytest.raises(grpc.RpcError) as info:
        for response in responses:
            answered.append(response.results[0].base_offset)
    assert answered == [0, 3] and info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    samples = scrape(server.metrics_address)
    stream, produce = "logd.v1.LogService/ProduceStream", "logd.v1.LogService/Produce"
    assert value(samples, "logd_rpc_requests_total", method=stream) == 1
    assert value(samples, "logd_rpc_requests_total", method=produce) == 3
    assert value(samples, "logd_rpc_latency_seconds_count", method=produce) == 3
    assert value(samples, "logd_rpc_errors_total", method=produce, code="INVALID_ARGUMENT") == 1
    assert not [key for key in samples if key[0] == "logd_rpc_errors_total" and ("method", stream) in key[1]]


def test_fsync_durations_observed(server, client):
    """Acknowledged produces are fsynced (flush policy group), and each fsync lands in the histogram."""
    client.create("durable", 1)
    before = value(scrape(server.metrics_address), "logd_fsync_duration_seconds_count")
    for _ in range(3):
        client.produce("durable", 0, _plain_batch(1))
    after = value(scrape(server.metrics_address), "logd_fsync_duration_seconds_count")
    assert after >= before + 3


def test_retention_counters_come_from_the_cleaner_task(server, client, clock):
    """Segments deleted by retention show in logd_retention_* with the cleaner task's own figures."""
    client.create("expiring", 1, segment_bytes="1024", retention_ms="1000")
    for _ in range(12):
        client.produce("expiring", 0, _plain_batch(3, timestamp_ms=T0_MS))
    clock.advance(3_600_000)
    server.log_cleaner.run_once()
    stats = server.log_cleaner.stats_snapshot()
    assert stats["retention_segments_deleted"] > 0
    samples = scrape(server.metrics_address)
    assert value(samples, "logd_retention_deleted_segments_total") == stats["retention_segments_deleted"]
    assert value(samples, "logd_retention_reclaimed_bytes_total") == stats["retention_bytes_reclaimed"] > 0
    assert value(samples, "logd_log_maintenance_checks_total") == stats["checks"] >= 1
    assert value(samples, "logd_partition_log_start_offset", topic="expiring", partition=0) > 0


def test_broker_series_and_process_collectors(server):
    """The endpoint names the version, says the broker serves, how long recovery took, and has process metrics."""
    samples = scrape(server.metrics_address)
    assert value(samples, "logd_broker_serving") == 1
    assert value(samples, "logd_broker_recovery_seconds") >= 0
    assert [key for key in samples if key[0] == "logd_broker_info"]
    assert [key for key in samples if key[0] == "process_resident_memory_bytes"]


def test_metrics_are_off_by_default(tmp_path):
    """Without metrics_listen nothing is counted: no interceptor, no traffic observer, no fsync hook."""
    server = BrokerServer(tmp_path / "data", "127.0.0.1:0", grace_s=1.0).start()
    try:
        assert server.metrics is None and server.metrics_address is None
        assert server.broker.traffic is None
        assert files._fsync_observer is None
    finally:
        server.stop()


def test_metrics_address_in_use_fails_start_cleanly(tmp_path):
    """A metrics address that cannot be bound fails start() and releases the data directory."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = BrokerServer(tmp_path / "data", "127.0.0.1:0", metrics_listen=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):  # which address
            server.start()
    again = BrokerServer(tmp_path / "data", "127.0.0.1:0", grace_s=1.0).start()  # the lock was released
    again.stop()
    assert files._fsync_observer is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=0, max_size=8), st.integers(0, 60))
def test_count_records_sums_headers(counts, cut):
    """count_records equals the records in the whole batches, ignoring a truncated last batch."""
    batches = [codec.encode_batch([(T0_MS, None, b"x" * i, None) for i in range(n)]) for n in counts]
    data = b"".join(batches)
    assert count_records(data) == sum(counts)
    if batches:
        assert count_records(data[:len(data) - min(cut, len(batches[-1]) - 1) - 1]) == sum(counts[:-1])
