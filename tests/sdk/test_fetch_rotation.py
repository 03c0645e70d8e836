"""The consumer's fetch order rotates past the partitions the last answer served, against
a scripted LogService whose byte budget covers two partitions per answer (as a broker's
response budget covers a few partitions with a backlog): every partition is reached
within about N/2 fetches, not N as when the order moved one place per fetch."""

from __future__ import annotations

import threading

import pytest

from logd_sdk import Consumer, TopicPartition, codec
from logd_sdk.protocol import log_pb2, log_pb2_grpc
from scripted_log import serve_log_service

pytestmark = pytest.mark.timeout(60)

PARTITIONS = 12
SERVED_PER_ANSWER = 2


def batch_at(offset: int) -> bytes:
    section, count = codec.encode_records([(0, 0, None, b"v", None)])
    return codec.build_batch(section, count, last_offset_delta=0, first_timestamp=1, max_timestamp=1,
                             codec=codec.CODEC_NONE, base_offset=offset)


class Backlogged(log_pb2_grpc.LogServiceServicer):
    """Every partition always has a record at the asked offset; an answer holds the first
    SERVED_PER_ANSWER partitions of the request, as a byte budget would."""

    def __init__(self) -> None:
        self.fetches = 0
        self.first_served_at: dict[int, int] = {}
        self.lock = threading.Lock()

    def ListOffsets(self, request, context):
        return log_pb2.ListOffsetsResponse(partitions=[
            log_pb2.ListOffsetsResponse.PartitionOffset(topic=q.topic, partition=q.partition, offset=0)
            for q in request.partitions])

    def _answer(self, request):
        with self.lock:
            self.fetches += 1
            served = request.partitions[:SERVED_PER_ANSWER]
            for p in served:
                self.first_served_at.setdefault(p.partition, self.fetches)
        return log_pb2.FetchResponse(partitions=[
            log_pb2.FetchResponse.PartitionData(topic=p.topic, partition=p.partition, high_watermark=10**9,
                                                batches=batch_at(p.offset)) for p in served])

    def Fetch(self, request, context):
        return self._answer(request)

    def FetchStream(self, request_iterator, context):
        for request in request_iterator:
            yield self._answer(request)


def test_every_partition_with_a_backlog_is_reached_within_about_half_as_many_fetches():
    servicer = Backlogged()
    server, address = serve_log_service(servicer)
    try:
        with Consumer(address, auto_offset_reset="earliest") as consumer:
            consumer.assign([TopicPartition("t", p) for p in range(PARTITIONS)])
            seen: set[int] = set()
            for _ in range(200):
                seen.update(r.partition for r in consumer.poll(timeout_ms=200))
                if len(seen) == PARTITIONS:
                    break
            assert len(seen) == PARTITIONS
        # One place per fetch reached the last partition at fetch PARTITIONS - 1 (11).
        assert max(servicer.first_served_at.values()) <= PARTITIONS // SERVED_PER_ANSWER + 1
    finally:
        server.stop(0)
