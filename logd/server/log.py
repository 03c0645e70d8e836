"""LogService: produce, fetch, list offsets, producer ids (thin: check, one broker call, translate)."""

from __future__ import annotations

import threading

from logd.broker import Broker, FetchTarget, InvalidRequestError, OffsetQuery, ProduceTarget
from logd_sdk.protocol import log_pb2, log_pb2_grpc

from .errors import error_message, translate_errors

_ProduceResult = log_pb2.ProduceResponse.PartitionResult
_FetchData = log_pb2.FetchResponse.PartitionData
_Offset = log_pb2.ListOffsetsResponse.PartitionOffset

#: A long-poll ends this long before the caller's deadline, so the answer arrives in time.
DEADLINE_MARGIN_S = 0.05


class LogServicer(log_pb2_grpc.LogServiceServicer):
    """Thread-safe because the broker is.

    Each waiting fetch holds one of the server's worker threads, so at most
    ``max_waiting_fetches`` may wait at a time (fewer than the workers, so produce calls
    always find a thread); beyond that a fetch answers at once with what there is.
    """

    def __init__(self, broker: Broker, max_waiting_fetches: int) -> None:
        self._broker = broker
        self._waiting_slots = threading.BoundedSemaphore(max_waiting_fetches)

    @translate_errors
    def Produce(self, request, context):
        if not request.partitions:
            raise InvalidRequestError("Produce needs at least one partition's batches")
        results = self._broker.produce(
            [ProduceTarget(p.topic, p.partition, p.batches) for p in request.partitions])
        return log_pb2.ProduceResponse(results=[
            _ProduceResult(topic=r.topic, partition=r.partition, error=error_message(r.error),
                           base_offset=r.base_offset, log_append_time_ms=r.log_append_time_ms,
                           log_start_offset=r.log_start_offset)
            for r in results
        ])

    @translate_errors
    def Fetch(self, request, context):
        if not request.partitions:
            raise InvalidRequestError("Fetch needs at least one partition")
        max_wait_ms = request.max_wait_ms
        remaining_s = context.time_remaining()
        if remaining_s is not None:
            max_wait_ms = min(max_wait_ms, int((remaining_s - DEADLINE_MARGIN_S) * 1000))
        waiting = max_wait_ms > 0 and self._waiting_slots.acquire(blocking=False)
        try:
            results = self._broker.fetch(
                [FetchTarget(p.topic, p.partition, p.offset, p.max_bytes) for p in request.partitions],
                max_wait_ms=max_wait_ms if waiting else 0, min_bytes=request.min_bytes, max_bytes=request.max_bytes,
            )
        finally:
            if waiting:
                self._waiting_slots.release()
        return log_pb2.FetchResponse(partitions=[
            _FetchData(topic=r.topic, partition=r.partition, error=error_message(r.error),
                       high_watermark=r.high_watermark, log_start_offset=r.log_start_offset,
                       batches=r.batches)
            for r in results
        ])

    @translate_errors
    def ListOffsets(self, request, context):
        if not request.partitions:
            raise InvalidRequestError("ListOffsets needs at least one partition")
        results = self._broker.list_offsets(
            [OffsetQuery(q.topic, q.partition, q.timestamp_ms) for q in request.partitions])
        return log_pb2.ListOffsetsResponse(partitions=[
            _Offset(topic=r.topic, partition=r.partition, error=error_message(r.error),
                    offset=r.offset, timestamp_ms=r.timestamp_ms)
            for r in results
        ])

    @translate_errors
    def InitProducerId(self, request, context):
        producer_id, producer_epoch = self._broker.init_producer_id()
        return log_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=producer_epoch)
