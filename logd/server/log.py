"""LogService: produce, fetch, list offsets, producer ids (thin: check, one broker call, translate)."""

from __future__ import annotations

import threading

import grpc

from logd.broker import Broker, FetchTarget, InvalidRequestError, OffsetQuery, ProduceTarget
from logd_sdk.protocol import log_pb2, log_pb2_grpc

from .errors import error_message, translate_errors

_ProduceResult = log_pb2.ProduceResponse.PartitionResult
_FetchData = log_pb2.FetchResponse.PartitionData
_Offset = log_pb2.ListOffsetsResponse.PartitionOffset

_IDLE, _BUSY = "idle", "busy"  # a stream waiting for a request, or handling one

#: A long-poll ends this long before the caller's deadline, so the answer arrives in time.
DEADLINE_MARGIN_S = 0.05
#: Starts the details of a stream refused for want of slots; clients recognise the
#: refusal by its "serves no more" (``logd_sdk._request_stream``, as in earlier versions).
STREAM_REFUSED = "the broker serves no more streams"


class LogServicer(log_pb2_grpc.LogServiceServicer):
    """Thread-safe because the broker is.

    A waiting unary fetch and an open stream (ProduceStream, FetchStream) each hold one of
    the server's worker threads, so they share ``long_calls`` slots (fewer than the
    workers, so unary calls always find a thread): half of them at most for streams of
    either kind (a stream over that is refused with RESOURCE_EXHAUSTED and
    ``STREAM_REFUSED`` in its details, and its client uses the unary call), the rest for
    waiting unary fetches (beyond that a fetch answers at once with what there is). A
    fetch on a stream waits on the stream's own worker and slot.
    """

    def __init__(self, broker: Broker, long_calls: int) -> None:
        self._broker = broker
        streams = long_calls // 2
        self._stream_slots = threading.BoundedSemaphore(streams) if streams else None
        self._waiting_slots = threading.BoundedSemaphore(max(1, long_calls - streams))
        self._streams: dict = {}  # open stream's context -> _IDLE or _BUSY
        self._closing = False

    def ProduceStream(self, request_iterator, context):
        return self._serve_stream(request_iterator, context, self.Produce, "Produce")

    def FetchStream(self, request_iterator, context):
        return self._serve_stream(request_iterator, context, self._streamed_fetch, "Fetch")

    def _serve_stream(self, request_iterator, context, handle, unary_name: str):
        """Answer each request of a stream with ``handle`` (a unary method), in order."""
        slots = self._stream_slots
        if slots is None or not slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{STREAM_REFUSED} now; use {unary_name}")
        try:
            while True:
                self._streams[context] = _IDLE  # before the check: see end_streams
                if self._closing:
                    return
                request = next(request_iterator, None)
                if request is None:
                    return
                self._streams[context] = _BUSY
                yield handle(request, context)  # an error aborts the stream with its status
        finally:
            self._streams.pop(context, None)
            slots.release()

    def end_streams(self) -> None:
        """At shutdown: end every stream now, each waiting for its next request at once and
        each handling one after its answer (a streamed fetch's long poll answers at once
        then; the client sees the stream end and retries elsewhere), instead of holding
        the shutdown for its whole grace. A request read in the instant before its stream
        is marked busy is cut like one caught by the end of the grace period: its client
        sees UNAVAILABLE and retries (an idempotent producer's retry is answered from the
        broker's producer state)."""
        self._closing = True
        for context, state in list(self._streams.items()):
            if state is _IDLE:
                context.cancel()

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
        return self._fetch(request, context, self._waiting_slots)

    @translate_errors
    def _streamed_fetch(self, request, context):
        return self._fetch(request, context, None)

    def _fetch(self, request, context, waiting_slots: threading.BoundedSemaphore | None):
        """A Fetch; its long poll takes one of ``waiting_slots`` (None: the caller's stream
        slot already pays for the worker it waits on)."""
        if not request.partitions:
            raise InvalidRequestError("Fetch needs at least one partition")
        max_wait_ms = request.max_wait_ms
        remaining_s = context.time_remaining()
        if remaining_s is not None:
            max_wait_ms = min(max_wait_ms, int((remaining_s - DEADLINE_MARGIN_S) * 1000))
        waiting = max_wait_ms > 0 and (waiting_slots is None or waiting_slots.acquire(blocking=False))
        try:
            results = self._broker.fetch(
                [FetchTarget(p.topic, p.partition, p.offset, p.max_bytes) for p in request.partitions],
                max_wait_ms=max_wait_ms if waiting else 0, min_bytes=request.min_bytes, max_bytes=request.max_bytes,
            )
        finally:
            if waiting and waiting_slots is not None:
                waiting_slots.release()
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
