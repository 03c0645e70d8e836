"""The producer's background sender: drains ready batches into Produce RPCs.

Loop (the sender thread; a producing thread runs one round itself when it fills a
batch while no request is in flight, see ``send_ready_now``): under the accumulator's
lock, wait until fewer than ``max_in_flight`` requests are outstanding and some
partition has a ready batch (full, lingered ``linger_ms``, being flushed, or due for a
retry); drain ready batches of unmuted partitions up to ``max_request_size``; mute those
partitions; then, outside the lock, encode the batches (join + zstd, which releases the
GIL) and send the RPC.
When it is the only request in flight (always so with one partition), the sender thread
makes a blocking call and handles the answer itself, then drains again at once: a gRPC
future would start grpcio's channel-spin thread anew for every such call and hand the
answer over through it (about 9% of the producer's CPU, and two thread switches per
request). That blocking call goes over the producer's produce stream
(``_request_stream``: one long-lived call, ~0.13 ms cheaper per request than a unary
call) unless the broker refuses streams (then unary calls for a minute). Otherwise the
RPC is a gRPC future and its answer is handled on gRPC's callback thread, so that
requests for other partitions overlap.

Ordering: a partition is muted while a request carrying it is in flight, so batches of
one partition are appended in order even across retries; requests for different
partitions overlap (up to ``max_in_flight``).

Retries: UNAVAILABLE (the RPC, or a partition's STORAGE_ERROR/UNAVAILABLE) and deadline
expiries put the batches back at the front of their partitions after an exponential
backoff, until each batch's ``delivery_timeout_ms`` is spent; the batch keeps its bytes
and sequence number. Other errors fail the batch's futures with the typed error.

Idempotence (``enable_idempotence``, the default; Kafka's idempotent producer): the
first send asks the broker for a producer id (InitProducerId) and each batch carries a
per-partition base sequence (the sequence of its first record; the next batch of the
partition starts after its last record, wrapping at 2^31), assigned when the batch is
first encoded and kept with its bytes for every retry. The broker remembers each
producer's last batches per partition and answers a retried batch it already wrote with
the original offsets instead of writing it again: a reply lost after the append (a
timeout, a reset connection, a broker killed before answering) costs no duplicate.

One request in flight per partition (the muting above) is what keeps this simple: a
partition's batches reach the broker in sequence order, so the broker only has to check
"last sequence + 1" (a gap is OUT_OF_ORDER_SEQUENCE), a retry is always of the newest
batches, and a retried request carries only its own batches (see
``RecordAccumulator.drain_locked``). Kafka allows up to 5 in flight and pays for it with
reordering logic in both client and broker.

When a sent batch fails for good, its sequences are settled: if the broker refused it
(a per-partition error such as TOPIC_NOT_FOUND) nothing was written and the next batch
reuses them; if the outcome is unknown (retries exhausted on UNAVAILABLE or a timeout)
or the broker disagrees about the sequence (OUT_OF_ORDER_SEQUENCE,
UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH: the futures fail with
``OutOfOrderSequenceError``, ``UnknownProducerIdError``, ``ProducerFencedError``), the
producer drops its producer id and asks for a new one: its sequences restart at 0 (Kafka
resets the producer id likewise). A broker that does not implement InitProducerId turns
idempotence off; with it off batches carry producer id -1 and retries may duplicate.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from typing import Callable

import grpc

from logd_sdk import codec
from logd_sdk._accumulator import ProducerBatch, RecordAccumulator
from logd_sdk._errors import (
    BrokerUnavailableError,
    IllegalStateError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    UnknownProducerIdError,
    UnsupportedVersionError,
    LogdError,
    LogdTimeoutError,
    PartitionNotFoundError,
    TopicNotFoundError,
    UnknownServerError,
)
from logd_sdk._request_stream import RequestStream
from logd_sdk._transport import Transport, backoff_s, error_from_proto, error_from_rpc, is_retriable_rpc_error
from logd_sdk.protocol import log_pb2

log = logging.getLogger("logd_sdk.producer")

_PartitionData = log_pb2.ProduceRequest.PartitionData
_SEQUENCE_MODULUS = 1 << 31
#: A producing thread leaves its full batch to the sender thread while the sender thread's
#: blocking request is younger than this (see ``Sender.send_ready_now``); past it, the
#: request is slow (a stalled disk, a large append) and the batch goes alongside.
HAND_OVER_WITHIN_S = 0.05
#: producer_id, producer_epoch, base_sequence at byte 43 of a batch header (see codec).
_PRODUCER_FIELDS = struct.Struct("<qhi")
_PRODUCER_FIELDS_AT = 43
#: Errors after which the broker's and the producer's idea of the sequences differ.
_SEQUENCE_ERRORS = (OutOfOrderSequenceError, UnknownProducerIdError, ProducerFencedError)


class Sender(threading.Thread):
    """Turns drained batches into Produce RPCs and resolves their futures."""

    def __init__(self, accumulator: RecordAccumulator, transport: Transport, *, acks: int, codec_id: int,
                 max_in_flight: int, max_request_size: int, request_timeout_ms: int, retry_backoff_ms: int,
                 retry_backoff_max_ms: int, enable_idempotence: bool,
                 on_metadata_error: Callable[[str], None]) -> None:
        super().__init__(name="logd-producer-sender", daemon=True)
        self._acc = accumulator
        self._transport = transport
        self._acks = acks
        self._codec = codec_id
        self._max_in_flight = max_in_flight
        self._max_request_size = max_request_size
        self._request_timeout_s = request_timeout_ms / 1000.0
        self._retry_backoff_ms = retry_backoff_ms
        self._retry_backoff_max_ms = retry_backoff_max_ms
        self._idempotent = enable_idempotence
        self._producer_id = codec.NO_PRODUCER_ID
        self._producer_epoch = codec.NO_PRODUCER_EPOCH
        self._sequences: dict[tuple[str, int], int] = {}  # next base sequence per partition
        self._sequence_lock = threading.Lock()  # guards the producer id, epoch and sequences
        self._producer_id_lock = threading.Lock()  # one InitProducerId at a time
        self._on_metadata_error = on_metadata_error
        self._stream = RequestStream(transport.log.ProduceStream, self._request_timeout_s,
                                     unary=transport.log.Produce, what="produce", log=log)
        self._blocking_since: float | None = None  # when the sender thread's blocking call began
        # Guarded by the accumulator's lock:
        self._in_flight = 0
        self._muted: set[tuple[str, int]] = set()
        self._stopping = False
        self._forced = False

    # -- lifecycle ------------------------------------------------------------------------

    def initiate_close(self) -> None:
        """Stop once every accumulated batch has been sent and answered."""
        with self._acc.lock:
            self._stopping = True
            self._acc.sender_wakeup.notify()

    def force_close(self) -> None:
        """Stop at once; unsent batches are failed by the caller. A request in flight on the
        stream is cancelled (its records fail with IllegalStateError), else the sender
        thread would wait for an answer from a broker that may never give one."""
        with self._acc.lock:
            self._stopping = True
            self._forced = True
            self._acc.sender_wakeup.notify()
        self._stream.close()

    def run(self) -> None:
        try:
            while True:
                batches = self._next_batches()
                if batches is None:
                    return
                # Alone in flight (always so for one partition): a blocking call, see _send.
                self._send(batches, blocking=self._in_flight == 1)
        except Exception:  # pragma: no cover - a bug; fail loudly rather than hang futures
            log.exception("producer sender thread died")
            raise
        finally:
            self._stream.close()

    def _next_batches(self) -> list[ProducerBatch] | None:
        acc = self._acc
        with acc.lock:
            while True:
                if self._forced:
                    return None
                now = time.monotonic()
                batches, next_ready = self._take_locked(now)
                if batches:
                    return batches
                if self._stopping and self._in_flight == 0 and not acc.has_unsent_locked():
                    return None
                timeout = None if next_ready is None else max(0.0005, next_ready - now)
                acc.sender_wakeup.wait(timeout)

    def send_ready_now(self) -> None:
        """Compress the batches that filled up and send ready batches from the calling
        (producing) thread, if a request slot is free.

        ``send`` calls this when a batch fills up: handing it to the sender thread would
        cost a GIL handoff (up to the interpreter's 5 ms switch interval while the caller
        keeps producing), which showed as 3-7x higher acknowledgement latency. For the
        same reason full batches are compressed here rather than when drained: in the
        sender thread every GIL release (zstd) costs up to one switch interval to get the
        GIL back from a busy producing thread, which made encoding 3 ms a 256 KiB batch
        and, with one request in flight per partition, capped throughput (the batches of
        the next request are now compressed while the current one is in flight).

        It sends only when no request is in flight (or the one in flight is slow, see
        ``_leave_to_sender_thread_locked``). Otherwise it leaves the batch to the sender
        thread: when that thread is in its blocking call (the usual case under load) it
        takes the batch once the answer comes, with the other batches ready by then (up
        to ``max_request_size``) in one request; when it is idle (the request in flight
        is a future) it sends at once, alongside, up to ``max_in_flight``. With 4
        partitions the producing thread used to send each partition's full batch as a
        request of its own, four at a time, and the extra requests' cost on both sides
        (gRPC futures, callbacks, broker handlers on 2 cores) made 4 partitions 0.88 as
        fast as 1 (bench.py: 480-510k against 550-580k records/s; now 630-680k against
        510-580k). Under a producer that saturates the sender that is mostly one request
        in flight at a time, up to ``max_request_size``: full requests take turns among
        the partitions (``RecordAccumulator.drain_locked``), else the ack p99 of 4
        partitions went from ~60 ms to 100-230 ms (it is ~60 ms with the turns).
        Unsaturated (latency.py) nothing changes: batches are sent by linger, one request
        at a time either way.
        """
        with self._acc.lock:
            if self._forced:
                return
            filled = self._acc.take_filled_locked()
            now = time.monotonic()
            if self._leave_to_sender_thread_locked(now):
                batches = []
                self._acc.sender_wakeup.notify()  # in case the sender thread is idle
            else:
                batches, _ = self._take_locked(now)
        for batch in filled:
            batch.compress_ahead(self._codec)
        if batches:
            self._send(batches)

    def _leave_to_sender_thread_locked(self, now: float) -> bool:
        """Whether a producing thread leaves its full batch to the sender thread: while a
        request is in flight, unless it is the sender thread's blocking call and that has
        taken longer than ``HAND_OVER_WITHIN_S`` (then the other partitions' batches go
        alongside rather than wait for it, up to ``request_timeout_ms``)."""
        if not self._in_flight:
            return False
        since = self._blocking_since
        return since is None or now - since < HAND_OVER_WITHIN_S

    def _take_locked(self, now: float) -> tuple[list[ProducerBatch], float | None]:
        """Drain ready batches into a new in-flight request, if a slot is free."""
        if self._in_flight >= self._max_in_flight:
            return [], None
        batches, next_ready = self._acc.drain_locked(now, self._muted, self._max_request_size)
        if batches:
            for batch in batches:
                self._muted.add((batch.topic, batch.partition))
            self._in_flight += 1
        return batches, next_ready

    # -- requests -------------------------------------------------------------------------

    def _ensure_producer_id(self) -> None:
        """Ask for a producer id unless there is one; raises the typed error of a failed
        InitProducerId (BrokerUnavailableError is retriable: the batches wait)."""
        with self._producer_id_lock:  # the sender thread and a producing thread may race here
            if self._idempotent and self._producer_id == codec.NO_PRODUCER_ID:
                self._init_producer_id()

    def _init_producer_id(self) -> None:
        try:
            response = self._transport.call(self._transport.log.InitProducerId, log_pb2.InitProducerIdRequest(),
                                            timeout_ms=int(self._request_timeout_s * 1000))
        except UnsupportedVersionError as exc:
            log.warning("idempotence turned off: the broker does not issue producer ids (%s)", exc)
            self._idempotent = False
            return
        with self._sequence_lock:
            self._producer_id, self._producer_epoch = response.producer_id, response.producer_epoch
            self._sequences.clear()

    def _send(self, batches: list[ProducerBatch], blocking: bool = False) -> None:
        groups: dict[tuple[str, int], list[ProducerBatch]] = {}
        for batch in batches:
            groups.setdefault((batch.topic, batch.partition), []).append(batch)
        partitions = []
        try:
            for (topic, partition), group in groups.items():
                data = [self._encode(batch) for batch in group]
                partitions.append(_PartitionData(topic=topic, partition=partition,
                                                 batches=data[0] if len(data) == 1 else b"".join(data)))
        except LogdError as exc:  # no producer id to be had now
            self._finish(groups, rpc_error=exc, rpc_retriable=exc.retriable)
            return
        request = log_pb2.ProduceRequest(partitions=partitions, acks=self._acks)
        if blocking:
            self._blocking_since = time.monotonic()
            try:
                self._complete(lambda: self._stream.call(request), groups)
            finally:
                self._blocking_since = None
            return
        try:
            future = self._transport.log.Produce.future(request, timeout=self._request_timeout_s)
        except Exception as exc:  # the channel was closed under us
            self._finish(groups, rpc_error=IllegalStateError(f"cannot send: {exc}"))
            return
        future.add_done_callback(lambda f: self._complete(f.result, groups))

    def _encode(self, batch: ProducerBatch) -> bytes:
        """The batch's bytes; on the first call its producer id and sequences are assigned."""
        if batch.encoded is not None:
            return batch.encoded
        producer_id, producer_epoch, sequence = self._next_sequence(batch)
        return batch.encode(self._codec, producer_id, producer_epoch, sequence)

    def _next_sequence(self, batch: ProducerBatch) -> tuple[int, int, int]:
        """(producer id, epoch, base sequence) for a new batch; takes its records' sequences."""
        while self._idempotent:
            with self._sequence_lock:
                if self._producer_id != codec.NO_PRODUCER_ID:
                    key = (batch.topic, batch.partition)
                    sequence = self._sequences.get(key, 0)
                    self._sequences[key] = (sequence + batch.count) % _SEQUENCE_MODULUS
                    return self._producer_id, self._producer_epoch, sequence
            self._ensure_producer_id()
        return codec.NO_PRODUCER_ID, codec.NO_PRODUCER_EPOCH, codec.NO_SEQUENCE

    def _settle_sequences(self, key: tuple[str, int], group: list[ProducerBatch], error: LogdError,
                          outcome_unknown: bool) -> None:
        """After the sent batches of one partition failed for good (see the module docstring)."""
        producer_id, _, first_sequence = _PRODUCER_FIELDS.unpack_from(group[0].encoded, _PRODUCER_FIELDS_AT)
        if producer_id < 0:
            return  # not idempotent
        with self._sequence_lock:
            if producer_id != self._producer_id:
                return  # numbered under a producer id dropped since
            if outcome_unknown or isinstance(error, _SEQUENCE_ERRORS):
                log.warning("dropping producer id %d after %s: %s", producer_id, type(error).__name__, error)
                self._producer_id, self._producer_epoch = codec.NO_PRODUCER_ID, codec.NO_PRODUCER_EPOCH
                self._sequences.clear()
            else:
                # The broker wrote none of them (and no later batch of the partition was
                # numbered: retried batches go out together): the next batch reuses them.
                self._sequences[key] = first_sequence

    # -- responses (gRPC callback thread) --------------------------------------------------

    def _complete(self, get_response: Callable[[], log_pb2.ProduceResponse],
                  groups: dict[tuple[str, int], list[ProducerBatch]]) -> None:
        try:
            response = get_response()
        except grpc.RpcError as exc:
            if self._forced:  # cut by close(): the records' outcome is unknown
                self._finish(groups, rpc_error=IllegalStateError("the producer was closed before the broker answered"))
                return
            error = error_from_rpc(exc, self._transport.target)
            retriable = is_retriable_rpc_error(exc, idempotent=True)
            self._finish(groups, rpc_error=error, rpc_retriable=retriable)
            return
        except Exception as exc:  # cancelled at close
            self._finish(groups, rpc_error=IllegalStateError(f"produce request abandoned: {exc}"))
            return
        self._finish(groups, response=response)

    def _finish(self, groups: dict[tuple[str, int], list[ProducerBatch]], *, response: log_pb2.ProduceResponse | None = None,
                rpc_error: LogdError | None = None, rpc_retriable: bool = False) -> None:
        """Resolve or requeue every batch of a finished request, then unmute its partitions."""
        outcomes: dict[tuple[str, int], tuple[int, LogdError | None]] = {}
        if response is not None:
            for result in response.results:
                error = error_from_proto(result.error, f"{result.topic}-{result.partition}")
                outcomes[(result.topic, result.partition)] = (result.base_offset, error)
        now = time.monotonic()
        done: list[tuple[ProducerBatch, int, LogdError | None]] = []
        retry: list[ProducerBatch] = []
        for key, group in groups.items():
            if rpc_error is not None:
                base_offset, error, retriable = -1, rpc_error, rpc_retriable
            else:
                base_offset, error = outcomes.get(key, (-1, UnknownServerError(f"no produce result for {key[0]}-{key[1]}")))
                retriable = error is not None and isinstance(error, (BrokerUnavailableError, LogdTimeoutError))
            if error is None:
                for batch in group:
                    done.append((batch, base_offset if self._acks != log_pb2.ACKS_NONE else -1, None))
                    if base_offset >= 0:
                        base_offset += batch.count
                continue
            if retriable and not self._forced and all(now < b.deadline for b in group):
                retry.extend(group)
                continue
            if isinstance(error, (TopicNotFoundError, PartitionNotFoundError)):
                self._on_metadata_error(key[0])
            if group[0].encoded is not None:
                self._settle_sequences(key, group, error, outcome_unknown=rpc_error is not None or retriable)
            for batch in group:
                done.append((batch, -1, error))
        attempt = max((b.attempts for b in retry), default=0)
        with self._acc.lock:
            self._in_flight -= 1
            for key in groups:
                self._muted.discard(key)
            if retry:
                log.debug("retrying %d batches: %s", len(retry), rpc_error or "partition error")
                self._acc.requeue_locked(retry, now + backoff_s(attempt, self._retry_backoff_ms, self._retry_backoff_max_ms))
            self._acc.release_locked([batch for batch, _, _ in done])
            self._acc.sender_wakeup.notify()
        for batch, base_offset, error in done:
            batch.result.complete(base_offset, error)
