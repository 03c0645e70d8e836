"""The log cleaner: compaction of one partition log (Kafka's ``LogCleaner``, reduced).

Terms, per partition:

- *clean offset* (kept in the cleaner checkpoint): the log below it was cleaned by an
  earlier pass. The *dirty section* runs from it to the *cleanable end*.
- *cleanable end*: the base offset of the first segment that may not be cleaned yet: the
  active segment (never cleaned), or the first segment holding a record newer than
  ``min.compaction.lag.ms``.
- *delete horizon offset*: tombstones below it have been in the clean section for at
  least ``delete.retention.ms`` and may be removed. The checkpoint keeps a short history
  of ``(clean offset reached, when)``; the horizon is the largest clean offset reached at
  least ``delete.retention.ms`` ago.

When: a partition is cleaned when dirty bytes / (clean + dirty bytes) of its closed
segments is at least ``min.cleanable.dirty.ratio`` (and some are dirty), or when a
tombstone kept by the last pass now lies below the delete horizon.

A pass (``LogCleaner.clean`` runs passes until the dirty section is done):

1. Build the offset map from the dirty section: key digest -> latest offset, in offset
   order. The map has a fixed capacity (:mod:`logd.storage.offset_map`); when it is
   full the pass ends at the first record that did not fit (the *pass end*) and the
   next pass starts there, so memory is bounded whatever the number of keys.
2. Rewrite every segment from the log start up to the pass end, in groups of
   consecutive segments whose sizes add up to at most ``segment.bytes``; each group
   becomes one segment with the group's first base offset. A record survives unless the
   map holds a later offset for its key; a surviving tombstone (null value) goes when it
   lies below the delete horizon, unless it is the last record of the log (a trailing
   gap would leave reads below the high watermark with no batch to return). Records without a key are kept: Kafka refuses them in
   compacted topics at produce time, logd accepts them, and dropping them here would
   lose data silently.
3. Batches: when all records of a batch survive its bytes are copied; when some do it is
   re-encoded with the same base offset, last offset delta, first and max timestamp,
   producer id/epoch/base sequence, timestamp type and codec (compression kept), and
   each record keeps its offset delta, so offsets are preserved (gaps appear); when none
   do it is dropped, unless it is an idempotent producer's newest batch (the log's
   observer, the broker's producer state, names them: ``PartitionLog.batches_to_keep``):
   then it stays with no record (as in Kafka), so that producer state rebuilt from the
   batch headers still knows the producer's last sequence.
   This is the one place the broker decodes records.
4. Swap each group's cleaned segment in with ``PartitionLog.replace_segments``
   (crash-safe, :mod:`logd.storage.swap`); a group of one segment where nothing changed
   is not swapped. Then write the checkpoint.

Reads go through ``PartitionLog.read`` (which pins segments, so retention may delete
them meanwhile: the pass is then given up and retried later) and every batch read is
CRC-checked again before it is decoded.

Yielding to traffic: the cleaner works in slices of ``slice_ms`` (0.5) and sleeps
between them so that it uses at most ``duty_cycle`` (0.25) of the time (and, if set, at
most ``io_max_bytes_per_second``): with the GIL, a thread that never sleeps adds up to
the interpreter's switch interval (5 ms) to each GIL hand-off of every request. Cost:
the cleaner runs at about a quarter of its full speed (~6 MB/s on a small machine).

Cleaner checkpoint: one line in ``<partition dir>/cleaner-checkpoint``, replaced
atomically::

    logd-cleaner 1 <clean_offset> <first_tombstone_offset|-1> <n> <offset>:<ms> ... <crc32 hex>

(``first_tombstone_offset``: the smallest offset of a tombstone the last pass kept; the
``n`` pairs: the history of clean offsets reached and when.) A missing or invalid file
means "nothing cleaned yet", which costs work, never correctness: the cleaner removes a
record only when a later record of the same key exists.

Thread-safety: a ``LogCleaner`` is used by one thread at a time; ``stop()`` may be called
from any thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from logd_sdk import codec
from logd.storage.config import SegmentInfo
from logd.storage.errors import LogClosedError, OffsetOutOfRangeError
from logd.storage.files import OS_FILE_SYSTEM, FileSystem, read_file, write_file_atomic
from logd.storage.offset_map import OffsetMap, key_digest
from logd.storage.swap import CLEANER_CHECKPOINT_FILE, CleanedSegmentWriter

if TYPE_CHECKING:
    from logd.storage.log import PartitionLog

logger = logging.getLogger("logd.storage.cleaner")

_MAX_RELATIVE_OFFSET = (1 << 32) - 1
_MAX_HISTORY = 64
#: Inside a batch, the throttle is asked every this many records + 1 (a power of 2 - 1).
_TICK_MASK = 31
_MAGIC = "logd-cleaner"
_VERSION = 1


class CleanerStoppedError(Exception):
    """``stop()`` was called; the pass in progress was given up (nothing changed)."""


@dataclass(frozen=True)
class CleanerConfig:
    """Process-wide cleaner settings (Kafka's ``log.cleaner.*``)."""

    #: Memory of the offset map (``log.cleaner.dedupe.buffer.size``): 24 bytes per slot.
    dedupe_buffer_bytes: int = 16 * 1024 * 1024
    #: How much the cleaner reads per ``PartitionLog.read``.
    read_chunk_bytes: int = 1024 * 1024
    #: Share of wall time the cleaner may work; it sleeps the rest. With ``slice_ms`` it
    #: was tuned with ``scripts/bench_cleaner.py``: longer slices or a larger share let
    #: request threads wait for the GIL for up to a slice at each of their hand-offs.
    duty_cycle: float = 0.25
    #: Length of one slice of work before a pause, in ms (checked every 32 records).
    slice_ms: float = 0.5
    #: ``log.cleaner.io.max.bytes.per.second``; None: no limit.
    io_max_bytes_per_second: float | None = None

    def __post_init__(self) -> None:
        assert self.dedupe_buffer_bytes >= 48 and self.read_chunk_bytes > 0
        assert 0 < self.duty_cycle <= 1 and self.slice_ms > 0


@dataclass(frozen=True)
class CompactionPolicy:
    """A topic's compaction configs, in the storage engine's terms."""

    min_compaction_lag_ms: int = 0
    delete_retention_ms: int = 86_400_000
    min_cleanable_dirty_ratio: float = 0.5


@dataclass
class CleanResult:
    """What one ``clean`` call did (all zero when the partition was not worth cleaning)."""

    passes: int = 0
    segments_cleaned: int = 0
    records_removed: int = 0
    tombstones_removed: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    duration_ms: float = 0.0
    #: Why the last pass was given up ("" if none was): the log changed or was closed.
    aborted: str = ""

    @property
    def bytes_reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after


# -- the checkpoint ----------------------------------------------------------------------


@dataclass(frozen=True)
class CleanerCheckpoint:
    """The cleaner's state of one partition (format in the module docstring)."""

    clean_offset: int = 0
    first_tombstone_offset: int = -1
    #: ``(clean offset reached, wall time ms)``, both increasing.
    history: tuple[tuple[int, int], ...] = ()

    def delete_horizon_offset(self, now_ms: int, delete_retention_ms: int) -> int:
        """Tombstones below this offset have been clean for ``delete_retention_ms``."""
        horizon = 0
        for offset, cleaned_ms in self.history:
            if cleaned_ms <= now_ms - delete_retention_ms:
                horizon = offset
        return horizon

    def after_pass(self, pass_end: int, now_ms: int, first_tombstone_offset: int,
                   delete_retention_ms: int) -> "CleanerCheckpoint":
        history = list(self.history)
        if not history or pass_end > history[-1][0]:
            history.append((pass_end, now_ms))
        # Entries before the newest one past the horizon add nothing; beyond the cap,
        # merging the oldest entries makes their tombstones look younger (kept longer).
        expired = [i for i, (_, ms) in enumerate(history) if ms <= now_ms - delete_retention_ms]
        if expired:
            history = history[expired[-1]:]
        while len(history) > _MAX_HISTORY:
            del history[1 if expired else 0]
        return CleanerCheckpoint(pass_end, first_tombstone_offset, tuple(history))


def read_cleaner_checkpoint(fs: FileSystem, directory: Path) -> CleanerCheckpoint:
    path = directory / CLEANER_CHECKPOINT_FILE
    try:
        text = read_file(fs, path).decode("ascii")
        body, _, crc = text.strip().rpartition(" ")
        fields = body.split(" ")
        if zlib.crc32(body.encode()) != int(crc, 16) or fields[:2] != [_MAGIC, str(_VERSION)]:
            raise ValueError("bad CRC or header")
        clean_offset, first_tombstone, count = int(fields[2]), int(fields[3]), int(fields[4])
        pairs = [tuple(int(v) for v in pair.split(":")) for pair in fields[5:]]
        if len(pairs) != count or any(len(p) != 2 for p in pairs) or clean_offset < 0:
            raise ValueError("bad fields")
        return CleanerCheckpoint(clean_offset, first_tombstone, tuple(pairs))  # type: ignore[arg-type]
    except FileNotFoundError:
        return CleanerCheckpoint()
    except (OSError, ValueError, UnicodeDecodeError, IndexError) as exc:
        logger.warning("%s: invalid cleaner checkpoint (%s); the log counts as dirty", path, exc)
        return CleanerCheckpoint()


def write_cleaner_checkpoint(fs: FileSystem, directory: Path, checkpoint: CleanerCheckpoint) -> None:
    pairs = " ".join(f"{offset}:{ms}" for offset, ms in checkpoint.history)
    body = (f"{_MAGIC} {_VERSION} {checkpoint.clean_offset} {checkpoint.first_tombstone_offset} "
            f"{len(checkpoint.history)} {pairs}").rstrip()
    write_file_atomic(fs, directory / CLEANER_CHECKPOINT_FILE,
                      f"{body} {zlib.crc32(body.encode()):08x}\n".encode())


# -- planning (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class CleaningPlan:
    """The dirty section ``[dirty_start, cleanable_end)`` to clean, and why."""

    dirty_start: int
    cleanable_end: int
    dirty_ratio: float
    reason: str  # "dirty" or "tombstones"


def cleanable_end_offset(segments: Sequence[SegmentInfo], now_ms: int, min_compaction_lag_ms: int) -> int:
    """Base offset of the first segment that may not be cleaned (the active one at most)."""
    for segment in segments[:-1]:
        if min_compaction_lag_ms > 0 and segment.max_timestamp_ms > now_ms - min_compaction_lag_ms:
            return segment.base_offset
    return segments[-1].base_offset


def plan_cleaning(segments: Sequence[SegmentInfo], log_start_offset: int, checkpoint: CleanerCheckpoint,
                  policy: CompactionPolicy, now_ms: int) -> CleaningPlan | None:
    """Whether the partition is worth cleaning now (see "When" in the module docstring)."""
    cleanable_end = cleanable_end_offset(segments, now_ms, policy.min_compaction_lag_ms)
    dirty_start = min(max(checkpoint.clean_offset, log_start_offset), cleanable_end)
    clean_bytes = dirty_bytes = 0
    for segment in segments[:-1]:
        if segment.base_offset >= cleanable_end:
            break
        if segment.next_offset <= dirty_start:
            clean_bytes += segment.size_bytes
        else:
            dirty_bytes += segment.size_bytes
    ratio = dirty_bytes / (clean_bytes + dirty_bytes) if dirty_bytes else 0.0
    if dirty_bytes and ratio >= policy.min_cleanable_dirty_ratio:
        return CleaningPlan(dirty_start, cleanable_end, ratio, "dirty")
    first_tombstone = checkpoint.first_tombstone_offset
    if 0 <= first_tombstone < checkpoint.delete_horizon_offset(now_ms, policy.delete_retention_ms):
        return CleaningPlan(dirty_start, dirty_start, ratio, "tombstones")
    return None


def group_segments(segments: Sequence[SegmentInfo], segment_bytes: int) -> list[list[SegmentInfo]]:
    """Consecutive segments in groups of at most ``segment_bytes`` (at least one each) whose
    offsets fit one segment's u32 relative offsets."""
    groups: list[list[SegmentInfo]] = []
    size = 0
    for segment in segments:
        if groups and size + segment.size_bytes <= segment_bytes and \
                segment.next_offset - groups[-1][0].base_offset <= _MAX_RELATIVE_OFFSET:
            groups[-1].append(segment)
            size += segment.size_bytes
        else:
            groups.append([segment])
            size = segment.size_bytes
    return groups


# -- yielding ----------------------------------------------------------------------------


class Throttle:
    """Sleeps between slices of work (see "Yielding to traffic"); raises
    :class:`CleanerStoppedError` once the stop event is set."""

    def __init__(self, config: CleanerConfig, stop_event: threading.Event) -> None:
        self._config = config
        self._stop_event = stop_event
        self._slice_start = time.monotonic()
        self._slice_bytes = 0

    def restart(self) -> None:
        self._slice_start = time.monotonic()
        self._slice_bytes = 0

    def work(self, nbytes: int) -> None:
        """Account ``nbytes`` of work; pause once the slice is used up."""
        self._slice_bytes += nbytes
        elapsed = time.monotonic() - self._slice_start
        if elapsed * 1000 < self._config.slice_ms:
            return
        config = self._config
        pause = elapsed * (1 - config.duty_cycle) / config.duty_cycle
        if config.io_max_bytes_per_second:
            pause = max(pause, self._slice_bytes / config.io_max_bytes_per_second - elapsed)
        if self._stop_event.wait(pause):
            raise CleanerStoppedError("the log cleaner is stopping")
        self.restart()

    def tick(self) -> None:
        """Pause if the slice is used up (called inside long loops)."""
        self.work(0)

    def check(self) -> None:
        if self._stop_event.is_set():
            raise CleanerStoppedError("the log cleaner is stopping")


# -- the cleaner -------------------------------------------------------------------------


@dataclass
class _PassStats:
    records_removed: int = 0
    tombstones_removed: int = 0
    segments_cleaned: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    first_tombstone_offset: int = -1


class _Aborted(Exception):
    """The log changed under the pass (a segment deleted, the log closed)."""


class LogCleaner:
    """Compacts partition logs, one at a time (algorithm in the module docstring).

    Owns one :class:`OffsetMap` of ``config.dedupe_buffer_bytes``, reused by every pass.
    """

    def __init__(self, config: CleanerConfig | None = None, *, fs: FileSystem = OS_FILE_SYSTEM,
                 stop_event: threading.Event | None = None) -> None:
        self.config = config or CleanerConfig()
        self._fs = fs
        self._stop_event = stop_event or threading.Event()
        self._throttle = Throttle(self.config, self._stop_event)
        self.offset_map = OffsetMap(self.config.dedupe_buffer_bytes)

    def stop(self) -> None:
        """Make a running ``clean`` give up its pass (raising CleanerStoppedError) soon."""
        self._stop_event.set()

    def clean(self, log: "PartitionLog", policy: CompactionPolicy, now_ms: int) -> CleanResult:
        """Clean ``log`` if it is worth it; passes until its dirty section is clean.

        Raises :class:`CleanerStoppedError` after ``stop()``, ``codec.CorruptBatchError``
        on a corrupt batch, ``LogFailedError`` when a swap failed; a log that changed
        under a pass (segments deleted, log closed) ends the call with ``aborted`` set.
        """
        started = time.monotonic()
        result = CleanResult()
        checkpoint = read_cleaner_checkpoint(self._fs, log.directory)
        target_end: int | None = None
        self._throttle.restart()
        while True:
            segments = log.segments()
            checkpoint = _clamped(checkpoint, log.log_start_offset, segments[-1].next_offset)
            plan = plan_cleaning(segments, log.log_start_offset, checkpoint, policy, now_ms)
            if target_end is not None and checkpoint.clean_offset < target_end:
                # Continue the cleaning decided earlier, whatever the ratio says now.
                plan = CleaningPlan(checkpoint.clean_offset, target_end, 1.0, "dirty")
            if plan is None:
                break
            target_end = plan.cleanable_end
            logger.info("%s: cleaning, dirty offsets [%d, %d) (dirty ratio %.2f, reason: %s)", log.directory,
                        plan.dirty_start, plan.cleanable_end, plan.dirty_ratio, plan.reason)
            try:
                pass_end = self._build_offset_map(log, plan)
                horizon = checkpoint.delete_horizon_offset(now_ms, policy.delete_retention_ms)
                stats = self._clean_segments(log, segments, pass_end, horizon)
            except (_Aborted, LogClosedError, OffsetOutOfRangeError) as exc:
                result.aborted = str(exc) or type(exc).__name__
                break
            result.passes += 1
            result.records_removed += stats.records_removed
            result.tombstones_removed += stats.tombstones_removed
            result.segments_cleaned += stats.segments_cleaned
            result.bytes_before += stats.bytes_before
            result.bytes_after += stats.bytes_after
            checkpoint = checkpoint.after_pass(pass_end, now_ms, stats.first_tombstone_offset,
                                               policy.delete_retention_ms)
            write_cleaner_checkpoint(self._fs, log.directory, checkpoint)
            if plan.reason == "tombstones" or pass_end >= target_end:
                break
        result.duration_ms = (time.monotonic() - started) * 1000
        return result

    # -- step 1: the offset map ----------------------------------------------------------

    def _build_offset_map(self, log: "PartitionLog", plan: CleaningPlan) -> int:
        """Fill the map from ``[dirty_start, cleanable_end)``; returns the pass end."""
        offset_map = self.offset_map
        offset_map.clear()
        tick = self._throttle.tick
        for _, header, records in self._batches(log, plan.dirty_start, plan.cleanable_end):
            for i, record in enumerate(records):
                if i & _TICK_MASK == _TICK_MASK:
                    tick()
                if record.offset < plan.dirty_start or record.key is None:
                    continue
                if record.offset >= plan.cleanable_end:
                    return plan.cleanable_end
                if offset_map.full:
                    return record.offset
                offset_map.put(key_digest(record.key), record.offset)
        return plan.cleanable_end

    # -- steps 2-4: rewrite and swap ------------------------------------------------------

    def _clean_segments(self, log: "PartitionLog", segments: Sequence[SegmentInfo], pass_end: int,
                        horizon: int) -> _PassStats:
        stats = _PassStats()
        to_clean = [s for s in segments[:-1] if s.base_offset < pass_end]
        keep = log.batches_to_keep()  # taken now: a batch that stops being newest stays until the next pass
        for group in group_segments(to_clean, log.config.segment_bytes):
            self._clean_group(log, group, horizon, keep, stats)
        return stats

    def _clean_group(self, log: "PartitionLog", group: list[SegmentInfo], horizon: int, keep: frozenset[int],
                     stats: _PassStats) -> None:
        base_offset, end_offset = group[0].base_offset, group[-1].next_offset
        writer = CleanedSegmentWriter(self._fs, log.directory, base_offset, end_offset,
                                      log.config.index_interval_bytes, group[0].created_ms)
        removed = tombstones_removed = emptied_dropped = 0
        first_tombstone = -1
        # The log's last record always stays (it is its key's latest; only the tombstone
        # rule could remove it): a gap at the very end would leave reads below the high
        # watermark with nothing to return.
        last_offset = log.log_end_offset - 1
        try:
            tick = self._throttle.tick
            for data, header, records in self._batches(log, base_offset, end_offset):
                kept = []
                for i, record in enumerate(records):
                    if i & _TICK_MASK == _TICK_MASK:
                        tick()
                    if record.key is not None:
                        latest = self.offset_map.get(key_digest(record.key))
                        if latest > record.offset:
                            continue
                        if record.value is None:
                            if record.offset < horizon:
                                if record.offset != last_offset:
                                    tombstones_removed += 1
                                    continue
                                # Kept only as the log's last record: not a tombstone to come
                                # back for (it made every check start a pass that removed
                                # nothing); once records follow it, a dirty pass removes it.
                            elif first_tombstone < 0:
                                first_tombstone = record.offset
                    kept.append(record)
                removed += len(records) - len(kept)
                if not kept and header.base_offset not in keep and header.last_offset != last_offset:
                    # No record left: the batch goes, also one a former pass emptied and
                    # kept for a producer that has written newer batches since.
                    emptied_dropped += not records
                    continue
                if len(kept) == len(records):
                    writer.append(data, header.base_offset, header.next_offset, header.max_timestamp)
                else:
                    # Some records left, or none in a producer's newest batch: that one stays
                    # empty (as in Kafka), since its header's sequence range is what a rebuilt
                    # producer state needs (rebuild_batch keeps the last offset delta).
                    # Keeping a superseded record instead brought a deleted key back once
                    # its tombstone went.
                    writer.append(rebuild_batch(header, kept), header.base_offset, header.next_offset,
                                  header.max_timestamp)
            if removed == 0 and emptied_dropped == 0 and len(group) == 1:
                writer.abort()  # nothing to gain from swapping in the same bytes
            else:
                cleaned = writer.finish(_newest_modification_ns(group))
                if not log.replace_segments(group, cleaned):
                    raise _Aborted(f"{log.directory}: the log changed while offsets "
                                   f"[{base_offset}, {end_offset}) were cleaned")
                stats.segments_cleaned += len(group)
                stats.bytes_before += sum(s.size_bytes for s in group)
                stats.bytes_after += cleaned.size_bytes
        except Exception:
            writer.abort()
            raise
        stats.records_removed += removed
        stats.tombstones_removed += tombstones_removed
        if first_tombstone >= 0 and stats.first_tombstone_offset < 0:
            stats.first_tombstone_offset = first_tombstone

    def _batches(self, log: "PartitionLog", start: int, end: int
                 ) -> Iterator[tuple[bytes, codec.BatchHeader, list[codec.DecodedRecord]]]:
        """Every batch holding offsets in ``[start, end)`` (CRC-checked), with its records.

        Reads through ``log.read`` from ``max(start, log start offset)``; a segment
        deleted meanwhile raises ``OffsetOutOfRangeError``. Pauses per the throttle.
        """
        offset = max(start, log.log_start_offset)
        chunk = self.config.read_chunk_bytes
        while offset < end:
            self._throttle.check()
            data = log.read(offset, chunk)
            next_offset = offset
            for position, header in codec.iter_batches(data, verify=True):
                if header.base_offset >= end:
                    return
                if header.next_offset <= offset:
                    continue
                batch = data[position:position + header.size]
                records = codec.decode_records_section(
                    codec.decompress(memoryview(batch)[codec.HEADER_SIZE:], header.codec), header)
                yield batch, header, records
                next_offset = header.next_offset
                self._throttle.work(header.size)
            if next_offset == offset:
                return  # nothing more below the high watermark
            offset = next_offset


def _newest_modification_ns(group: Sequence[SegmentInfo]) -> int | None:
    """The newest modification time of the group's log files (None if one is gone)."""
    try:
        return max(os.stat(segment.path).st_mtime_ns for segment in group)
    except OSError:
        return None  # deleted meanwhile (retention): the swap is refused anyway


def rebuild_batch(header: codec.BatchHeader, kept: Sequence[codec.DecodedRecord]) -> bytes:
    """A valid batch of the ``kept`` records of the batch with ``header``: same base offset,
    last offset delta, timestamps, producer fields, timestamp type and codec."""
    section, count = codec.encode_records(
        (record.offset - header.base_offset, record.timestamp_ms - header.first_timestamp,
         record.key, record.value, record.headers)
        for record in kept)
    return codec.build_batch(
        section, count, last_offset_delta=header.last_offset_delta, first_timestamp=header.first_timestamp,
        max_timestamp=header.max_timestamp, codec=header.codec, base_offset=header.base_offset,
        producer_id=header.producer_id, producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence, timestamp_type=header.attributes & codec.TIMESTAMP_LOG_APPEND)


def _clamped(checkpoint: CleanerCheckpoint, log_start_offset: int, log_end_offset: int) -> CleanerCheckpoint:
    """The checkpoint made consistent with a log that was truncated or had records deleted."""
    if checkpoint.clean_offset > log_end_offset:
        logger.warning("cleaner checkpoint %d is past the log end %d; cleaning from the start",
                       checkpoint.clean_offset, log_end_offset)
        return CleanerCheckpoint(log_start_offset, -1, ())
    if checkpoint.clean_offset < log_start_offset:
        return CleanerCheckpoint(log_start_offset, checkpoint.first_tombstone_offset, checkpoint.history)
    return checkpoint
