"""The idempotent producer's state in one partition: which sequence numbers each producer wrote.

Kafka's ``ProducerStateManager`` reduced to idempotence (no transactions). A producer
asks the broker for a producer id (``InitProducerId``) and numbers its batches per
partition: a batch's ``base_sequence`` is the sequence of its first record, the next
batch starts at ``base_sequence + records``, wrapping at 2^31. Retrying a batch resends
the same bytes, hence the same sequence numbers, which is how a retry is recognised.

What is kept, per producer id: its epoch, when it last appended, and the (first
sequence, last sequence, base offset, last offset) of its last ``BATCHES_PER_PRODUCER``
(5, Kafka's number) batches in this partition: about 150 bytes per producer.

The check (``check_append_locked``), for each batch of an append that carries a producer
id (>= 0). It runs under the partition log's lock, in the same hold as the write, so two
copies of one batch can never both pass before one of them is written:

- known producer, older epoch: :class:`InvalidProducerEpochError` (INVALID_PRODUCER_EPOCH);
- known producer, newer epoch: a new session, whose first sequence must be 0;
- known producer, same epoch: a sequence range equal to one of the cached batches is a
  *duplicate*: the append is answered with that batch's original offsets and nothing
  is written; otherwise the first sequence must be the last one + 1 (mod 2^31), else
  :class:`OutOfOrderSequenceError` (OUT_OF_ORDER_SEQUENCE);
- unknown producer: accepted whatever its sequence (Kafka since KIP-360). The state of
  a live producer is lost only when it expired (idle for ``producer.id.expiration.ms``,
  one day) or when retention/compaction removed its batches and no snapshot remembers
  them; refusing it then (UNKNOWN_PRODUCER_ID, Kafka before 2.5) made idle producers
  fail for nothing, while accepting risks a duplicate only for a retry that arrives
  after its state is gone, which a retry (bounded by the producer's
  ``delivery_timeout_ms``, two minutes) does not do. ``UnknownProducerIdError`` exists
  for the wire code but this broker does not raise it.

An append holds only new batches or only duplicates (of batches written together, so
their original offsets are consecutive and one base offset answers for all). A mix is
refused with OUT_OF_ORDER_SEQUENCE: the SDK never sends one (a retried request goes out
with its own batches only).

Recovery. The state is derived from the batch headers, so it can always be rebuilt by
reading the headers (61 bytes per batch, never the records) of the log.
``load_producer_state`` (on the first idempotent produce to the partition after start-up)
reads the snapshot, then replays the headers from the snapshot's offset to the log end
without the log's lock, then attaches to the log, which replays whatever was appended
meanwhile under its lock. Without a usable snapshot it replays from the log start.

Snapshot: ``<partition dir>/producer-state.snapshot``, written atomically through the
storage's file seam whenever the log persists its recovery point (roll, flush, close,
and every recovery-checkpoint interval under load) if the state changed. It holds the
state as of the recovery point R (only batches below R: every one of them is durable,
so a crash cannot leave the snapshot ahead of the log). Layout, little-endian::

    magic "LDPS" | u32 version 1 | i64 R | u32 producers
    producers x { i64 producer_id | i16 epoch | i64 last_append_ms | u8 n
                  n x { i32 first_seq | i32 last_seq | i64 base_offset | i64 last_offset } }
    u32 CRC-32 of everything before it

A snapshot whose CRC fails, or whose R lies past the log end (the log was truncated),
is ignored (a warning) and the headers are replayed from the log start.

Expiry: a producer idle for ``expiration_ms`` (Kafka's ``producer.id.expiration.ms``,
one day) is forgotten, checked at most every ``EXPIRATION_CHECK_INTERVAL_MS`` on append
and before each snapshot; so memory is bounded by the producers of the last day.
Producers replayed from the log count as active at load time (the batch timestamps are
the producers' clocks and may be far in the past).

Limits: duplicates are recognised among a producer's last 5 batches per partition (the
SDK has one request in flight per partition, so a retry is always of the last one);
retention or compaction may remove batches, and a producer whose batches all went
*and* who is in no snapshot is unknown (accepted, see above) after a restart.

Thread-safety: every ``*_locked`` method runs under the owning ``PartitionLog``'s lock
(the log calls them); nothing else touches the state once it is attached.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from logd.storage import AppendInfo, FileSystem, OS_FILE_SYSTEM, PartitionLog
from logd.storage.files import read_file, write_file_atomic
from logd.storage.segment import BatchPosition
from logd.storage.recovery import PRODUCER_STATE_FILE
from logd_sdk import codec

from .errors import BrokerError, InvalidRequestError

log = logging.getLogger(__name__)

BATCHES_PER_PRODUCER = 5
SEQUENCE_MODULUS = 1 << 31
DEFAULT_PRODUCER_ID_EXPIRATION_MS = 24 * 3600 * 1000
EXPIRATION_CHECK_INTERVAL_MS = 10 * 60 * 1000
SNAPSHOT_FILE = PRODUCER_STATE_FILE

_MAGIC = b"LDPS"
_VERSION = 1
_SNAPSHOT_HEADER = struct.Struct("<4sIqI")
_PRODUCER = struct.Struct("<qhqB")
_BATCH = struct.Struct("<iiqq")
_CRC = struct.Struct("<I")
#: producer_id, producer_epoch, base_sequence at byte 43 of a batch header (see codec).
_PRODUCER_FIELDS = struct.Struct("<qhi")
_PRODUCER_FIELDS_AT = 43


class OutOfOrderSequenceError(BrokerError):
    """A batch's sequence number is not the one after its producer's last (a gap)."""


class InvalidProducerEpochError(BrokerError):
    """A batch's producer epoch is older than the producer's current one (fenced)."""


class UnknownProducerIdError(BrokerError):
    """The producer id is unknown (not raised by this broker; see the module docstring)."""


class BatchMetadata(NamedTuple):
    """One appended batch of a producer: its sequence range and where it went."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


