"""The consumer's background fetcher and the record decoder.

Fetcher loop (one thread): resolve pending positions (committed offset, earliest or
latest, one ListOffsets call), then send one long-poll Fetch for every fetchable
partition from its ``fetch_position``; check each batch's CRC and decompress it here
(zlib and zstd release the GIL, so this overlaps with the application), and append one
:class:`CompletedFetch` per partition to the buffer. At most ``max_buffered_responses``
responses wait in the buffer: that bounds memory to about that many ``fetch_max_bytes``
once decompressed (the sizes count stored, compressed bytes: several times that with
zstd, more with one oversized batch). Data of an older epoch (fetched before a seek or
a new assignment) is dropped when drained.

The Fetch is a blocking call on the fetcher's own channel, not a gRPC future: a future
hands its completion to grpcio's channel-spin thread (started anew whenever no call is in
flight), which cost ~1 ms per fetch in end-to-end latency and far more at p99. It goes
over a long-lived FetchStream (``_request_stream``; unary Fetch calls while the broker
refuses streams): the fetcher asks again as soon as each answer comes, and a message on
an open stream costs both sides less than a new call (end-to-end latency 0.15-0.3 ms
lower at p50 and p99). The fetcher does not cancel a long poll in flight (the stream's
watchdog cancels only an overdue one; invoking an RPC on a channel closed meanwhile
crashes grpcio), so a long poll waits at most a *slice* per request:
``MIN_WAIT_SLICE_MS`` after the positions changed (assign, seek), doubling with every
empty answer up to ``MAX_WAIT_SLICE_MS`` (and never above ``fetch_max_wait_ms``). A seek
right after an assignment (the usual pattern) thus takes effect within milliseconds, a
seek or ``close`` on a long idle consumer within ``MAX_WAIT_SLICE_MS``, and an idle
consumer sends about ten cheap fetches a second. A slice that ends with less than
``fetch_min_bytes`` returns what there is. Only this thread sends on that channel (the
stream's watchdog may cancel its call), and closes it when it ends.

``poll`` drains the buffer under the consumer's lock: :func:`decode_records` builds
``Record`` objects straight from a decompressed records section, skipping records below
the position (a fetch may start inside a batch).

Errors per partition: OFFSET_OUT_OF_RANGE resets the position per ``auto_offset_reset``
(or becomes the partition's sticky error with "none"); unavailability backs off and
retries; a missing topic or partition is reported once and looked up again after a
backoff (``SubscriptionState.lose_topic``); anything else becomes the partition's sticky
error, raised by ``poll``.

Lock: the consumer's condition (``lock``) guards the subscription state and the buffer;
RPCs, CRC checks and decompression run outside it.
"""

from __future__ import annotations

import gc
import logging
import struct
import threading
import time
from collections import deque
from typing import Any

import grpc

from logd_sdk import codec
from logd_sdk._errors import (
    BrokerUnavailableError,
    CorruptRecordError,
    GroupNotFoundError,
    LogdError,
    LogdTimeoutError,
    OffsetOutOfRangeError,
    UnsupportedVersionError,
)
from logd_sdk._request_stream import RequestStream
from logd_sdk._subscription import TOPIC_GONE, SubscriptionState
from logd_sdk._transport import Transport, backoff_s, create_channel, error_from_proto, error_from_rpc
from logd_sdk._types import NO_HEADERS, Record, TopicPartition, _RecordBuilder
from logd_sdk.protocol import common_pb2, groups_pb2, log_pb2, log_pb2_grpc

log = logging.getLogger("logd_sdk.consumer")

EARLIEST = -2
LATEST = -1
#: Bounds of a single Fetch's long poll (see the module docstring).
MIN_WAIT_SLICE_MS = 4
MAX_WAIT_SLICE_MS = 100
_RECORD = struct.Struct("<IiiiH")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")


# -- decoding --------------------------------------------------------------------------------

