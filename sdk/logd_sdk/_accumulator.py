"""The record accumulator: per-partition batches waiting for the sender.

Layout: ``topic -> [deque of ProducerBatch per partition]``. The last batch of a deque is
the open one while ``closed`` is False; records are framed (codec's record format,
uncompressed) into its ``parts`` list as they arrive, so closing a batch is a join plus
compression, done by the sender outside the lock.

A batch closes when the next record would push it past its byte limit (``batch_size``,
capped by the topic's ``max.message.bytes``), or when the sender drains it: after
``linger_ms``, or at once while someone flushes, closes or waits for buffer memory.

Back-pressure: ``buffered_bytes`` counts the framed bytes of every record not yet
resolved; ``append`` waits on ``memory_freed`` while that would exceed ``buffer_memory``,
up to ``max_block_ms``, then raises :class:`LogdTimeoutError` (as Kafka's producer).

Thread safety: one lock (``self.lock``) guards everything here, and the sender takes the
same lock; there is no other lock in the producer, so no lock order to keep. Methods that
need the caller to hold it end in ``_locked``.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from typing import Sequence

from logd_sdk import codec
from logd_sdk._errors import IllegalStateError, LogdTimeoutError, RecordTooLargeError
from logd_sdk._future import BatchResult, FutureRecordMetadata

_pack_record = struct.Struct("<IiiiH").pack
_pack_u16 = struct.Struct("<H").pack
_pack_i32 = struct.Struct("<i").pack
RECORD_OVERHEAD = 18  # fixed part of a framed record (codec: offset_delta .. headers_count)


class ProducerBatch:
    """Records for one partition, framed but not yet compressed; owned by the accumulator
    until drained, then by the sender until resolved."""

    __slots__ = ("topic", "partition", "parts", "count", "size", "first_timestamp", "max_timestamp",
                 "created", "closed", "result", "attempts", "retry_at", "deadline", "encoded", "payload")

    def __init__(self, topic: str, partition: int, timestamp_ms: int, now: float, delivery_timeout_s: float) -> None:
        self.topic = topic
        self.partition = partition
        self.parts: list[bytes] = []
        self.count = 0
        self.size = 0  # framed (uncompressed) record bytes
        self.first_timestamp = timestamp_ms
        self.max_timestamp = timestamp_ms
        self.created = now
        self.closed = False
        self.result = BatchResult(topic, partition)
        self.attempts = 0
        self.retry_at = 0.0
        self.deadline = now + delivery_timeout_s
        self.encoded: bytes | None = None  # the batch bytes, built once (kept for retries)
        self.payload: tuple[bytes, int] | None = None  # (records, codec), if compressed ahead

    def compress_ahead(self, codec_id: int) -> None:
        """Compress the records of a closed batch now (the producing thread does this for a
        full batch, see ``Sender.send_ready_now``), so that ``encode`` only adds the header.

        Safe to race with ``encode``: a closed batch's records never change, so both
        would compute the same bytes.
        """
        parts = self.parts
        if self.encoded is None and self.payload is None and parts:
            payload = codec.compress_if_smaller(b"".join(parts), codec_id)
            if self.encoded is None:
                self.payload = payload

    def encode(self, codec_id: int, producer_id: int, producer_epoch: int, base_sequence: int) -> bytes:
        """The batch bytes (header + compressed records, or the records as they are when
        compressing did not shrink them); built on first call."""
        if self.encoded is None:
            payload, payload_codec = self.payload or codec.compress_if_smaller(b"".join(self.parts), codec_id)
            self.encoded = codec.build_batch(
                payload, self.count, last_offset_delta=self.count - 1,
                first_timestamp=self.first_timestamp, max_timestamp=self.max_timestamp, codec=payload_codec,
                producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence,
                compressed=True,
            )
            self.parts = []
            self.payload = None
        return self.encoded


def framed_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[bytes, bytes | None]] | None) -> int:
    """Bytes of a record in the codec's framing (headers given with UTF-8 encoded keys)."""
    size = RECORD_OVERHEAD + (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    if headers:
        for header_key, header_value in headers:
            size += 6 + len(header_key) + (len(header_value) if header_value is not None else 0)
    return size


def _frame_locked(parts: list[bytes], index: int, timestamp_delta: int, key: bytes | None, value: bytes | None,
                  headers: Sequence[tuple[bytes, bytes | None]] | None) -> None:
    """Frame a record with headers or a null key or value into ``parts`` (codec's format)."""
    parts.append(_pack_record(index, timestamp_delta, -1 if key is None else len(key),
                              -1 if value is None else len(value), len(headers) if headers else 0))
    if key is not None:
        parts.append(key)
    if value is not None:
        parts.append(value)
    for header_key, header_value in headers or ():
        parts.append(_pack_u16(len(header_key)))
        parts.append(header_key)
        if header_value is None:
            parts.append(_pack_i32(-1))
        else:
            parts.append(_pack_i32(len(header_value)))
            parts.append(header_value)


class RecordAccumulator:
    """Per-partition batches and the buffer-memory budget (see the module docstring)."""

    def __init__(self, *, batch_size: int, linger_ms: float, buffer_memory: int, max_block_ms: int,
                 delivery_timeout_ms: int) -> None:
        self.lock = threading.Lock()
        self.sender_wakeup = threading.Condition(self.lock)
        self.memory_freed = threading.Condition(self.lock)
        self.batch_size = batch_size
        self.linger_s = linger_ms / 1000.0
        self.buffer_memory = buffer_memory
        self.max_block_s = max_block_ms / 1000.0
        self.delivery_timeout_s = delivery_timeout_ms / 1000.0
        self.buffered_bytes = 0
        self.flushing = 0
        self.closed = False
        self.memory_waiters = 0
        # Set (without the lock: a hint) when a batch fills up; Producer.send then hands it
        # on (Sender.send_ready_now).
        self.batch_filled = False
        # The batch the last append went into (a hint for the sticky partitioner, read
        # without the lock right after append: a racing thread only makes a batch uneven).
        self.last_batch: ProducerBatch | None = None
        self.filled: list[ProducerBatch] = []  # batches closed full, for compress_ahead
        self.queues: dict[str, list[deque[ProducerBatch]]] = {}
        # Every (topic, partition, queue), in the order drains visit them, and where the
        # next drain starts: after the partition a full request stopped at (Kafka's drain
        # index), so that partitions late in the order are not left out again and again.
        self._drain_order: list[tuple[str, int, deque[ProducerBatch]]] = []
        self._drain_from = 0
        self.incomplete: dict[int, BatchResult] = {}  # id -> result of every unresolved batch

    # -- the user's side ------------------------------------------------------------------

    def append(self, topic: str, partition: int, partitions: int, timestamp_ms: int, key: bytes | None,
               value: bytes | None, headers: list[tuple[bytes, bytes | None]] | None, size: int,
               batch_limit: int) -> FutureRecordMetadata:
        """Frame one record into the partition's open batch; ``size`` is its framed size.

        The producer's hot path (about a microsecond here): explicit acquire/release (a
        ``with`` costs twice as much) and the common lookups in one ``try`` (free in 3.11).
        """
        lock = self.lock
        lock.acquire()
        try:
            if self.buffered_bytes + size > self.buffer_memory or self.closed:
                if self.closed:
                    raise IllegalStateError("the producer is closed")
                self._wait_for_memory_locked(size)
            try:
                queue = self.queues[topic][partition]
                batch = queue[-1]
            except (KeyError, IndexError):
                queues = self.queues.get(topic)
                if queues is None or len(queues) <= partition:
                    queues = self._grow_locked(topic, max(partitions, partition + 1))
                queue = queues[partition]
                batch = queue[-1] if queue else None
            if batch is None or batch.closed or (batch.count and batch.size + size > batch_limit) \
                    or not -2147483648 <= timestamp_ms - batch.first_timestamp <= 2147483647:  # i32 delta
                batch = self._new_batch_locked(queue, batch, topic, partition, timestamp_ms)
            index = batch.count
            parts = batch.parts
            if headers is None and key is not None and value is not None:
                parts.append(_pack_record(index, timestamp_ms - batch.first_timestamp, len(key), len(value), 0))
                parts.append(key)
                parts.append(value)
            else:
                _frame_locked(parts, index, timestamp_ms - batch.first_timestamp, key, value, headers)
            batch.count = index + 1
            batch.size += size
            if timestamp_ms > batch.max_timestamp:
                batch.max_timestamp = timestamp_ms
            self.buffered_bytes += size
            self.last_batch = batch
            if batch.size >= batch_limit:
                batch.closed = True
                self.batch_filled = True
                self.filled.append(batch)
                self.sender_wakeup.notify()
            return FutureRecordMetadata(batch.result, index, timestamp_ms)
        finally:
            lock.release()

    def _new_batch_locked(self, queue: deque[ProducerBatch], previous: ProducerBatch | None, topic: str,
                          partition: int, timestamp_ms: int) -> ProducerBatch:
        if previous is not None and not previous.closed:
            previous.closed = True
            self.batch_filled = True
            self.filled.append(previous)
        batch = ProducerBatch(topic, partition, timestamp_ms, time.monotonic(), self.delivery_timeout_s)
        queue.append(batch)
        self.incomplete[id(batch.result)] = batch.result
        # The sender sleeps until the oldest open batch's linger ends; a new batch may be it.
        self.sender_wakeup.notify()
        return batch

    def _grow_locked(self, topic: str, partitions: int) -> list[deque[ProducerBatch]]:
        queues = self.queues.setdefault(topic, [])
        while len(queues) < partitions:
            queues.append(deque())
            self._drain_order.append((topic, len(queues) - 1, queues[-1]))
        return queues

    def _wait_for_memory_locked(self, size: int) -> None:
        if size > self.buffer_memory:
            raise RecordTooLargeError(
                f"the record is {size} bytes, more than the producer's buffer_memory ({self.buffer_memory})")
        deadline = time.monotonic() + self.max_block_s
        self.memory_waiters += 1
        self.sender_wakeup.notify()  # drain everything now: someone is blocked on memory
        try:
            while self.buffered_bytes + size > self.buffer_memory:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LogdTimeoutError(
                        f"send blocked {self.max_block_s * 1000:.0f} ms (max_block_ms) waiting for buffer "
                        f"memory: {self.buffered_bytes} of {self.buffer_memory} bytes are unacknowledged; "
                        "is the broker reachable?")
                self.memory_freed.wait(remaining)
                if self.closed:
                    raise IllegalStateError("the producer is closed")
        finally:
            self.memory_waiters -= 1

    # -- the sender's side ----------------------------------------------------------------

    def drain_locked(self, now: float, muted: set[tuple[str, int]], max_request_size: int
                     ) -> tuple[list[ProducerBatch], float | None]:
        """Take the batches that are ready, up to ``max_request_size`` framed bytes.

        Skips muted partitions (one request in flight per partition keeps order). Retried
        batches (at the front of their partition) go out without newer batches behind them:
        the broker answers a duplicate with its original offsets, which cannot also cover a
        new batch (it refuses such a mix). Returns the batches, oldest first per partition,
        and the monotonic time at which the next not-yet-ready batch becomes ready (None:
        nothing waits).
        """
        urgent = self.flushing > 0 or self.closed or self.memory_waiters > 0
        linger_s = self.linger_s
        drained: list[ProducerBatch] = []
        total = 0
        next_ready: float | None = None
        order = self._drain_order
        count = len(order)
        start = self._drain_from % count if count else 0
        for step in range(count):
            topic, partition, queue = order[(start + step) % count]
            if not queue or (topic, partition) in muted:
                continue
            retrying = False
            # A retried request goes out whole, never split by max_request_size: the
            # producer's sequence bookkeeping after a failure relies on it.
            while queue and (total < max_request_size or retrying):
                batch = queue[0]
                if retrying and not batch.attempts:
                    break
                ready_at = batch.retry_at if batch.attempts else batch.created + linger_s
                if batch.attempts and ready_at > now:
                    break
                if not (batch.closed or urgent or ready_at <= now or len(queue) > 1):
                    break
                queue.popleft()
                retrying = retrying or batch.attempts > 0
                batch.closed = True
                drained.append(batch)
                total += batch.size
            if queue:
                first = queue[0]
                ready_at = first.retry_at if first.attempts else first.created + linger_s
                if next_ready is None or ready_at < next_ready:
                    next_ready = ready_at
            if total >= max_request_size:
                self._drain_from = start + step + 1
                return drained, now
        return drained, next_ready

    def take_filled_locked(self) -> list[ProducerBatch]:
        """The batches closed full since the last call (to compress ahead)."""
        filled, self.filled = self.filled, []
        return filled

    def requeue_locked(self, batches: list[ProducerBatch], retry_at: float) -> None:
        """Put batches back at the front of their partitions (in order) for a retry."""
        for batch in reversed(batches):
            batch.attempts += 1
            batch.retry_at = retry_at
            self.queues[batch.topic][batch.partition].appendleft(batch)
        self.sender_wakeup.notify()

    def release_locked(self, batches: list[ProducerBatch]) -> None:
        """Batches are resolved: free their memory and forget them."""
        for batch in batches:
            self.buffered_bytes -= batch.size
            self.incomplete.pop(id(batch.result), None)
        self.memory_freed.notify_all()

    def has_unsent_locked(self) -> bool:
        return any(queue for queues in self.queues.values() for queue in queues)

    def abort_unsent_locked(self) -> list[ProducerBatch]:
        """Remove every batch not yet handed to the sender (at close without waiting)."""
        aborted = [batch for queues in self.queues.values() for queue in queues for batch in queue]
        for queues in self.queues.values():
            for queue in queues:
                queue.clear()
        return aborted
