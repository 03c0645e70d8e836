"""The broker: topics and their partition logs behind one object, and the data path.

``Broker`` is what the gRPC servicers (and, in-process, the group coordinator) call. It
owns a ``TopicManager`` (admin operations, metadata, recovery) and implements produce,
fetch, list offsets and delete records on top of the partition logs.

Produce checks each batch's size against ``max.message.bytes`` (``check_batch_sizes``,
lengths only), then hands the batches to ``PartitionLog.append`` with ``check_records``:
the log verifies each batch's CRC and header once, then runs ``check_records`` on it
(exactly ``records_count`` well-formed records with offset deltas 0, 1, ..., no byte
left over; a zstd section is decompressed for it), without building record objects, so
that a producer can never store a batch that consumers cannot decode (one such batch
would block every consumer of the partition); then the log assigns offsets and makes the
batches durable per the flush policy.

Idempotent producers: a batch with a producer id (>= 0) is checked against the
partition's producer state (``broker.producer_state``: duplicates are answered with
their original offsets without being written, sequence gaps and stale epochs refused)
inside ``PartitionLog.append``, under the log's lock. The state is loaded on the first
such batch for the partition (snapshot + batch headers after it, see ``Partition``).

Fetch is a long-poll: it reads every requested partition within the byte budgets; if
fewer than ``min_bytes`` came back it waits (up to ``max_wait_ms``) on an event that
every append to one of those partitions sets (see ``broker.partition``), then reads
again. Each read pass holds at most ``max_bytes`` (plus one oversized first batch).

Lifecycle: ``open()`` (takes the data directory's lock, recovers every log) ->
serving -> ``begin_shutdown()`` (new requests get BrokerUnavailableError, long-polls
answer at once) -> ``close()`` (closes logs cleanly, releases the lock).

Lock order: TopicManager._lock, then whatever the storage engine takes. The data path
takes no broker lock (topic lookups are dict reads of immutable ``Topic`` values).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from logd.storage import OS_FILE_SYSTEM, LogConfig, PartitionLog
from logd.storage.batches import parse_batches
from logd.storage.files import is_read_only_file_system
from logd.storage.errors import LogClosedError, OffsetOutOfRangeError, StorageError
from logd_sdk import codec

from .config import TopicConfig
from .errors import (
    BrokerError, BrokerUnavailableError, InvalidRequestError, InvalidTopicError, PartitionNotFoundError,
    RecordTooLargeError, TopicNotFoundError,
)
from .models import (
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, DeleteRecordsResult, DeleteRecordsTarget, FetchResult, FetchTarget,
    OffsetQuery, OffsetResult, PartitionInfo, ProduceResult, ProduceTarget, TopicDescription,
)
from .names import is_internal
from .partition import Partition
from .producer_ids import ProducerIdManager
from .producer_state import DEFAULT_PRODUCER_ID_EXPIRATION_MS, ProducerStateManager, has_producer_ids, load_producer_state
from .topics import Topic, TopicManager

log = logging.getLogger(__name__)

DEFAULT_FETCH_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_PARTITION_FETCH_MAX_BYTES = 1024 * 1024
#: A fetch response must fit a gRPC message (64 MiB) with room for one oversized batch.
FETCH_MAX_BYTES_LIMIT = 32 * 1024 * 1024
FLUSH_POLICIES = ("group", "always", "never")
LOCK_FILE = ".lock"
#: Threads that lead the fsyncs of a many-partition produce request in parallel.
_FLUSH_THREADS = 8

_NEW, _OPEN, _CLOSING, _CLOSED = "new", "open", "closing", "closed"
#: Per-partition failures that are the client's or the disk's doing, not a broker bug.
_EXPECTED = (BrokerError, StorageError, codec.CorruptBatchError, OSError)


class TrafficObserver(Protocol):
    """Counts the data path's traffic (implemented by ``logd.server.metrics``); called
    outside every lock, once per partition of a request, never per record."""

    def produced(self, topic: str, partition: int, records: int, size_bytes: int) -> None: ...

    def fetched(self, topic: str, partition: int, batches: bytes) -> None: ...


class Broker:
    """One data directory's topics, served. Thread-safe; see the module docstring."""

    def __init__(self, data_dir: Path, *, flush_policy: str = "group",
                 clock_ms: Callable[[], int] | None = None, topic_defaults: Mapping[str, str] | None = None,
                 traffic: "TrafficObserver | None" = None,
                 producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS) -> None:
        """``topic_defaults``: broker-wide defaults of topic configs (topic keys, e.g.
        ``retention.ms``; InvalidConfigError when bad); ``traffic``: told of the records
        and bytes produced and fetched, once per partition and request (the server's metrics);
        ``producer_id_expiration_ms``: an idempotent producer idle that long is forgotten
        (Kafka's ``producer.id.expiration.ms``)."""
        if producer_id_expiration_ms <= 0:
            raise ValueError(f"producer_id_expiration_ms must be > 0, got {producer_id_expiration_ms}")
        self.producer_id_expiration_ms = producer_id_expiration_ms
        if flush_policy not in FLUSH_POLICIES:
            raise ValueError(f"flush policy must be one of {', '.join(FLUSH_POLICIES)}, got {flush_policy!r}")
        self.data_dir = Path(data_dir)
        self.flush_policy = flush_policy
        self._clock_ms = clock_ms
        self._state = _NEW
        self._lock_fd: int | None = None
        self.topic_defaults = TopicConfig.from_overrides(topic_defaults or {})
        self.traffic = traffic
        self.topics = TopicManager(self.data_dir, self.log_config, clock_ms, self.topic_defaults)
        self._producer_ids: ProducerIdManager | None = None
        #: Waits for the durability of a many-partition produce's other partitions.
        self._flush_pool = ThreadPoolExecutor(max_workers=_FLUSH_THREADS, thread_name_prefix="logd-flush")
        #: The data directory is on a read-only file system: reads only (see ``open``).
        self.read_only = False
        #: Called with a topic's name once it is deleted (the group coordinator drops the
        #: groups' committed offsets of it).
        self.topic_deleted_listeners: list[Callable[[str], None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> "Broker":
        """Lock the data directory and recover every partition; then requests are served."""
        assert self._state == _NEW, self._state
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A data directory on a read-only file system (an operator's choice, or the kernel's
        # reaction to disk errors): recover without writing and serve reads only.
        self.read_only = self.topics.read_only = is_read_only_file_system(self.data_dir)
        if self.read_only:
            log.warning("data directory %s is on a read-only file system: serving reads only", self.data_dir)
        self._lock_data_dir()
        try:
            self.topics.load()
            self._producer_ids = ProducerIdManager(self.data_dir)
        except BaseException:
            self._unlock_data_dir()
            raise
        self._state = _OPEN
        names = self.topics.names(include_internal=True)
        partitions = sum(len(topic.partitions) for topic in map(self.topics.get, names) if topic is not None)
        log.info("recovered %d topics with %d partitions in %.3f s (data dir %s)",
                 len(names), partitions, time.monotonic() - started, self.data_dir)
        return self

    def begin_shutdown(self) -> None:
        """Refuse new requests and make waiting fetches answer now."""
        if self._state == _OPEN:
            self._state = _CLOSING
        for name in self.topics.names(include_internal=True):
            topic = self.topics.get(name)
            for partition in topic.partitions if topic else ():
                partition.notify()

    def close(self) -> None:
        """Close every log cleanly (flush, clean-shutdown marker) and unlock the directory."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSING
        self.topics.close()
        self._flush_pool.shutdown(wait=True)
        self._unlock_data_dir()
        self._state = _CLOSED

    @property
    def is_open(self) -> bool:
        return self._state == _OPEN

    def log_config(self, config: TopicConfig) -> LogConfig:
        """The storage engine's config for a topic's partitions."""
        return LogConfig(segment_bytes=config.segment_bytes, segment_ms=config.segment_ms,
                         flush_policy=self.flush_policy)

    # -- topics ---------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int | None = None, config: Mapping[str, str] | None = None,
                     *, internal: bool = False) -> None:
        """Create a topic; ``internal`` allows a ``__`` name (for the broker's own topics)."""
        self._require_writable()
        self.topics.create(name, partitions, config or {}, internal=internal)

    def list_topics(self, include_internal: bool = False) -> list[str]:
        self._require_open()
        return self.topics.names(include_internal)

    def describe_topic(self, name: str) -> TopicDescription:
        self._require_open()
        topic = self.topics.require(name)
        infos = [
            PartitionInfo(p.index, p.log.log_start_offset, p.log.high_watermark, p.log.size_bytes)
            for p in topic.partitions
        ]
        return TopicDescription(topic.name, infos, topic.config.to_strings())

    def alter_topic_config(self, name: str, config: Mapping[str, str]) -> None:
        """Change only the keys given; the logs get the new config at once."""
        self._require_writable()
        self.topics.alter(name, config)

    def create_partitions(self, name: str, total: int) -> None:
        self._require_writable()
        self.topics.create_partitions(name, total)

    def delete_topic(self, name: str, *, internal: bool = False) -> None:
        self._require_writable()
        _check_writable(name, internal)
        self.topics.delete(name)
        for listener in list(self.topic_deleted_listeners):
            try:
                listener(name)
            except Exception:  # the topic is gone either way; say what was left behind
                log.exception("after deleting topic %s, a listener failed", name)

    # -- producer ids ---------------------------------------------------------------------

    def init_producer_id(self) -> tuple[int, int]:
        """``(producer_id, producer_epoch)`` for a new idempotent producer."""
        self._require_writable()
        return self._producer_ids.next_producer_id(), 0

    # -- produce --------------------------------------------------------------------------

    def produce(self, targets: Sequence[ProduceTarget], *, internal: bool = False) -> list[ProduceResult]:
        """Append each target's batches to its partition; one result per target, in order.

        Every target is written first, then all are awaited together: this thread waits
        for the first and the flush pool for the others, so that with the ``group`` flush
        policy the fsyncs of a many-partition request overlap instead of adding up (each
        log's wait leads its own fsync, which releases the GIL; four 30 KB appends take
        0.6 ms in parallel against 1.1 ms one after the other here).
        """
        self._require_open()
        results: list[ProduceResult | None] = [None] * len(targets)
        written = []
        single = len(targets) == 1  # then the log's own flush policy path is the shortest
        for i, target in enumerate(targets):
            try:
                partition = self._writable_partition(target, internal)
                log_ = partition.log
                written.append((i, partition, log_.append(target.batches, check_records) if single
                                else log_.append_unflushed(target.batches, check_records)))
            except Exception as exc:  # reported per partition; the others still succeed
                results[i] = ProduceResult(target.topic, target.partition, self._produce_error(target, exc))
        waits = [] if single else [self._submit_wait(partition.log, info.last_offset + 1)
                                   for _, partition, info in written[1:]]
        for n, (i, partition, info) in enumerate(written):
            target = targets[i]
            try:
                if n:
                    _finish_wait(waits[n - 1], partition.log, info.last_offset + 1)
                elif not single:
                    partition.log.wait_durable(info.last_offset + 1)
            except Exception as exc:
                results[i] = ProduceResult(target.topic, target.partition, self._produce_error(target, exc))
                continue
            partition.notify()
            if self.traffic is not None:
                self.traffic.produced(target.topic, target.partition, info.last_offset - info.base_offset + 1,
                                      len(target.batches))
            results[i] = ProduceResult(target.topic, target.partition, None, info.base_offset,
                                       info.log_append_time_ms, partition.log.log_start_offset)
        return results  # type: ignore[return-value]

    def _submit_wait(self, partition_log: PartitionLog, offset: int) -> Future | None:
        """A flush-pool wait for ``offset`` to be durable (None once the pool is shut down:
        the caller then waits itself)."""
        try:
            return self._flush_pool.submit(partition_log.wait_durable, offset)
        except RuntimeError:  # the broker is closing
            return None

    def _writable_partition(self, target: ProduceTarget, internal: bool) -> Partition:
        topic = self.topics.require(target.topic)
        _check_writable(target.topic, internal)
        partition = _partition(topic, target.partition)
        check_batch_sizes(target.batches, topic.config.max_message_bytes)  # the rest: in the append
        if has_producer_ids(target.batches):
            partition.producer_state(self._load_producer_state)  # before the append checks it
        return partition

    def _load_producer_state(self, partition_log: PartitionLog) -> ProducerStateManager:
        return load_producer_state(partition_log, fs=self.topics.fs or OS_FILE_SYSTEM, clock_ms=self._clock_ms,
                                   expiration_ms=self.producer_id_expiration_ms)

    def _produce_error(self, target: ProduceTarget, exc: Exception) -> Exception:
        if isinstance(exc, LogClosedError):
            return self._closed_error(target.topic, target.partition)
        if not isinstance(exc, _EXPECTED):
            log.exception("produce to %s-%d failed", target.topic, target.partition)
        return exc

    # -- fetch ----------------------------------------------------------------------------

    def fetch(self, targets: Sequence[FetchTarget], *, max_wait_ms: int = 0, min_bytes: int = 1,
              max_bytes: int = DEFAULT_FETCH_MAX_BYTES) -> list[FetchResult]:
        """Read whole batches from each target offset; wait for ``min_bytes`` up to ``max_wait_ms``.

        Budgets: the response holds at most ``max_bytes`` and each partition at most its
        own ``max_bytes``, except that a partition's first batch is returned whole when it
        is the first data of the response, or when it still fits the response budget
        (so one large batch never blocks a consumer). Answers at once when a partition
        has an error.
        """
        self._require_open()
        max_bytes = min(max_bytes, FETCH_MAX_BYTES_LIMIT) if max_bytes > 0 else DEFAULT_FETCH_MAX_BYTES
        min_bytes = max(min_bytes, 1)
        resolved = [self._resolve(target) for target in targets]
        deadline = time.monotonic() + max(max_wait_ms, 0) / 1000
        waiter: threading.Event | None = None
        try:
            while True:
                results, total, failed = self._read_once(resolved, max_bytes)
                remaining_s = deadline - time.monotonic()
                if total >= min_bytes or failed or remaining_s <= 0 or self._state != _OPEN:
                    if self.traffic is not None and total:
                        for result in results:
                            if result.batches:
                                self.traffic.fetched(result.topic, result.partition, result.batches)
                    return results
                if waiter is None:
                    # Register before reading again, so that no append can slip between.
                    waiter = threading.Event()
                    for _, partition in resolved:
                        if isinstance(partition, Partition):
                            partition.add_waiter(waiter)
                    continue
                waiter.wait(remaining_s)
                waiter.clear()
        finally:
            if waiter is not None:
                for _, partition in resolved:
                    if isinstance(partition, Partition):
                        partition.remove_waiter(waiter)

    def _resolve(self, target: FetchTarget) -> tuple[FetchTarget, Partition | Exception]:
        try:
            return target, _partition(self.topics.require(target.topic), target.partition)
        except BrokerError as exc:
            return target, exc

    def _read_once(self, resolved, max_bytes: int) -> tuple[list[FetchResult], int, bool]:
        results: list[FetchResult] = []
        total = 0
        failed = False
        for target, partition in resolved:
            if isinstance(partition, Exception):
                results.append(FetchResult(target.topic, target.partition, partition))
                failed = True
                continue
            try:
                data = b""
                remaining = max_bytes - total
                if remaining > 0:
                    data = self._read_partition(partition, target, remaining, first=total == 0)
                log_ = partition.log
                results.append(FetchResult(target.topic, target.partition, None,
                                           log_.high_watermark, log_.log_start_offset, data))
                total += len(data)
            except Exception as exc:
                if isinstance(exc, LogClosedError):
                    exc = self._closed_error(target.topic, target.partition)
                elif not isinstance(exc, _EXPECTED):
                    log.exception("fetch from %s failed", partition)
                if isinstance(exc, OffsetOutOfRangeError):  # the range, so the client can say it
                    results.append(FetchResult(target.topic, target.partition, exc, exc.high_watermark,
                                               exc.log_start_offset))
                else:
                    results.append(FetchResult(target.topic, target.partition, exc))
                failed = True
        return results, total, failed

    @staticmethod
    def _read_partition(partition: Partition, target: FetchTarget, remaining: int, first: bool) -> bytes:
        limit = min(target.max_bytes if target.max_bytes > 0 else DEFAULT_PARTITION_FETCH_MAX_BYTES, remaining)
        data = partition.log.read(target.offset, limit)
        if len(data) > limit:
            # The log answers with at least one whole batch: keep what fits the budgets.
            data = whole_batches_within(data, limit, None if first else remaining)
        return data

    # -- offsets and delete records -------------------------------------------------------

    def list_offsets(self, queries: Sequence[OffsetQuery]) -> list[OffsetResult]:
        """Earliest (-2), latest (-1) or first offset at/after a timestamp, per partition."""
        self._require_open()
        results = []
        for query in queries:
            try:
                results.append(self._list_offset(query))
            except Exception as exc:
                if isinstance(exc, LogClosedError):
                    exc = self._closed_error(query.topic, query.partition)
                results.append(OffsetResult(query.topic, query.partition, exc))
        return results

    def _list_offset(self, query: OffsetQuery) -> OffsetResult:
        partition_log = _partition(self.topics.require(query.topic), query.partition).log
        if query.timestamp_ms == EARLIEST_TIMESTAMP:
            return OffsetResult(query.topic, query.partition, None, partition_log.log_start_offset, -1)
        if query.timestamp_ms == LATEST_TIMESTAMP:
            return OffsetResult(query.topic, query.partition, None, partition_log.high_watermark, -1)
        if query.timestamp_ms < 0:
            raise InvalidRequestError(
                f"timestamp_ms {query.timestamp_ms} is neither -2 (earliest), -1 (latest) nor a time in ms")
        found = partition_log.offset_for_timestamp(query.timestamp_ms)
        if found is None:
            return OffsetResult(query.topic, query.partition, None, -1, -1)
        offset, timestamp_ms = found
        return OffsetResult(query.topic, query.partition, None, offset, timestamp_ms)

    def delete_records(self, targets: Sequence[DeleteRecordsTarget], *, internal: bool = False) -> list[DeleteRecordsResult]:
        """Move each partition's log start offset forward (-1: to the log end offset)."""
        self._require_open()
        results = []
        for target in targets:
            try:
                results.append(self._delete_records_one(target, internal))
            except Exception as exc:
                if isinstance(exc, LogClosedError):
                    exc = self._closed_error(target.topic, target.partition)
                results.append(DeleteRecordsResult(target.topic, target.partition, exc))
        return results

    def _delete_records_one(self, target: DeleteRecordsTarget, internal: bool) -> DeleteRecordsResult:
        topic = self.topics.require(target.topic)
        _check_writable(target.topic, internal)
        partition_log = _partition(topic, target.partition).log
        end = partition_log.high_watermark
        offset = end if target.offset == -1 else target.offset
        if offset < 0:
            raise InvalidRequestError(f"offset {target.offset} is neither -1 (the log end) nor an offset")
        if offset > end:
            raise OffsetOutOfRangeError(offset, partition_log.log_start_offset, end)
        if offset > partition_log.log_start_offset:
            partition_log.delete_records_before(offset)
        return DeleteRecordsResult(target.topic, target.partition, None, partition_log.log_start_offset)

    # -- helpers --------------------------------------------------------------------------

    def _require_writable(self) -> None:
        self._require_open()
        if self.read_only:
            raise StorageError(f"the data directory {self.data_dir} is on a read-only file system; "
                               f"the broker serves reads only until it is writable and restarted")

    def _require_open(self) -> None:
        if self._state != _OPEN:
            what = "is starting up (recovering its logs)" if self._state == _NEW else "is shutting down"
            raise BrokerUnavailableError(f"the broker {what}; retry shortly")

    def _closed_error(self, name: str, index: int) -> BrokerError:
        """What a LogClosedError means to the client: the topic went away, or we are stopping."""
        if self._state != _OPEN:
            return BrokerUnavailableError("the broker is shutting down; retry shortly")
        if self.topics.get(name) is None:
            return TopicNotFoundError(f"topic {name!r} was deleted")
        return BrokerUnavailableError(f"the log of {name}-{index} is closed; retry shortly")

    def _lock_data_dir(self) -> None:
        if self.read_only:
            try:  # a read-only lock still keeps a second broker out
                fd = os.open(self.data_dir / LOCK_FILE, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BrokerError(f"data directory {self.data_dir} is in use by another broker") from None
            self._lock_fd = fd
            return
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BrokerError(f"data directory {self.data_dir} is in use by another broker") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None


def check_batches(batches: bytes, max_message_bytes: int) -> int:
    """Everything produce checks, without appending: ``check_batch_sizes``, then each
    batch's CRC and header (the log's ``parse_batches``) and its records
    (``check_records``). Returns the count. Raises RecordTooLargeError,
    InvalidRequestError or ``codec.CorruptBatchError``.
    """
    check_batch_sizes(batches, max_message_bytes)
    return len(parse_batches(batches, check_records))


def check_batch_sizes(batches: bytes, max_message_bytes: int) -> int:
    """Check that the batches tile the buffer and each fits ``max_message_bytes``, from
    their length fields only (no CRC: ``PartitionLog.append`` verifies it once, before
    ``check_records``). Returns the count. Raises RecordTooLargeError,
    InvalidRequestError or ``codec.CorruptBatchError``.
    """
    end = len(batches)
    if end == 0:
        raise InvalidRequestError("no batches to append")
    position = count = 0
    while position < end:
        if end - position < codec.HEADER_SIZE:
            raise codec.CorruptBatchError(f"truncated batch at byte {position}: {end - position} bytes left")
        size = codec.batch_size_at(batches, position)
        if size > max_message_bytes:
            raise RecordTooLargeError(
                f"a batch of {size} bytes is larger than the topic's max.message.bytes ({max_message_bytes}); "
                f"send smaller batches or raise max.message.bytes")
        if size < codec.HEADER_SIZE or size > end - position:
            raise codec.CorruptBatchError(f"batch at byte {position} claims {size} bytes, {end - position} are there")
        position += size
        count += 1
    return count


#: A record's fixed fields, the timestamp delta skipped: offset_delta u32, key_length i32,
#: value_length i32, headers_count u16 (layout in ``logd_sdk.codec``).
_RECORD = struct.Struct("<I4xiiH")
_RECORD_SIZE = _RECORD.size  # 18: the timestamp delta is skipped, not left out
_HEADER_KEY_LENGTH = struct.Struct("<H")
_HEADER_VALUE_LENGTH = struct.Struct("<i")


def _finish_wait(wait: Future | None, partition_log: PartitionLog, offset: int) -> None:
    """Finish a flush-pool wait; one the pool has not started yet (it is busy with other
    requests' waits) is taken back and done here, so a request never queues behind others."""
    if wait is None or wait.cancel():
        partition_log.wait_durable(offset)
    else:
        wait.result()


def check_records(batches: bytes | memoryview, position: int, header: codec.BatchHeader) -> None:
    """Walk the (decompressed) records section of the CRC-checked batch at ``position``:
    exactly ``records_count`` records (at least one), offset deltas 0, 1, ..., every
    length within the section and no byte left over. Raises ``codec.CorruptBatchError``.

    A loop over length fields (about 0.13 µs per record), no objects built: the broker's
    one look inside a batch (Kafka's LogValidator does the same). An uncompressed section
    is walked where it lies; a zstd one is decompressed, as a consumer would
    (``codec.decompress`` refuses a frame that declares more than ``MAX_BATCH_BYTES``
    before allocating anything): the header's record count cannot be trusted without
    this walk, and a frame that does not decompress must be refused.
    """
    count = header.records_count
    if count < 1 or header.last_offset_delta != count - 1:
        raise codec.CorruptBatchError(
            f"batch at byte {position}: {count} records but last offset delta {header.last_offset_delta}")
    section = memoryview(batches)[position + codec.HEADER_SIZE:position + header.size]
    if header.codec != codec.CODEC_NONE:
        try:
            section = codec.decompress(section, header.codec)
        except codec.CorruptBatchError as exc:
            raise codec.CorruptBatchError(f"batch at byte {position}: {exc}") from None
    end = len(section)
    at = 0
    unpack_record, fixed = _RECORD.unpack_from, _RECORD_SIZE
    try:
        for index in range(count):
            offset_delta, key_length, value_length, headers_count = unpack_record(section, at)
            # The produce path's hottest loop: a single test lets the common record (its
            # own offset delta, a key and a value, no headers) through.
            if offset_delta != index or headers_count or key_length < 0 or value_length < 0:
                if offset_delta != index or key_length < -1 or value_length < -1:
                    raise _bad_record(position, index, offset_delta, key_length, value_length)
                at += fixed + (key_length if key_length > 0 else 0) + (value_length if value_length > 0 else 0)
                if headers_count:
                    at = _skip_headers(section, at, headers_count, position, index)
            else:
                at += fixed + key_length + value_length
    except (struct.error, UnicodeDecodeError):
        at = end + 1  # a length ran past the section
    if at != end:
        raise codec.CorruptBatchError(
            f"batch at byte {position}: its records do not fill their section exactly "
            f"({count} records claimed in {end} bytes)")


def _bad_record(position: int, index: int, offset_delta: int, key_length: int, value_length: int) -> Exception:
    return codec.CorruptBatchError(
        f"batch at byte {position}: record {index} has offset delta {offset_delta}, "
        f"key length {key_length}, value length {value_length}")


def _skip_headers(section: bytes | memoryview, at: int, headers_count: int, position: int, index: int) -> int:
    """The position after a record's headers (see ``check_records``)."""
    for _ in range(headers_count):
        key_end = at + 2 + _HEADER_KEY_LENGTH.unpack_from(section, at)[0]
        str(section[at + 2:key_end], "utf-8")  # consumers decode header keys as UTF-8
        header_value_length = _HEADER_VALUE_LENGTH.unpack_from(section, key_end)[0]
        if header_value_length < -1:
            raise codec.CorruptBatchError(
                f"batch at byte {position}: record {index} has a header value length {header_value_length}")
        at = key_end + 4 + (header_value_length if header_value_length > 0 else 0)
    return at


def whole_batches_within(data: bytes, limit: int, hard_limit: int | None) -> bytes:
    """The longest prefix of whole batches within ``limit`` bytes.

    With ``hard_limit`` None the first batch is kept even if larger than ``limit``;
    otherwise the first batch is kept only if it fits ``hard_limit``.
    """
    position = 0
    end = len(data)
    while end - position >= codec.HEADER_SIZE:
        size = codec.batch_size_at(data, position)
        if size < codec.HEADER_SIZE or position + size > end:
            break
        if position + size > limit:
            if position == 0 and (hard_limit is None or size <= hard_limit):
                position = size
            break
        position += size
    return data[:position]


def _partition(topic: Topic, index: int) -> Partition:
    if not 0 <= index < len(topic.partitions):
        raise PartitionNotFoundError(
            f"topic {topic.name!r} has partitions 0..{len(topic.partitions) - 1}, not {index}")
    return topic.partitions[index]


def _check_writable(name: str, internal: bool) -> None:
    if is_internal(name) and not internal:
        raise InvalidTopicError(f"topic {name!r} is internal: only the broker writes to it")

