"""The consumer backs off a partition after its own retriable errors, against a scripted
LogService: a fetch answered STORAGE_ERROR for one partition, an offset lookup failing
for one partition. Without the backoff the fetcher spun (the broker answers such a
partition at once): ~2,000 fetches, or ~1,600 lookups and no fetch at all, per second."""

from __future__ import annotations

import threading
import time

import pytest

from logd_sdk import Consumer, TopicPartition, codec
from logd_sdk.protocol import common_pb2, log_pb2, log_pb2_grpc
from scripted_log import serve_log_service

pytestmark = pytest.mark.timeout(60)

DEADLINE_S = 20.0
LONG_POLL_S = 0.05  # the scripted broker's stand-in for a long poll with nothing to return
BACKOFF_MS = 100
#: Over a one-second poll with a 100 ms backoff doubling to 1 s a partition is tried about
#: five times; a bound far above that and far below the spinning's thousands.
AT_MOST = 40


def one_batch(count: int) -> bytes:
    section, n = codec.encode_records((i, 0, None, b"value-%d" % i, None) for i in range(count))
    return codec.build_batch(section, n, last_offset_delta=n - 1, first_timestamp=1, max_timestamp=1,
                             codec=codec.CODEC_NONE)


def storage_error() -> common_pb2.Error:
    return common_pb2.Error(code=common_pb2.STORAGE_ERROR, message="EIO reading a segment")


class ScriptedLog(log_pb2_grpc.LogServiceServicer):
    """Partitions in ``lookup_errors`` fail their offset lookup, those in ``fetch_errors``
    their fetch (STORAGE_ERROR, retriable); the others hold ``batch`` at offset 0."""

    def __init__(self) -> None:
        self.lookup_errors: set[int] = set()
        self.fetch_errors: set[int] = set()
        self.batch = one_batch(3)
        self.lookups = 0
        self.fetched = {0: 0, 1: 0}  # fetch requests naming each partition
        self.lock = threading.Lock()

    def ListOffsets(self, request, context):
        with self.lock:
            self.lookups += 1
        return log_pb2.ListOffsetsResponse(partitions=[
            log_pb2.ListOffsetsResponse.PartitionOffset(
                topic=q.topic, partition=q.partition, offset=0,
                error=storage_error() if q.partition in self.lookup_errors else None)
            for q in request.partitions])

    def _answer(self, request):
        data = []
        for p in request.partitions:
            with self.lock:
                self.fetched[p.partition] += 1
            if p.partition in self.fetch_errors:
                data.append(log_pb2.FetchResponse.PartitionData(topic=p.topic, partition=p.partition,
                                                                error=storage_error()))
            elif p.offset == 0:
                data.append(log_pb2.FetchResponse.PartitionData(topic=p.topic, partition=p.partition,
                                                                high_watermark=3, batches=self.batch))
        if not data:
            time.sleep(LONG_POLL_S)  # nothing to return: as a broker's long poll, not at once
        return log_pb2.FetchResponse(partitions=data)

    def Fetch(self, request, context):
        return self._answer(request)

    def FetchStream(self, request_iterator, context):
        for request in request_iterator:
            yield self._answer(request)


@pytest.fixture
def scripted():
    servicer = ScriptedLog()
    server, address = serve_log_service(servicer)
    yield servicer, address
    server.stop(0)


def poll_until(consumer: Consumer, count: int) -> list:
    records: list = []
    deadline = time.monotonic() + DEADLINE_S
    while len(records) < count:
        assert time.monotonic() < deadline, f"only {len(records)} of {count} records arrived"
        records.extend(consumer.poll(timeout_ms=200))
    return records


def test_a_partition_whose_fetch_fails_retriably_is_fetched_again_after_a_backoff(scripted):
    servicer, address = scripted
    servicer.fetch_errors = {0}
    tp = TopicPartition("t", 0)
    with Consumer(address, auto_offset_reset="earliest", retry_backoff_ms=BACKOFF_MS) as consumer:
        consumer.assign([tp])
        before = servicer.fetched[0]
        assert consumer.poll(timeout_ms=1000) == []  # retriable: no error raised, nothing returned
        assert 1 <= servicer.fetched[0] - before <= AT_MOST
        servicer.fetch_errors = set()  # the disk is back: the partition is read again
        assert [r.value for r in poll_until(consumer, 3)] == [b"value-0", b"value-1", b"value-2"]


def test_a_partition_whose_lookup_fails_retriably_backs_off_and_holds_up_no_other(scripted):
    servicer, address = scripted
    servicer.lookup_errors = {0}
    stuck, fine = TopicPartition("t", 0), TopicPartition("t", 1)
    with Consumer(address, auto_offset_reset="earliest", retry_backoff_ms=BACKOFF_MS) as consumer:
        consumer.assign([stuck, fine])
        records = poll_until(consumer, 3)  # the other partition is fetched meanwhile
        assert {r.partition for r in records} == {1}
        before = servicer.lookups
        assert consumer.poll(timeout_ms=1000) == []
        assert servicer.lookups - before <= AT_MOST
        assert servicer.fetched[0] == 0
        servicer.lookup_errors = set()
        assert {r.partition for r in poll_until(consumer, 3)} == {0}