class ProducerEntry:
    """The state of one producer id in one partition."""

    __slots__ = ("producer_id", "epoch", "batches", "last_append_ms")

    def __init__(self, producer_id: int, epoch: int, last_append_ms: int) -> None:
        self.producer_id = producer_id
        self.epoch = epoch
        self.batches: deque[BatchMetadata] = deque(maxlen=BATCHES_PER_PRODUCER)
        self.last_append_ms = last_append_ms

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def duplicate_of(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None

    def add(self, epoch: int, batch: BatchMetadata, now_ms: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches.clear()
        self.batches.append(batch)
        self.last_append_ms = max(self.last_append_ms, now_ms)


def next_sequence(sequence: int) -> int:
    """The sequence after ``sequence`` (wraps from 2^31 - 1 to 0, as Kafka's)."""
    return (sequence + 1) % SEQUENCE_MODULUS


def last_sequence(first_seq: int, last_offset_delta: int) -> int:
    """The last sequence of a batch (from the offset delta, which compaction keeps)."""
    return (first_seq + last_offset_delta) % SEQUENCE_MODULUS


def has_producer_ids(batches: bytes | bytearray | memoryview) -> bool:
    """Whether any batch in a produce buffer carries a producer id (headers only; the
    buffer's framing was checked by ``check_batch_sizes``)."""
    position, end = 0, len(batches)
    while end - position >= codec.HEADER_SIZE:
        if _PRODUCER_FIELDS.unpack_from(batches, position + _PRODUCER_FIELDS_AT)[0] >= 0:
            return True
        size = codec.batch_size_at(batches, position)
        if size < codec.HEADER_SIZE:
            return False
        position += size
    return False


class ProducerStateManager:
    """The producer state of one partition, attached to its log as the append observer.

    ``clock_ms`` is the broker's clock (expiry, last append times); ``fs`` the storage's
    file seam (snapshots). See the module docstring for the rules and thread safety.
    """

    def __init__(self, directory: Path, *, fs: FileSystem = OS_FILE_SYSTEM,
                 clock_ms: Callable[[], int] | None = None,
                 expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS) -> None:
        assert expiration_ms > 0
        self.directory = Path(directory)
        self._fs = fs
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._expiration_ms = expiration_ms
        self._producers: dict[int, ProducerEntry] = {}
        self._last_expiry_check_ms = self._clock_ms()
        self._snapshot_offset = -1  # the R of the snapshot on disk (-1: none)
        self._changed_since_snapshot = False

    # -- queries (for tests and tools) ------------------------------------------------------

    def producer_ids(self) -> list[int]:
        return sorted(self._producers)

    def entry(self, producer_id: int) -> ProducerEntry | None:
        return self._producers.get(producer_id)

    @property
    def snapshot_offset(self) -> int:
        """The offset of the snapshot on disk (-1 when there is none)."""
        return self._snapshot_offset

    # -- the append observer (PartitionLog calls these with its lock held) -----------------

    def check_append_locked(self, data: bytes | bytearray | memoryview,
                            batches: Sequence[BatchPosition]) -> AppendInfo | None:
        """None when every batch may be written; the original offsets when every batch is a
        duplicate; raises when one may not be written (nothing of the call is written)."""
        pending: dict[int, tuple[int, int]] = {}  # producers earlier in this call: epoch, last seq
        duplicates: list[BatchMetadata] = []
        new = 0
        for batch in batches:
            producer_id, epoch, first_seq = _PRODUCER_FIELDS.unpack_from(data, batch.position + _PRODUCER_FIELDS_AT)
            if producer_id < 0:
                new += 1
                continue
            if epoch < 0 or first_seq < 0:
                raise InvalidRequestError(
                    f"a batch of producer {producer_id} has epoch {epoch} and base sequence {first_seq}; "
                    f"an idempotent batch needs both >= 0")
            last_seq = last_sequence(first_seq, batch.next_offset - batch.base_offset - 1)
            duplicate = self._check_one(producer_id, epoch, first_seq, last_seq, pending)
            if duplicate is None:
                new += 1
                pending[producer_id] = (epoch, last_seq)
            else:
                duplicates.append(duplicate)
        if not duplicates:
            return None
        if new:
            raise OutOfOrderSequenceError(
                "the request mixes batches already written with new ones; send a retried batch on its own")
        for before, after in zip(duplicates, duplicates[1:]):
            if after.base_offset != before.last_offset + 1:
                raise OutOfOrderSequenceError("the duplicate batches of the request were not written together")
        return AppendInfo(duplicates[0].base_offset, duplicates[-1].last_offset, -1)

    def _check_one(self, producer_id: int, epoch: int, first_seq: int, last_seq: int,
                   pending: dict[int, tuple[int, int]]) -> BatchMetadata | None:
        if producer_id in pending:
            pending_epoch, pending_last = pending[producer_id]
            if epoch == pending_epoch and first_seq == next_sequence(pending_last):
                return None
            raise OutOfOrderSequenceError(
                f"producer {producer_id}: batches of one request must follow each other "
                f"(expected sequence {next_sequence(pending_last)}, epoch {pending_epoch}; got {first_seq}, {epoch})")
        entry = self._producers.get(producer_id)
        if entry is None:
            return None  # unknown: accepted (KIP-360, see the module docstring)
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"producer {producer_id} has epoch {entry.epoch}; a batch with the older epoch {epoch} is fenced")
        if epoch > entry.epoch:
            if first_seq != 0:
                raise OutOfOrderSequenceError(
                    f"producer {producer_id}: the first batch of epoch {epoch} must have sequence 0, not {first_seq}")
            return None
        duplicate = entry.duplicate_of(first_seq, last_seq)
        if duplicate is not None:
            return duplicate
        if not entry.batches or first_seq == next_sequence(entry.last_seq):
            return None
        raise OutOfOrderSequenceError(
            f"producer {producer_id}: expected sequence {next_sequence(entry.last_seq)}, got {first_seq} "
            f"(a batch before it is missing)")

    def appended_locked(self, data: bytes | bytearray | memoryview, batches: Sequence[BatchPosition],
                        now_ms: int) -> None:
        """Record the batches just written (with their assigned offsets)."""
        for batch in batches:
            producer_id, epoch, first_seq = _PRODUCER_FIELDS.unpack_from(data, batch.position + _PRODUCER_FIELDS_AT)
            if producer_id < 0:
                continue
            delta = batch.next_offset - batch.base_offset - 1
            self._add(producer_id, epoch, BatchMetadata(first_seq, last_sequence(first_seq, delta),
                                                        batch.base_offset, batch.next_offset - 1), now_ms)
        if now_ms - self._last_expiry_check_ms >= EXPIRATION_CHECK_INTERVAL_MS:
            self._expire(now_ms)

    def replay_locked(self, header: codec.BatchHeader) -> None:
        """A batch already in the log (see the module docstring: recovery)."""
        self.replay(header, self._clock_ms())

    def truncated_locked(self, log_end_offset: int) -> None:
        """Forget the batches at or past ``log_end_offset`` (the log was cut there)."""
        for producer_id in list(self._producers):
            entry = self._producers[producer_id]
            while entry.batches and entry.batches[-1].last_offset >= log_end_offset:
                entry.batches.pop()
            if not entry.batches:
                del self._producers[producer_id]
        if self._snapshot_offset > log_end_offset:
            self._delete_snapshot()
        self._changed_since_snapshot = True

    def checkpointed_locked(self, recovery_offset: int) -> None:
        """The log persisted its recovery point: snapshot the state as of it, if changed.
        A failed write is logged and costs only a longer replay at the next load."""
        if not self._changed_since_snapshot and self._snapshot_offset >= 0:
            return
        self._expire(self._clock_ms())
        try:
            self.write_snapshot(recovery_offset)
        except OSError as exc:
            log.warning("%s: could not write the producer state snapshot: %s", self.directory, exc)

    # -- building ---------------------------------------------------------------------------

    def batches_to_keep_locked(self) -> list[int]:
        """Each producer's newest batch: compaction keeps it (emptied), so that a rebuild
        from the headers (no usable snapshot) still knows the producer's last sequence;
        else its next batch would be refused as OUT_OF_ORDER_SEQUENCE (Kafka's cleaner
        keeps these batches too)."""
        return [entry.batches[-1].base_offset for entry in self._producers.values() if entry.batches]

    def replay(self, header: codec.BatchHeader, now_ms: int) -> None:
        """Apply a batch read back from the log (no checks: the log is the authority)."""
        if header.producer_id < 0:
            return
        self._add(header.producer_id, header.producer_epoch,
                  BatchMetadata(header.base_sequence, last_sequence(header.base_sequence, header.last_offset_delta),
                                header.base_offset, header.last_offset), now_ms)

    def _add(self, producer_id: int, epoch: int, batch: BatchMetadata, now_ms: int) -> None:
        entry = self._producers.get(producer_id)
        if entry is None:
            entry = self._producers[producer_id] = ProducerEntry(producer_id, epoch, now_ms)
        entry.add(epoch, batch, now_ms)
        self._changed_since_snapshot = True

    def _expire(self, now_ms: int) -> None:
        self._last_expiry_check_ms = now_ms
        horizon = now_ms - self._expiration_ms
        expired = [pid for pid, entry in self._producers.items() if entry.last_append_ms <= horizon]
        for producer_id in expired:
            del self._producers[producer_id]
        if expired:
            self._changed_since_snapshot = True
            log.info("%s: forgot %d producer ids idle for %d ms", self.directory, len(expired), self._expiration_ms)

    # -- snapshots --------------------------------------------------------------------------

    @property
    def snapshot_path(self) -> Path:
        return self.directory / SNAPSHOT_FILE

    def write_snapshot(self, offset: int) -> None:
        """Write the state as of ``offset`` (batches below it) atomically."""
        parts = [b""]
        count = 0
        for entry in self._producers.values():
            kept = [batch for batch in entry.batches if batch.last_offset < offset]
            if not kept:
                continue
            count += 1
            parts.append(_PRODUCER.pack(entry.producer_id, entry.epoch, entry.last_append_ms, len(kept)))
            parts.extend(_BATCH.pack(*batch) for batch in kept)
        parts[0] = _SNAPSHOT_HEADER.pack(_MAGIC, _VERSION, offset, count)
        body = b"".join(parts)
        write_file_atomic(self._fs, self.snapshot_path, body + _CRC.pack(zlib.crc32(body)))
        self._snapshot_offset = offset
        self._changed_since_snapshot = False

    def load_snapshot(self, log_end_offset: int) -> int:
        """Load the snapshot if it is valid and not past ``log_end_offset``; returns its
        offset, or -1 (then the state is empty)."""
        self._producers.clear()
        try:
            data = read_file(self._fs, self.snapshot_path)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            log.warning("%s: unreadable producer state snapshot (%s); replaying the log", self.directory, exc)
            return -1
        try:
            offset, producers = parse_snapshot(data)
        except ValueError as exc:
            log.warning("%s: invalid producer state snapshot (%s); replaying the log", self.directory, exc)
            return -1
        if offset > log_end_offset:
            log.warning("%s: the producer state snapshot at offset %d is past the log end %d; replaying the log",
                        self.directory, offset, log_end_offset)
            self._delete_snapshot()
            return -1
        self._producers = {entry.producer_id: entry for entry in producers}
        self._snapshot_offset = offset
        self._changed_since_snapshot = False
        return offset

    def _delete_snapshot(self) -> None:
        try:
            self._fs.unlink(self.snapshot_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: could not delete the producer state snapshot: %s", self.directory, exc)
        self._snapshot_offset = -1


def parse_snapshot(data: bytes) -> tuple[int, list[ProducerEntry]]:
    """``(offset, entries)`` of a snapshot file's bytes; ValueError when invalid."""
    if len(data) < _SNAPSHOT_HEADER.size + _CRC.size:
        raise ValueError(f"{len(data)} bytes is too short")
    body = memoryview(data)[:-_CRC.size]
    if zlib.crc32(body) != _CRC.unpack_from(data, len(data) - _CRC.size)[0]:
        raise ValueError("bad CRC")
    magic, version, offset, count = _SNAPSHOT_HEADER.unpack_from(body, 0)
    if magic != _MAGIC or version != _VERSION or offset < 0:
        raise ValueError(f"bad header {magic!r} {version} {offset}")
    position = _SNAPSHOT_HEADER.size
    entries = []
    try:
        for _ in range(count):
            producer_id, epoch, last_append_ms, batches = _PRODUCER.unpack_from(body, position)
            position += _PRODUCER.size
            entry = ProducerEntry(producer_id, epoch, last_append_ms)
            for _ in range(batches):
                entry.batches.append(BatchMetadata(*_BATCH.unpack_from(body, position)))
                position += _BATCH.size
            entries.append(entry)
    except struct.error as exc:
        raise ValueError(f"truncated: {exc}") from None
    if position != len(body):
        raise ValueError(f"{len(body) - position} trailing bytes")
    return offset, entries


def load_producer_state(partition_log: PartitionLog, *, fs: FileSystem = OS_FILE_SYSTEM,
                        clock_ms: Callable[[], int] | None = None,
                        expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS) -> ProducerStateManager:
    """Rebuild a partition's producer state (snapshot + headers after it) and attach it to
    the log, which from then on runs every append past it. See the module docstring."""
    state = ProducerStateManager(partition_log.directory, fs=fs, clock_ms=clock_ms, expiration_ms=expiration_ms)
    started = time.monotonic()
    offset = state.load_snapshot(partition_log.log_end_offset)
    start = offset = max(offset, partition_log.log_start_offset)
    now_ms = state._clock_ms()
    replayed = 0
    for header in partition_log.batch_headers(offset):
        state.replay(header, now_ms)
        offset = header.next_offset
        replayed += 1
    partition_log.attach_observer(state, offset)
    log.info("%s: producer state of %d producers loaded (snapshot at %d, %d batch headers from %d) in %.3f s",
             partition_log.directory, len(state.producer_ids()), state.snapshot_offset, replayed, start,
             time.monotonic() - started)
    return state


__all__ = [
    "BATCHES_PER_PRODUCER", "DEFAULT_PRODUCER_ID_EXPIRATION_MS", "SNAPSHOT_FILE", "BatchMetadata",
    "InvalidProducerEpochError", "OutOfOrderSequenceError", "ProducerEntry", "ProducerStateManager",
    "UnknownProducerIdError", "has_producer_ids", "last_sequence", "load_producer_state", "next_sequence",
    "parse_snapshot",
]