def decode_records(topic: str, partition: int, header: codec.BatchHeader, section: bytes,
                   min_offset: int) -> list[Record]:
    """The records of a decompressed batch with offsets >= ``min_offset``, as ``Record``s.

    The hot loop of the consumer: one ``unpack_from`` and two slices per record, and the
    record built through its mutable twin (see ``_types``). Raises CorruptRecordError when
    the framing does not add up.

    The cyclic garbage collector is paused while a batch is decoded: each record is a
    tracked object (two with headers: records without share ``NO_HEADERS``), so a batch
    of 1,000 would otherwise set off a few young collections, and the records the
    application still holds from earlier polls keep getting traversed by the older
    generations: with the last 20,000 records kept alive that cost 40% of the decode
    (1,300 vs 800 ns a record; nothing when the application drops each poll's records and
    its heap is small). The objects are still collected normally afterwards. The
    collector's switch is process-wide: it is turned back on only if it was on, so
    concurrent decoders leave it as they found it (only an application calling
    ``gc.disable()`` during a decode would see it undone).
    """
    gc_was_enabled = gc.isenabled()
    if gc_was_enabled:
        gc.disable()
    try:
        return _decode_records(topic, partition, header, section, min_offset)
    finally:
        if gc_was_enabled:
            gc.enable()


def _decode_records(topic: str, partition: int, header: codec.BatchHeader, section: bytes,
                    min_offset: int) -> list[Record]:
    # Records are made with object.__new__ and slot stores on the mutable twin, then
    # re-classed: its generated __init__ would cost 15% more of this loop.
    records: list[Record] = []
    append = records.append
    unpack_from = _RECORD.unpack_from
    new = object.__new__
    builder = _RecordBuilder
    record_class = Record
    base_offset = header.base_offset
    first_timestamp = header.first_timestamp
    position = 0
    try:
        for _ in range(header.records_count):
            offset_delta, timestamp_delta, key_length, value_length, headers_count = unpack_from(section, position)
            position += 18
            if base_offset + offset_delta < min_offset:  # a fetch may start inside a batch
                position += (key_length if key_length > 0 else 0) + (value_length if value_length > 0 else 0)
                if headers_count:
                    position = _decode_headers(section, position, headers_count)[1]
                continue
            record = new(builder)
            record.topic = topic
            record.partition = partition
            record.offset = base_offset + offset_delta
            record.timestamp_ms = first_timestamp + timestamp_delta
            if key_length >= 0:
                record.key = section[position:position + key_length]
                position += key_length
            else:
                record.key = None
            if value_length >= 0:
                record.value = section[position:position + value_length]
                position += value_length
            else:
                record.value = None
            if headers_count:
                record.headers, position = _decode_headers(section, position, headers_count)
            else:
                record.headers = NO_HEADERS
            record.__class__ = record_class
            append(record)
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"{topic}-{partition}: malformed record in batch at {base_offset}: {exc}") from None
    if position != len(section):
        raise CorruptRecordError(f"{topic}-{partition}: batch at offset {base_offset} has "
                                 f"{len(section) - position} bytes of framing left over")
    return records


def _decode_headers(section: bytes, position: int, count: int) -> tuple[list[tuple[str, bytes | None]], int]:
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        (key_length,) = _U16.unpack_from(section, position)
        position += 2
        key = section[position:position + key_length].decode()
        position += key_length
        (value_length,) = _I32.unpack_from(section, position)
        position += 4
        if value_length < 0:
            headers.append((key, None))
        else:
            headers.append((key, section[position:position + value_length]))
            position += value_length
    return headers, position


