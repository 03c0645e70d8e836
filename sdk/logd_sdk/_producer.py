"""Producer: the facade over the accumulator (batches) and the sender (RPCs).

``send`` validates, picks the partition (see ``_partitioner``), frames the record into its
partition's open batch and returns a :class:`FutureRecordMetadata`; the background
:class:`Sender` does the rest. Partition counts and ``max.message.bytes`` come from
DescribeTopic, cached per topic for ``metadata_max_age_ms`` and dropped when a produce
fails with TOPIC_NOT_FOUND or PARTITION_NOT_FOUND.

Thread safety: every public method may be called from any thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

from logd_sdk import codec
from logd_sdk._accumulator import RECORD_OVERHEAD, RecordAccumulator
from logd_sdk._admin import description_from_proto
from logd_sdk._errors import IllegalStateError, LogdTimeoutError, PartitionNotFoundError, RecordTooLargeError
from logd_sdk._future import FutureRecordMetadata
from logd_sdk._partitioner import StickyPartitioner, murmur3
from logd_sdk._sender import Sender
from logd_sdk._transport import Transport
from logd_sdk.protocol import log_pb2, topics_pb2

DEFAULT_MAX_MESSAGE_BYTES = 1048588  # Kafka's default max.message.bytes
_ACKS = {"all": log_pb2.ACKS_ALL, -1: log_pb2.ACKS_ALL, "-1": log_pb2.ACKS_ALL,
         1: log_pb2.ACKS_LEADER, "1": log_pb2.ACKS_LEADER, 0: log_pb2.ACKS_NONE, "0": log_pb2.ACKS_NONE}

HeadersArg = Mapping[str, bytes | None] | Iterable[tuple[str, bytes | None]] | None


@dataclass(frozen=True, slots=True)
class _TopicMetadata:
    partitions: int
    batch_limit: int        # framed bytes per batch: batch_size capped by max.message.bytes
    max_record_size: int    # framed bytes of the largest record the topic accepts
    expires_at: float       # time.time() after which it is fetched again


def _as_bytes(data: object, what: str) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or None, got {type(data).__name__}"
                    + (" (encode it first, e.g. .encode())" if isinstance(data, str) else ""))


def normalize_headers(headers: HeadersArg) -> list[tuple[bytes, bytes | None]]:
    """Headers as (UTF-8 key, value) pairs in order; a dict or an iterable of pairs."""
    shape = "headers must be a dict of str to bytes or a list of (str, bytes) pairs"
    if isinstance(headers, Mapping):
        pairs: Iterable[object] = headers.items()
    elif isinstance(headers, (str, bytes, bytearray)) or not isinstance(headers, Iterable):
        raise TypeError(f"{shape}, got {type(headers).__name__}")
    else:
        pairs = headers
    out: list[tuple[bytes, bytes | None]] = []
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{shape}, got the item {pair!r}")
        key, value = pair
        if not isinstance(key, str):
            raise TypeError(f"header keys must be str, got {key!r}")
        if value is not None and not isinstance(value, bytes):
            value = _as_bytes(value, f"header {key!r} value")
        encoded = key.encode()
        if len(encoded) > 0xFFFF:
            raise ValueError(f"header key {key[:20]!r}... is longer than 65535 bytes")
        out.append((encoded, value))
    if len(out) > 0xFFFF:  # the record format counts them in 16 bits
        raise ValueError(f"a record has at most 65535 headers, got {len(out)}")
    return out


class Producer:
    """Sends records to topics in batches, in the background (Kafka's producer model).

    ``acks``: "all" (durable per the broker's flush policy), 1, or 0 (no offsets back).
    ``compression``: "zstd" or "none". ``batch_size`` and ``buffer_memory`` are bytes of
    framed records; ``send`` blocks up to ``max_block_ms`` for metadata or buffer memory.
    A record fails after ``delivery_timeout_ms`` of retries. Use as a context manager or
    call :meth:`close`.
    """

    def __init__(self, bootstrap: str = "127.0.0.1:7070", *, linger_ms: float = 5, batch_size: int = 262144,
                 compression: str = "zstd", acks: str | int = "all", enable_idempotence: bool = True,
                 buffer_memory: int = 32 * 1024 * 1024, max_block_ms: int = 60000, max_in_flight: int = 5,
                 max_request_size: int = 1048576, request_timeout_ms: int = 30000,
                 delivery_timeout_ms: int = 120000, retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1000,
                 metadata_max_age_ms: int = 300000) -> None:
        if compression not in codec.CODECS:
            raise ValueError(f"compression must be one of {sorted(codec.CODECS)}, got {compression!r}")
        if acks not in _ACKS:
            raise ValueError(f"acks must be 'all', 1 or 0, got {acks!r}")
        for name, value in (("batch_size", batch_size), ("buffer_memory", buffer_memory),
                            ("max_in_flight", max_in_flight), ("max_request_size", max_request_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if linger_ms < 0 or max_block_ms < 0:
            raise ValueError("linger_ms and max_block_ms must be >= 0")
        self._transport = Transport(bootstrap, request_timeout_ms=request_timeout_ms,
                                    api_timeout_ms=max_block_ms, retry_backoff_ms=retry_backoff_ms,
                                    retry_backoff_max_ms=retry_backoff_max_ms)
        self._batch_size = batch_size
        self._max_block_ms = max_block_ms
        self._metadata_max_age_s = metadata_max_age_ms / 1000.0
        self._metadata: dict[str, _TopicMetadata] = {}
        self._metadata_lock = threading.Lock()
        self._sticky = StickyPartitioner(batch_size)
        self._accumulator = RecordAccumulator(batch_size=batch_size, linger_ms=linger_ms,
                                              buffer_memory=buffer_memory, max_block_ms=max_block_ms,
                                              delivery_timeout_ms=delivery_timeout_ms)
        self._sender = Sender(self._accumulator, self._transport, acks=_ACKS[acks], codec_id=codec.CODECS[compression],
                              max_in_flight=max_in_flight, max_request_size=max_request_size,
                              request_timeout_ms=request_timeout_ms, retry_backoff_ms=retry_backoff_ms,
                              retry_backoff_max_ms=retry_backoff_max_ms, enable_idempotence=enable_idempotence,
                              on_metadata_error=self._forget_topic)
        self._closed = False
        self._close_lock = threading.Lock()
        self._close_done = threading.Event()  # set once the first close() has finished
        self._sender.start()

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: HeadersArg = None,
             partition: int | None = None, timestamp_ms: int | None = None) -> FutureRecordMetadata:
        """Queue one record; returns a future resolving to its :class:`RecordMetadata`.

        Raises at once TopicNotFoundError (unknown topic), PartitionNotFoundError,
        RecordTooLargeError, LogdTimeoutError (no buffer memory within max_block_ms),
        TypeError for a key/value that is not bytes.
        """
        if value is not None and value.__class__ is not bytes:
            value = _as_bytes(value, "value")
        if key is not None and key.__class__ is not bytes:
            key = _as_bytes(key, "key")
        encoded_headers = normalize_headers(headers) if headers else None
        now = time.time()
        metadata = self._metadata.get(topic)
        if metadata is None or metadata.expires_at < now:
            metadata = self._fetch_metadata(topic)
        size = RECORD_OVERHEAD + (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
        if encoded_headers:
            for header_key, header_value in encoded_headers:
                size += 6 + len(header_key) + (len(header_value) if header_value is not None else 0)
        if size > metadata.max_record_size:
            raise RecordTooLargeError(
                f"the record is {size} bytes framed; topic {topic!r} accepts at most {metadata.max_record_size} "
                "(max.message.bytes)")
        partitions = metadata.partitions
        sticky = False
        if partition is None:
            if key is not None:
                partition = murmur3(key, 0, False) % partitions  # _partitioner.partition_for_key, inlined
            else:
                partition = self._sticky.partition(topic, partitions, size)
                sticky = True
        elif isinstance(partition, bool) or not isinstance(partition, int):
            raise TypeError(f"partition must be an int, got {partition!r}")
        elif not 0 <= partition < partitions:
            metadata = self._fetch_metadata(topic)  # it may have grown
            if not 0 <= partition < metadata.partitions:
                raise PartitionNotFoundError(
                    f"topic {topic!r} has {metadata.partitions} partitions (0-{metadata.partitions - 1}); "
                    f"there is no partition {partition}")
        if timestamp_ms is None:
            timestamp_ms = int(now * 1000)
        elif isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
            raise TypeError(f"timestamp_ms must be an int, got {timestamp_ms!r}")
        accumulator = self._accumulator
        future = accumulator.append(topic, partition, partitions, timestamp_ms, key, value, encoded_headers,
                                    size, metadata.batch_limit)
        if sticky:
            self._sticky.filling(topic, accumulator.last_batch)
        if accumulator.batch_filled:
            accumulator.batch_filled = False
            self._sender.send_ready_now()
        return future

    def partitions_for(self, topic: str) -> list[int]:
        """The partition numbers of a topic (fetched if not cached)."""
        metadata = self._metadata.get(topic)
        if metadata is None or metadata.expires_at < time.time():
            metadata = self._fetch_metadata(topic)
        return list(range(metadata.partitions))

    def flush(self, timeout_ms: int | None = None) -> None:
        """Send every record queued so far at once and wait until each is resolved.

        Raises LogdTimeoutError if that takes longer than ``timeout_ms`` (None: no limit).
        Failed records do not raise here: their futures hold the errors.
        """
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        acc = self._accumulator
        with acc.lock:
            pending = list(acc.incomplete.values())
            acc.flushing += 1
            acc.sender_wakeup.notify()
        try:
            for result in pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not result.wait(remaining):
                    raise LogdTimeoutError(f"flush did not complete within {timeout_ms} ms")
        finally:
            with acc.lock:
                acc.flushing -= 1

    def close(self, timeout_ms: int | None = None) -> None:
        """Send what is queued, wait for the answers (up to ``timeout_ms``), stop the sender.

        Records still unresolved at the deadline fail with IllegalStateError. Idempotent;
        a call while another thread closes waits for that close (up to its own
        ``timeout_ms``): it used to return at once, with records still unresolved.
        """
        with self._close_lock:
            first = not self._closed
            self._closed = True
        if not first:
            self._close_done.wait(None if timeout_ms is None else timeout_ms / 1000.0)
            return
        try:
            self._close(timeout_ms)
        finally:
            self._close_done.set()

    def _close(self, timeout_ms: int | None) -> None:
        acc = self._accumulator
        with acc.lock:
            acc.closed = True  # refuse new records; drain everything now
            acc.memory_freed.notify_all()
        self._sender.initiate_close()
        self._sender.join(None if timeout_ms is None else timeout_ms / 1000.0)
        if self._sender.is_alive():
            self._sender.force_close()
            with acc.lock:
                aborted = acc.abort_unsent_locked()
                acc.release_locked(aborted)
            for batch in aborted:
                batch.result.complete(-1, IllegalStateError("the producer was closed before the record was sent"))
            self._sender.join(5.0)
        self._transport.close()
        with acc.lock:
            leftovers = list(acc.incomplete.values())
        for result in leftovers:
            result.complete(-1, IllegalStateError("the producer was closed before the broker answered"))

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- metadata -------------------------------------------------------------------------

    def _fetch_metadata(self, topic: str) -> _TopicMetadata:
        if self._closed:
            raise IllegalStateError("the producer is closed")
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, got {type(topic).__name__}")
        with self._metadata_lock:
            response = self._transport.call(self._transport.topics.DescribeTopic,
                                            topics_pb2.DescribeTopicRequest(name=topic),
                                            timeout_ms=self._max_block_ms)
            description = description_from_proto(response)
            try:
                max_message_bytes = int(description.config.get("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES))
            except ValueError:
                max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
            max_record_size = max(1, max_message_bytes - codec.HEADER_SIZE)
            metadata = _TopicMetadata(
                partitions=max(1, len(description.partitions)),
                batch_limit=min(self._batch_size, max_record_size),
                max_record_size=max_record_size,
                expires_at=time.time() + self._metadata_max_age_s,
            )
            self._metadata[topic] = metadata
            return metadata

    def _forget_topic(self, topic: str) -> None:
        self._metadata.pop(topic, None)