class CompletedFetch:
    """Decompressed batches of one partition from one Fetch response, drained by ``poll``."""

    __slots__ = ("tp", "epoch", "batches", "batch_index", "records", "record_index", "batch_next_offset")

    def __init__(self, tp: TopicPartition, epoch: int, batches: list[tuple[codec.BatchHeader, bytes]]) -> None:
        self.tp = tp
        self.epoch = epoch
        self.batches = batches
        self.batch_index = 0
        self.records: list[Record] = []
        self.record_index = 0
        self.batch_next_offset = 0

    def take(self, state: Any, max_records: int, out: list[Record]) -> bool:
        """Move up to ``max_records`` records at ``state.position`` into ``out``, advancing
        the position. Returns True when this fetch is used up."""
        tp = self.tp
        while max_records > 0:
            if self.record_index >= len(self.records):
                if self.batch_index >= len(self.batches):
                    return True
                header, section = self.batches[self.batch_index]
                self.batch_index += 1
                self.records = []
                self.record_index = 0
                if header.next_offset <= state.position:
                    continue
                self.records = decode_records(tp.topic, tp.partition, header, section, state.position)
                self.batch_next_offset = header.next_offset
                if not self.records:  # compaction removed the tail of the batch
                    state.position = header.next_offset
                    continue
            start = self.record_index
            end = min(len(self.records), start + max_records)
            if start == 0 and end == len(self.records) and not out:
                out.extend(self.records)
            else:
                out.extend(self.records[start:end])
            self.record_index = end
            max_records -= end - start
            state.position = self.records[end - 1].offset + 1
            if end == len(self.records):
                state.position = max(state.position, self.batch_next_offset)
        return self.record_index >= len(self.records) and self.batch_index >= len(self.batches)


# -- offset lookups --------------------------------------------------------------------------

def list_offsets(transport: Transport, queries: dict[TopicPartition, int], timeout_ms: int | None = None
                 ) -> dict[TopicPartition, tuple[int, LogdError | None]]:
    """ListOffsets: tp -> (offset or -1, error). Query -2 = earliest, -1 = latest, else a time."""
    request = log_pb2.ListOffsetsRequest(partitions=[
        log_pb2.ListOffsetsRequest.PartitionQuery(topic=tp.topic, partition=tp.partition, timestamp_ms=ts)
        for tp, ts in queries.items()])
    response = transport.call(transport.log.ListOffsets, request, timeout_ms=timeout_ms)
    out: dict[TopicPartition, tuple[int, LogdError | None]] = {}
    for item in response.partitions:
        tp = TopicPartition(item.topic, item.partition)
        out[tp] = (item.offset, error_from_proto(item.error, f"{item.topic}-{item.partition}"))
    return out


def fetch_committed(transport: Transport, group_id: str, partitions: list[TopicPartition],
                    timeout_ms: int | None = None) -> dict[TopicPartition, int | None]:
    """The group's committed offsets (None when nothing is committed)."""
    request = groups_pb2.FetchCommittedOffsetsRequest(
        group_id=group_id, partitions=[common_pb2.TopicPartition(topic=tp.topic, partition=tp.partition)
                                       for tp in partitions])
    response = transport.call(transport.groups.FetchCommittedOffsets, request, timeout_ms=timeout_ms)
    out: dict[TopicPartition, int | None] = {tp: None for tp in partitions}
    for item in response.offsets:
        out[TopicPartition(item.topic, item.partition)] = None if item.offset < 0 else item.offset
    return out


# -- the thread ------------------------------------------------------------------------------

class Fetcher(threading.Thread):
    """Prefetches for the assigned partitions (see the module docstring)."""

    def __init__(self, transport: Transport, subscriptions: SubscriptionState, lock: threading.Condition, *,
                 group_id: str | None, fetch_min_bytes: int, fetch_max_wait_ms: int, fetch_max_bytes: int,
                 max_partition_fetch_bytes: int, check_crcs: bool, request_timeout_ms: int,
                 retry_backoff_ms: int, max_buffered_responses: int = 2) -> None:
        super().__init__(name="logd-consumer-fetcher", daemon=True)
        self._transport = transport
        self._subs = subscriptions
        self.lock = lock
        self._group_id = group_id
        self._min_bytes = fetch_min_bytes
        self._max_wait_ms = fetch_max_wait_ms
        self._max_bytes = fetch_max_bytes
        self._partition_max_bytes = max_partition_fetch_bytes
        self._check_crcs = check_crcs
        self._request_timeout_ms = request_timeout_ms
        self._retry_backoff_ms = retry_backoff_ms
        self._max_buffered = max_buffered_responses
        # Guarded by lock:
        self.buffer: deque[deque[CompletedFetch]] = deque()
        self.closed = False
        self._failures = 0
        self._wait_slice_ms = MIN_WAIT_SLICE_MS
        self._fetch_rotation = 0  # where the next fetch starts in the fetchable partitions (this thread only)
        # Sent on by this thread only (see the module docstring); connects on first use.
        self._channel = create_channel(transport.target)
        stub = log_pb2_grpc.LogServiceStub(self._channel)
        self._fetches = RequestStream(stub.FetchStream, (MAX_WAIT_SLICE_MS + request_timeout_ms) / 1000.0,
                                      unary=stub.Fetch, what="fetch", log=log)

    # -- called by the consumer, lock held ------------------------------------------------

    def wakeup_locked(self) -> None:
        """The assignment or a position changed: look again (once a long poll in flight,
        at most a wait slice, has returned; its stale data is dropped)."""
        self._wait_slice_ms = MIN_WAIT_SLICE_MS
        self.lock.notify_all()

    def drain_locked(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        assignment = self._subs.assignment
        while len(out) < max_records and self.buffer:
            response = self.buffer[0]
            if not response:
                self.buffer.popleft()
                self.lock.notify_all()  # room for the next prefetch
                continue
            completed = response[0]
            state = assignment.get(completed.tp)
            if state is None or state.epoch != completed.epoch or state.position is None:
                response.popleft()
                continue
            if completed.take(state, max_records - len(out), out):
                response.popleft()
        if self.buffer and not self.buffer[0]:
            self.buffer.popleft()
            self.lock.notify_all()
        return out

    def close_locked(self) -> None:
        self.closed = True
        self.wakeup_locked()

    # -- positions ------------------------------------------------------------------------

    def resolve_positions(self, pending: dict[TopicPartition, tuple[str, int]], timeout_ms: int | None = None) -> None:
        """Look up and apply positions for partitions with a pending reset (no lock held).

        Retriable failures leave them pending; a missing topic is looked up again after a
        backoff; other failures become sticky errors.
        """
        strategies: dict[TopicPartition, str] = {tp: strategy for tp, (strategy, _) in pending.items()}
        committed_tps = [tp for tp, strategy in strategies.items() if strategy == "committed"]
        if committed_tps:
            try:
                committed = fetch_committed(self._transport, self._group_id or "", committed_tps, timeout_ms)
            except (UnsupportedVersionError, GroupNotFoundError):
                committed = {}
            positions: dict[TopicPartition, tuple[int | None, LogdError | None]] = {
                tp: (offset, None) for tp, offset in committed.items() if offset is not None}
            for tp in committed_tps:
                if tp not in positions:
                    strategies[tp] = self._subs.auto_offset_reset
        else:
            positions = {}
        for tp, strategy in strategies.items():
            if strategy == "none" and tp not in positions:
                positions[tp] = (None, OffsetOutOfRangeError(
                    f"{tp.topic}-{tp.partition} has no position (no committed offset) and auto_offset_reset "
                    "is 'none': seek() to an offset first"))
        queries = {tp: (EARLIEST if s == "earliest" else LATEST) for tp, s in strategies.items()
                   if s in ("earliest", "latest") and tp not in positions}
        retry: list[TopicPartition] = []  # still pending, after a retriable error of its own
        if queries:
            for tp, (offset, error) in list_offsets(self._transport, queries, timeout_ms).items():
                if error is not None and error.retriable:
                    retry.append(tp)
                    continue
                positions[tp] = (None if error else offset, error)
        with self.lock:
            now = time.monotonic()
            for tp in retry:
                state = self._subs.assignment.get(tp)
                if state is not None and tp in pending and state.epoch == pending[tp][1]:
                    state.back_off(now, self._retry_backoff_ms)
            for tp, (offset, error) in positions.items():
                state = self._subs.assignment.get(tp)
                if state is None or tp not in pending or state.epoch != pending[tp][1]:
                    continue  # seeked or unassigned meanwhile
                if isinstance(error, TOPIC_GONE):
                    self._subs.lose_topic(tp, error, now, self._retry_backoff_ms)
                elif error is not None:
                    state.reset_to = None
                    state.error = error
                else:
                    state.seek(offset)  # type: ignore[arg-type]
            self.lock.notify_all()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        finally:
            self._fetches.close()
            self._channel.close()

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.closed and not self._has_work_locked(time.monotonic()):
                    retry_at = self._subs.next_retry_at()  # a partition backing off
                    self.lock.wait(None if retry_at is None else max(0.001, retry_at - time.monotonic()))
                if self.closed:
                    return
                now = time.monotonic()
                pending = self._subs.needing_reset(now)
                targets = [] if pending else [(tp, s.epoch, s.fetch_position) for tp, s in self._subs.fetchable(now)]
            try:
                if pending:
                    self.resolve_positions(pending, timeout_ms=self._request_timeout_ms)
                else:
                    self._fetch(targets)
                self._failures = 0
            except Exception as exc:
                if self.closed:
                    return  # close() cut the call (it closes the transport first): not a failure
                if isinstance(exc, LogdError):
                    self._on_failure(exc)
                else:  # pragma: no cover - a bug: keep the thread alive, say so
                    log.exception("consumer fetcher failed")
                    self._on_failure(None)

    def _has_work_locked(self, now: float) -> bool:
        if len(self.buffer) >= self._max_buffered:
            return False
        return any(s.wants_fetcher and s.retry_at <= now for s in self._subs.assignment.values())

    def _on_failure(self, error: LogdError | None) -> None:
        pause = backoff_s(self._failures, self._retry_backoff_ms, 1000)
        self._failures += 1
        if error is not None and not error.retriable:
            log.warning("consumer fetch failed: %s", error)
        with self.lock:
            if error is not None and not error.retriable:
                for state in self._subs.assignment.values():
                    if state.error is None and (state.fetchable or state.reset_to is not None):
                        state.error = error
                self.lock.notify_all()
            deadline = time.monotonic() + pause
            while not self.closed and time.monotonic() < deadline:
                self.lock.wait(deadline - time.monotonic())

    def _fetch(self, targets: list[tuple[TopicPartition, int, int]]) -> None:
        # The broker fills the response's byte budget in request order: each fetch starts
        # after the partitions the last one got data from (at least one on), or those at
        # the end of a fixed order would get nothing while the first ones have a backlog
        # (Kafka's consumer rotates its fetch order likewise, KIP-74). One place per fetch
        # made the last of N partitions with a backlog wait N fetches.
        start = self._fetch_rotation % len(targets) if targets else 0
        targets = targets[start:] + targets[:start]
        self._fetch_rotation = start + 1
        slice_ms = self._wait_slice_ms
        request = log_pb2.FetchRequest(
            partitions=[log_pb2.FetchRequest.PartitionRequest(topic=tp.topic, partition=tp.partition, offset=offset,
                                                              max_bytes=self._partition_max_bytes)
                        for tp, _, offset in targets],
            max_wait_ms=min(self._max_wait_ms, slice_ms), min_bytes=self._min_bytes,
            max_bytes=self._max_bytes)
        try:
            response = self._fetches.call(request)
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                return  # a unary fallback call cut by the channel closing (streams say UNAVAILABLE)
            raise error_from_rpc(exc, self._transport.target) from None
        requested = {tp: (epoch, offset) for tp, epoch, offset in targets}
        outcomes = [self._process(data, requested) for data in response.partitions]
        served = sum(1 for data in response.partitions if data.batches)
        self._fetch_rotation = start + max(1, served)
        self._apply(outcomes)
        if not served:
            with self.lock:
                if self._wait_slice_ms == slice_ms:  # (a wakeup meanwhile restarts the slices)
                    self._wait_slice_ms = min(2 * slice_ms, MAX_WAIT_SLICE_MS)

    def _process(self, data: Any, requested: dict[TopicPartition, tuple[int, int]]
                 ) -> tuple[TopicPartition, int, Any, LogdError | None, list[tuple[codec.BatchHeader, bytes]], int]:
        """Check and decompress one partition's batches (no lock: CRC and zstd run here)."""
        tp = TopicPartition(data.topic, data.partition)
        epoch, fetch_offset = requested.get(tp, (-1, 0))
        error = error_from_proto(data.error, f"{data.topic}-{data.partition}")
        batches: list[tuple[codec.BatchHeader, bytes]] = []
        next_offset = fetch_offset
        if error is None and data.batches:
            buffer = data.batches
            view = memoryview(buffer)
            try:
                for position, header in codec.iter_batches(buffer, verify=self._check_crcs):
                    if header.next_offset <= fetch_offset:
                        continue
                    payload = view[position + codec.HEADER_SIZE:position + header.size]
                    batches.append((header, codec.decompress(payload, header.codec)))
                    next_offset = header.next_offset
            except codec.CorruptBatchError as exc:
                # Good batches before it are returned first (as Kafka does): the next fetch
                # starts at the corrupt batch and reports it. They were dropped with it.
                if not batches:
                    error = CorruptRecordError(f"{tp.topic}-{tp.partition} at offset {next_offset}: {exc}")
        return tp, epoch, data, error, batches, next_offset

    def _apply(self, outcomes: list) -> None:
        completed: deque[CompletedFetch] = deque()
        with self.lock:
            for tp, epoch, data, error, batches, next_offset in outcomes:
                state = self._subs.assignment.get(tp)
                if state is None or state.epoch != epoch:
                    continue
                state.high_watermark = data.high_watermark
                state.log_start_offset = data.log_start_offset
                if error is None:
                    if state.retries:
                        state.clear_backoff()
                    if batches:
                        completed.append(CompletedFetch(tp, epoch, batches))
                        state.fetch_position = next_offset
                elif isinstance(error, OffsetOutOfRangeError):
                    self._on_out_of_range_locked(tp, state, data, error)
                elif isinstance(error, (BrokerUnavailableError, LogdTimeoutError)):
                    # Fetched again after a backoff: the broker answers such a partition at
                    # once, so without one the fetcher spun (and cut the long poll of the others).
                    state.back_off(time.monotonic(), self._retry_backoff_ms)
                elif isinstance(error, TOPIC_GONE):
                    self._subs.lose_topic(tp, error, time.monotonic(), self._retry_backoff_ms)
                else:
                    state.error = error
            if completed:
                self.buffer.append(completed)
            self.lock.notify_all()

    def _on_out_of_range_locked(self, tp: TopicPartition, state: Any, data: Any, error: LogdError) -> None:
        strategy = self._subs.auto_offset_reset
        if strategy == "none":
            state.error = OffsetOutOfRangeError(
                f"{tp.topic}-{tp.partition}: offset {state.fetch_position} is out of range "
                f"[{data.log_start_offset}, {data.high_watermark}) and auto_offset_reset is 'none'")
        else:
            log.info("%s-%d: offset %s out of range, resetting to %s", tp.topic, tp.partition,
                     state.fetch_position, strategy)
            state.request_reset(strategy)
