"""The partition log: an ordered list of segments with one active segment at the end.

Appends validate every batch (CRC included, plus any check of the records the caller
passes: see :mod:`logd.storage.batches`) before taking the lock, assign offsets by
rewriting each batch's ``base_offset`` (the CRC does not cover it), write the whole call
with one ``pwrite`` into the active segment, then wait until durable per the flush policy.

Group commit (``flush_policy="group"``), leader-based and without a thread: an appender
whose data is not yet durable becomes the *leader* if no fsync is running: it notes the
log end, releases the lock, fsyncs, retakes the lock and publishes the new durable end;
appenders that wrote meanwhile wait on the condition and the first of them leads the next
fsync. So an append is acknowledged only by an fsync that started after its write, and
many appenders share one fsync. Roll, truncation, flush and close wait until no fsync
runs, so the leader's file descriptor stays valid.

Visibility: readers see up to the high watermark: the durable end for "group"/"always"
(a reader never sees data a crash could lose, and offsets are never reused), the log end
for "never". For the active segment the log tracks the byte position of the high
watermark and reads never go past it, so no reader sees a half-written batch.

Failure: a failed write or fsync makes the log failed for good (nats-server's sticky
``werr``): appends raise :class:`LogFailedError` and nothing written after the last
successful fsync is ever acknowledged; reopening runs recovery. One exception: a write
(or the index write of a roll) that fails for lack of space (ENOSPC, EDQUOT) has its
partial bytes cut off again and only that append fails (a retriable ``StorageError``):
nothing was acknowledged or shown to readers, so the log stays writable and the next
append, once space is freed, gets the same offset.

Recovery point: the checkpoint (see :mod:`logd.storage.checkpoint`) is rewritten at open,
roll, ``flush()``, truncation, log start moves and close, and after a group/always commit
at most every ``recovery_checkpoint_interval_ms`` (with the active segment's index
files). Recovery after a crash re-verifies only what lies after it. A roll always
fsyncs the old segment, whatever the flush policy, so only the active segment can hold
unflushed data.

Elsewhere: the check of an append's batches (:mod:`logd.storage.batches`); the segment
list and the segment-level steps of truncation, deletion and the cleaner's swap
(:mod:`logd.storage.log_segments`); the append observer, which checks every append under
the lock, in the same lock hold as the write (:mod:`logd.storage.observer`); idle logs
closing their active segment's file when too many are open
(:mod:`logd.storage.active_segments`).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator, Sequence

from logd_sdk import codec
from logd.faults import crash_point
from logd.storage.active_segments import OPEN_ACTIVE_SEGMENTS
from logd.storage.batches import BatchCheck, parse_batches
from logd.storage.checkpoint import Checkpoint, write_checkpoint
from logd.storage.config import AppendInfo, LogConfig, SegmentInfo
from logd.storage.errors import LogClosedError, LogFailedError, OffsetOutOfRangeError, StorageError
from logd.storage.files import OS_FILE_SYSTEM, FileSystem
from logd.storage.handles import DEFAULT_HANDLE_CACHE, HandleCache
from logd.storage.log_segments import LogSegments
from logd.storage.observer import AppendObserver, walk_headers
from logd.storage.reader import PinnedSegment, read_batches, read_hints, scan_for_timestamp, time_hint
from logd.storage.recovery import load_log
from logd.storage.segment import BatchPosition, Segment
from logd.storage.swap import CleanedSegment, commit_swap, discard_cleaned

logger = logging.getLogger("logd.storage")

_MAX_RELATIVE_OFFSET = (1 << 32) - 1
#: Write errors that leave nothing inconsistent once a partial write is cut: the log
#: refuses that append only and stays writable (a failed fsync is never one of them).
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: Default for how often group/always commits also move the persisted recovery point
#: (Kafka's log.flush.offset.checkpoint.interval.ms): bounds the re-verification after a crash.
DEFAULT_RECOVERY_CHECKPOINT_INTERVAL_MS = 60_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PartitionLog:
    """The log of one topic-partition in its own directory.

    Thread-safety: every public method may be called from any thread. ``_lock`` guards all
    state (the segment list, offsets, the active segment and its in-memory indexes);
    ``_changed`` (on the same lock) signals a new high watermark, the end of an fsync, a
    failure or close. Reads pin a segment under the lock and do their I/O without it.
    """

    def __init__(self, directory: Path, config: LogConfig, clock_ms: Callable[[], int],
                 fs: FileSystem, handle_cache: HandleCache, recovery_checkpoint_interval_ms: int) -> None:
        self.directory = directory
        self._config = config
        self._clock_ms = clock_ms
        self._fs = fs
        self._handles = handle_cache
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._segments = LogSegments(fs, directory, handle_cache)
        self._log_start_offset = 0
        self._log_end_offset = 0
        self._durable_offset = 0  # everything below it was fsynced
        self._durable_position = 0  # its byte position in the active segment
        self._high_watermark = 0
        self._visible_position = 0  # byte position of the high watermark in the active segment
        self._flushing = False
        self._failure: BaseException | None = None
        self._closed = False
        # Set when a segment swap failed midway: the segment list no longer matches the
        # files, so reads are refused (a retriable StorageError) until a reopen finishes
        # or rolls back the swap; they returned errors or nothing below the high watermark.
        self._reads_refused: str | None = None
        self._truncations = 0  # bumped by truncate_to; a read that saw it change retries
        #: (truncation number, log end after it) of the latest truncations, for durability waits.
        self._truncated_ends: deque[tuple[int, int]] = deque(maxlen=64)
        self._recovery_checkpoint_interval_ms = recovery_checkpoint_interval_ms
        self._last_checkpoint_ms = clock_ms()
        self._read_only = False
        self._observer: AppendObserver | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, config: LogConfig, *, clock_ms: Callable[[], int] = wall_clock_ms,
             fs: FileSystem = OS_FILE_SYSTEM, handle_cache: HandleCache | None = None,
             recovery_checkpoint_interval_ms: int = DEFAULT_RECOVERY_CHECKPOINT_INTERVAL_MS,
             read_only: bool = False) -> "PartitionLog":
        """Create the directory if missing, recover, return an open log.

        ``fs``: the file-system seam (tests inject faults); ``handle_cache``: the LRU of read
        handles of older segments (default: one shared by the process);
        ``recovery_checkpoint_interval_ms``: how often a commit also persists the recovery
        point (and the active segment's indexes), bounding the work of the next recovery;
        ``read_only``: the directory is on a read-only file system: recover without writing
        (see :mod:`logd.storage.recovery`) and serve reads only (appends, deletions and
        rolls raise :class:`LogFailedError`).
        """
        # (not `handle_cache or ...`: an empty cache is falsy)
        cache = DEFAULT_HANDLE_CACHE if handle_cache is None else handle_cache
        log = cls(Path(directory), config, clock_ms, fs, cache, recovery_checkpoint_interval_ms)
        loaded = load_log(fs, log.directory, config, clock_ms, read_only=read_only)
        log._segments.load(loaded.segments)
        log._log_start_offset = loaded.log_start_offset
        active = loaded.segments[-1]
        log._log_end_offset = log._durable_offset = log._high_watermark = active.next_offset
        log._visible_position = log._durable_position = active.size
        OPEN_ACTIVE_SEGMENTS.touch(log)
        if read_only:
            log._read_only = True
            log._failure = OSError(errno.EROFS, "the file system is read-only")
            return log
        with log._lock:
            # The recovered tail is now verified and fsynced: the recovery point moves to
            # the end, and the clean-shutdown flag is cleared before any append.
            active.write_indexes_locked(final=False)
            log._write_checkpoint_locked(clean_shutdown=False)
        return log

    def close(self) -> None:
        """Flush, write the clean-shutdown checkpoint and close the files. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._wait_no_flush_locked()
            if self._failure is None:
                try:
                    self._flush_locked()
                    self._write_checkpoint_locked(clean_shutdown=True)
                except OSError as exc:
                    self._fail_locked(exc)
            self._closed = True
            for segment in self._segments:
                segment.deactivate_locked()
                self._handles.discard(segment.log_path)
            self._changed.notify_all()
        OPEN_ACTIVE_SEGMENTS.forget(self)

    def delete(self) -> None:
        """Close the log and remove its directory."""
        self.close()
        with self._lock:
            for segment in self._segments:
                segment.delete_files_locked()
            for name in os.listdir(self.directory):
                self._fs.unlink(self.directory / name)
            self._fs.rmdir(self.directory)
            self._fs.fsync_dir(self.directory.parent)

    def update_config(self, config: LogConfig) -> None:
        with self._lock:
            self._config = config
            for segment in self._segments:
                segment.index_interval_bytes = config.index_interval_bytes

    @property
    def config(self) -> LogConfig:
        return self._config

    # -- state -----------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        """The next offset to assign."""
        return self._log_end_offset

    @property
    def high_watermark(self) -> int:
        """Readers see offsets below it: the durable end ("group"/"always") or the log end."""
        return self._high_watermark

    @property
    def size_bytes(self) -> int:
        return self._segments.size_bytes

    @property
    def failed(self) -> bool:
        """True after a failed write or fsync (sticky until the log is reopened)."""
        return self._failure is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def segments(self) -> list[SegmentInfo]:
        """A snapshot of the segments, oldest first."""
        with self._lock:
            return [self._segments.info(segment, self._log_end_offset) for segment in self._segments]

    # -- appending -------------------------------------------------------------------------

    def append(self, batches: bytes | bytearray | memoryview, check_batch: BatchCheck | None = None) -> AppendInfo:
        """Append one or more concatenated producer batches; returns their offsets once
        durable per the flush policy. A bad batch raises ``codec.CorruptBatchError`` and
        nothing of the call is written. ``check_batch``: a further check of each batch
        once its CRC passed (see :func:`~logd.storage.batches.parse_batches`)."""
        parsed = parse_batches(batches, check_batch)  # CRC work happens outside the lock
        with self._lock:
            info = self._append_locked(batches, parsed)
            if self._config.flush_policy != "never":
                # "always" synced its own write already; this also holds back the answer
                # to a duplicate (an idempotent retry answered from the producer state)
                # until the original is durable, whichever call is writing it.
                self._await_durable_locked(info.last_offset + 1)
            return info

    def append_unflushed(self, batches: bytes | bytearray | memoryview,
                         check_batch: BatchCheck | None = None) -> AppendInfo:
        """Like ``append`` but returns as soon as the data is written (not yet durable);
        pair it with ``wait_durable``. Lets a caller write to many partitions, then wait."""
        parsed = parse_batches(batches, check_batch)
        with self._lock:
            return self._append_locked(batches, parsed, defer_flush=True)

    def wait_durable(self, offset: int) -> None:
        """Block until every offset below ``offset`` is durable (group commit); with the
        ``never`` flush policy, return at once (appends are visible once written)."""
        if self._config.flush_policy == "never":
            return
        with self._lock:
            self._await_durable_locked(offset)

    def _append_locked(self, data: bytes | bytearray | memoryview, parsed: list[BatchPosition],
                       defer_flush: bool = False) -> AppendInfo:
        self._check_writable_locked()
        records = sum(batch.next_offset - batch.base_offset for batch in parsed)
        now = self._clock_ms()
        observer = self._observer
        if observer is not None:
            duplicate = observer.check_append_locked(data, parsed)  # before a roll: a duplicate never rolls
            if duplicate is not None:
                return duplicate
            end, truncations = self._log_end_offset, self._truncations
        self._maybe_roll_locked(len(data), records, now)
        if observer is not None and (end, truncations) != (self._log_end_offset, self._truncations):
            # The roll waited (releasing the lock) and the log changed: check again, so the
            # check that lets a batch through is in the same lock hold as its write.
            duplicate = observer.check_append_locked(data, parsed)
            if duplicate is not None:
                return duplicate
        active = self._active_locked()
        base_offset = next_offset = self._log_end_offset
        assigned = []
        for batch in parsed:
            count = batch.next_offset - batch.base_offset
            assigned.append(BatchPosition(batch.position, batch.size, next_offset, next_offset + count,
                                          batch.max_timestamp_ms))
            next_offset += count
        if active.size == 0:
            active.created_ms = now
        try:
            active.append_locked(data, assigned, stamp_offsets=True)  # the data keeps the producer's offsets
        except OSError as exc:
            if exc.errno in _OUT_OF_SPACE and self._undo_partial_write_locked(active):
                raise StorageError(f"{self.directory}: {exc}; nothing of this append was kept; "
                                   f"retry once space is freed") from exc
            self._fail_locked(exc)
            raise LogFailedError(f"{self.directory}: write failed: {exc}") from exc
        self._log_end_offset = next_offset
        self._segments.size_bytes += len(data)
        if observer is not None:
            observer.appended_locked(data, assigned, now)
        policy = self._config.flush_policy
        if policy == "never":
            self._high_watermark, self._visible_position = next_offset, active.size
            self._changed.notify_all()
        elif policy == "always" and not defer_flush:
            try:
                active.fsync_locked()
            except OSError as exc:
                self._fail_locked(exc)
                raise LogFailedError(f"{self.directory}: fsync failed: {exc}") from exc
            self._publish_locked(next_offset, active.size)
            self._maybe_checkpoint_locked()
        return AppendInfo(base_offset, next_offset - 1, now)

    def _undo_partial_write_locked(self, active: Segment) -> bool:
        """After a write that ran out of space: cut what it wrote (readers never saw it, as
        it lies past the visible end) so the log stays usable. False if that fails too."""
        try:
            self._fs.ftruncate(active.write_handle.fd, active.size)
        except OSError as exc:
            logger.error("%s: cannot cut a partial write: %s", self.directory, exc)
            return False
        logger.warning("%s: out of space; an append was refused and its partial write cut", self.directory)
        return True

    def _maybe_roll_locked(self, incoming_bytes: int, incoming_records: int, now: int) -> None:
        while True:
            active = self._segments[-1]
            if active.size == 0:
                return
            config = self._config
            if not (active.size + incoming_bytes > config.segment_bytes
                    or now - active.created_ms >= config.segment_ms
                    or self._log_end_offset + incoming_records - active.base_offset > _MAX_RELATIVE_OFFSET):
                return
            if not self._flushing:
                self._roll_locked()
                return
            self._changed.wait()
            self._check_writable_locked()

    def _await_durable_locked(self, offset: int) -> None:
        """Group commit: return once every offset below ``offset`` is durable.

        Raises StorageError if ``truncate_to`` cut the log below ``offset`` meanwhile: the
        awaited records are gone (the wait used to lead fsyncs in a loop that could never
        reach ``offset``, then acknowledge whatever other appends refilled those offsets).
        A truncation at or above ``offset`` leaves them, and the wait, alone. One between
        ``append_unflushed`` and ``wait_durable`` is caught only while the log end stays
        below ``offset``; the broker never truncates."""
        truncations = self._truncations
        while True:
            if offset > self._log_end_offset or (
                    self._truncations != truncations and self._truncated_below_locked(truncations, offset)):
                raise StorageError(f"{self.directory}: the log was truncated below offset {offset} "
                                   f"before that offset was durable")
            if self._durable_offset >= offset:
                return
            if self._failure is not None:
                raise LogFailedError(f"{self.directory}: an earlier write or fsync failed") from self._failure
            if self._closed:
                raise LogClosedError(f"{self.directory} is closed")
            if self._flushing:
                self._changed.wait()
            else:
                self._lead_flush_locked()

    def _truncated_below_locked(self, since: int, offset: int) -> bool:
        """Whether a truncation after the ``since``-th left the log end below ``offset``
        (when the history no longer reaches back that far: assume it did)."""
        history = self._truncated_ends
        if not history or history[0][0] > since + 1:
            return True
        return any(end < offset for number, end in history if number > since)

    def _lead_flush_locked(self) -> None:
        """fsync the active segment without holding the lock; publish the durable end."""
        active = self._active_locked(touch=False)  # appends touch it (only LRU order is at stake)
        target_offset, target_position = self._log_end_offset, active.size
        assert active.write_handle is not None
        fd = active.write_handle.fd
        self._flushing = True
        self._lock.release()
        error: OSError | None = None
        try:
            self._fs.fsync(fd)
        except OSError as exc:
            error = exc
        finally:
            self._lock.acquire()
            self._flushing = False
        if error is not None:
            self._fail_locked(error)
            raise LogFailedError(f"{self.directory}: fsync failed: {error}") from error
        self._publish_locked(target_offset, target_position)
        self._maybe_checkpoint_locked()

    def _maybe_checkpoint_locked(self) -> None:
        """Now and then, persist the recovery point after a commit (the log lock is held
        meanwhile: an index write and a checkpoint, once per interval)."""
        if self._clock_ms() - self._last_checkpoint_ms < self._recovery_checkpoint_interval_ms:
            return
        try:
            self._segments[-1].write_indexes_locked(final=False)
            self._write_checkpoint_locked(clean_shutdown=False)
        except OSError as exc:
            if exc.errno in _OUT_OF_SPACE:
                # Indexes and checkpoint only shorten recovery, and the records are durable
                # and published: try again at the next interval instead of failing the log
                # (and answering an error for records readers already see).
                self._last_checkpoint_ms = self._clock_ms()
                logger.warning("%s: no space for the periodic index and checkpoint write (%s); "
                               "retrying in %d ms", self.directory, exc, self._recovery_checkpoint_interval_ms)
                return
            self._fail_locked(exc)
            raise LogFailedError(f"{self.directory}: index or checkpoint write failed: {exc}") from exc

    def _publish_locked(self, durable_offset: int, active_position: int) -> None:
        """Record a new durable end (after an fsync of the active segment, where it lies at
        ``active_position``) and wake readers and appenders."""
        if durable_offset > self._durable_offset:
            self._durable_offset, self._durable_position = durable_offset, active_position
        if self._config.flush_policy == "never":
            self._high_watermark, self._visible_position = self._log_end_offset, self._segments[-1].size
        elif self._durable_offset > self._high_watermark:
            self._high_watermark, self._visible_position = self._durable_offset, self._durable_position
        self._changed.notify_all()

    def _wait_no_flush_locked(self) -> None:
        while self._flushing:
            self._changed.wait()

    def _check_writable_locked(self) -> None:
        if self._closed:
            raise LogClosedError(f"{self.directory} is closed")
        if self._failure is not None:
            if getattr(self._failure, "errno", None) == errno.EROFS:
                raise LogFailedError(f"{self.directory}: the file system is read-only ({self._failure}); "
                                     f"the log serves reads only") from self._failure
            raise LogFailedError(f"{self.directory}: an earlier write or fsync failed; reopen the log") \
                from self._failure

    def _fail_locked(self, exc: BaseException) -> None:
        if self._failure is None:
            logger.error("%s: storage failure, refusing appends until reopened: %s", self.directory, exc)
            self._failure = exc
        self._changed.notify_all()

    # -- roll, flush, checkpoint -----------------------------------------------------------

    def roll(self) -> None:
        """Start a new active segment now (no-op if the active one is empty)."""
        with self._lock:
            self._check_writable_locked()
            self._wait_no_flush_locked()
            if self._segments[-1].size:
                self._roll_locked()

    def _roll_locked(self) -> None:
        """Close the active segment durably, then create the next one.

        Order (each step leaves a recoverable state if the process dies after it):
        fsync the old log; write and fsync its indexes; create the new log file; fsync the
        directory; write the checkpoint with the recovery point at the new segment.
        """
        assert not self._flushing
        old = self._active_locked()
        new = Segment(self._fs, self.directory, self._log_end_offset, self._config.index_interval_bytes,
                      self._clock_ms())
        try:
            old.fsync_locked()
        except OSError as exc:
            self._fail_locked(exc)
            raise LogFailedError(f"{self.directory}: roll failed: {exc}") from exc
        try:
            old.write_indexes_locked(final=True)
            crash_point("roll.old_segment_synced")
            new.open_for_append_locked(create=True)
        except OSError as exc:
            if exc.errno in _OUT_OF_SPACE:
                # Nothing changed but a temporary index file: the roll is retried later.
                raise StorageError(f"{self.directory}: cannot roll a segment: {exc}; retry once space "
                                   f"is freed") from exc
            self._fail_locked(exc)
            raise LogFailedError(f"{self.directory}: roll failed: {exc}") from exc
        try:
            crash_point("roll.new_segment_created")
            self._fs.fsync_dir(self.directory)
            crash_point("roll.directory_synced")
        except OSError as exc:
            self._fail_locked(exc)
            raise LogFailedError(f"{self.directory}: roll failed: {exc}") from exc
        self._publish_locked(self._log_end_offset, old.size)
        old.deactivate_locked()
        old.drop_loaded_indexes()
        self._segments.add_locked(new)
        self._visible_position = self._durable_position = 0
        self._checkpoint_or_fail_locked()

    def flush(self) -> None:
        """fsync the active segment and its indexes and move the recovery point to the end."""
        with self._lock:
            self._check_writable_locked()
            self._wait_no_flush_locked()
            try:
                self._flush_locked()
            except OSError as exc:
                self._fail_locked(exc)
                raise LogFailedError(f"{self.directory}: flush failed: {exc}") from exc
            self._checkpoint_or_fail_locked()

    def _flush_locked(self) -> None:
        active = self._active_locked()
        active.fsync_locked()
        active.write_indexes_locked(final=False)
        self._publish_locked(self._log_end_offset, active.size)

    def _write_checkpoint_locked(self, *, clean_shutdown: bool) -> None:
        """Persist the log start offset and the recovery point (the durable end)."""
        active = self._segments[-1]
        write_checkpoint(self._fs, self.directory, Checkpoint(
            log_start_offset=self._log_start_offset, recovery_offset=self._durable_offset,
            recovery_segment=active.base_offset, recovery_position=self._durable_position,
            clean_shutdown=clean_shutdown))
        self._last_checkpoint_ms = self._clock_ms()
        if self._observer is not None:
            self._observer.checkpointed_locked(self._durable_offset)

    def _checkpoint_or_fail_locked(self) -> None:
        try:
            self._write_checkpoint_locked(clean_shutdown=False)
        except OSError as exc:
            self._fail_locked(exc)
            raise LogFailedError(f"{self.directory}: checkpoint failed: {exc}") from exc

    # -- reading ---------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` (at least one
        whole batch if any), continuing into the next segments while the budget lasts.
        ``b""`` at the high watermark; raises :class:`OffsetOutOfRangeError` below the log
        start offset or above the high watermark."""
        data, following = self._read_segment(offset, max_bytes, first=True)
        if following is None or len(data) >= max_bytes:
            return data
        parts = [data] if data else []
        budget = max_bytes - len(data)
        while following is not None and budget > 0:
            data, following = self._read_segment(following, budget, first=not parts)
            if data:
                parts.append(data)
                budget -= len(data)
        return b"".join(parts)

    def _read_segment(self, offset: int, max_bytes: int, *, first: bool) -> tuple[bytes, int | None]:
        """Batches from one segment, and the offset to continue from in the next one (None
        when the read is complete). ``first``: check the range; return at least one batch."""
        with self._lock:
            self._check_open_locked()
            if first and (offset < self._log_start_offset or offset > self._high_watermark):
                raise OffsetOutOfRangeError(offset, self._log_start_offset, self._high_watermark)
            if offset >= self._high_watermark:
                return b"", None
            i = self._segments.index_for(offset)
            view = self._pin_locked(max(i, 0))
            following = self._segments.base_offset_after(i)
            truncations = self._truncations
            if view.is_active:
                hints = read_hints(view, offset, max_bytes)
        try:
            if not view.is_active:
                hints = read_hints(view, offset, max_bytes)
            data, at_end = read_batches(self._fs, view, offset, max_bytes, hints, at_least_one=first)
        finally:
            view.release()
        if truncations != self._truncations:
            # A truncation (and maybe new appends) raced with this read: the bytes at the
            # positions it computed may belong to other batches now. Read again.
            return self._read_segment(offset, max_bytes, first=first)
        return data, following if at_end else None

    def _pin_locked(self, i: int) -> PinnedSegment:
        if i < len(self._segments) - 1:
            return self._segments.pin_older_locked(i)
        segment = self._active_locked()
        handle = segment.write_handle
        pinned = handle is not None and handle.acquire()  # not inside an assert: python -O drops those
        assert pinned, "the active segment's write handle is closed"
        return PinnedSegment(segment, handle, self._visible_position, True,
                             segment._offset_index, segment._time_index)

    def _check_open_locked(self) -> None:
        """Before a read: the log is open and its segment list matches its files."""
        if self._closed:
            raise LogClosedError(f"{self.directory} is closed")
        if self._reads_refused is not None:
            raise StorageError(self._reads_refused)

    def _active_locked(self, *, touch: bool = True) -> Segment:
        """The active segment with its file open (reopened if it was parked); ``touch``:
        count this as a use in the LRU of open active segments."""
        active = self._segments[-1]
        if active.parked:
            active.unpark_locked(self._read_only)
        elif not touch:
            return active
        OPEN_ACTIVE_SEGMENTS.touch(self)
        return active

    def park_if_idle(self) -> bool:
        """Close the active segment's file if the log is idle now (never waits for the
        lock: called by another log's thread, see :class:`OpenActiveSegments`)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            active = self._segments[-1] if self._segments else None
            if self._closed or self._flushing or active is None or active.write_handle is None:
                return False
            active.park_locked()
            return True
        finally:
            self._lock.release()

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first visible record with timestamp >= ``timestamp_ms``
        at or after the log start offset, or None.

        Walks the segments by offset, finding each under the lock when it gets there (as
        reads do), not from a list taken at the start: a compaction swap meanwhile deletes
        the segments it replaces, and the cleaned segment was in no such list, so its
        records were skipped and a later segment's offset returned. Rescanning part of a
        cleaned segment is harmless: its records are a subset of those already passed
        over, with the same timestamps."""
        after = None  # the base offset of the next segment to look at; None: the first
        while True:
            with self._lock:
                self._check_open_locked()
                segments = self._segments
                i = 0 if after is None else max(segments.index_for(after), 0)
                while i < len(segments) and segments[i].max_timestamp_ms < timestamp_ms:
                    i += 1
                if i == len(segments):
                    return None
                view = self._pin_locked(i)
                after = segments.base_offset_after(i)
                log_start, high_watermark = self._log_start_offset, self._high_watermark
                if view.is_active:
                    position = time_hint(view, timestamp_ms, log_start)
            try:
                if not view.is_active:
                    position = time_hint(view, timestamp_ms, log_start)
                found = scan_for_timestamp(self._fs, view, position, timestamp_ms, log_start, high_watermark)
            finally:
                view.release()
            if found is not None or after is None:
                return found

    def wait_for_data(self, offset: int, timeout_s: float) -> bool:
        """Block until the high watermark is > ``offset`` (True) or the timeout (False)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._high_watermark > offset or self._closed, timeout_s
            ) and self._high_watermark > offset

    # -- batch headers and the append observer --------------------------------------------

    def batch_headers(self, from_offset: int) -> Iterator[codec.BatchHeader]:
        """The headers of the batches holding offsets >= ``from_offset`` (from the log start
        offset if below it), oldest first, up to the end of the segment that is active when
        the walk reaches it: every batch written, durable or not. Reads headers only (no
        records, no CRC: append and recovery checked them). Raises LogClosedError, or
        StorageError when a truncation raced with the walk (walk again)."""
        return self._walk_headers(from_offset, lock_held=False)

    def batches_to_keep(self) -> frozenset[int]:
        """Base offsets of batches compaction keeps, emptied if no record survives (the
        observer's ``batches_to_keep_locked``; none without an observer)."""
        with self._lock:
            observer = self._observer
            return frozenset(observer.batches_to_keep_locked()) if observer is not None else frozenset()

    def attach_observer(self, observer: AppendObserver, from_offset: int) -> None:
        """Make ``observer`` see every later append, truncation and checkpoint. First, in
        the same lock hold, it is given (``replay_locked``) the headers of the batches from
        ``from_offset`` to the log end: whatever was appended after the caller's unlocked
        ``batch_headers`` walk ended, so that no batch slips between."""
        with self._lock:
            self._check_open_locked()
            assert self._observer is None, "a log has at most one append observer"
            for header in self._walk_headers(from_offset, lock_held=True):
                observer.replay_locked(header)
            self._observer = observer

    def _walk_headers(self, offset: int, *, lock_held: bool) -> Iterator[codec.BatchHeader]:
        while True:
            if not lock_held:
                self._lock.acquire()
            try:
                self._check_open_locked()
                offset = max(offset, self._log_start_offset)
                if offset >= self._log_end_offset:
                    return
                i = max(self._segments.index_for(offset), 0)
                view = self._pin_locked(i)
                following = self._segments.base_offset_after(i)
                truncations = self._truncations
                if view.is_active:
                    view.end = view.segment.size  # every batch below it was written whole
                    start = read_hints(view, offset, 0)[0]
            finally:
                if not lock_held:
                    self._lock.release()
            try:
                if not view.is_active:
                    start = read_hints(view, offset, 0)[0]
                for header in walk_headers(self._fs, view.handle.fd, start, view.end):
                    if header.next_offset > offset:
                        yield header
            finally:
                view.release()
            if truncations != self._truncations:
                raise StorageError(f"{self.directory}: truncated during a walk of the batch headers; walk again")
            if following is None:
                return
            offset = max(offset, following)

    # -- deleting and truncating -----------------------------------------------------------

    def delete_records_before(self, offset: int) -> int:
        """Move the log start offset up to ``offset`` (<= high watermark), persisted in the
        checkpoint, and delete the segments wholly below it. Returns the log start offset."""
        with self._lock:
            self._check_writable_locked()
            if offset > self._high_watermark:
                raise OffsetOutOfRangeError(offset, self._log_start_offset, self._high_watermark)
            if offset <= self._log_start_offset:
                return self._log_start_offset
            self._log_start_offset = offset
            self._checkpoint_or_fail_locked()
            crash_point("retention.start_offset_checkpointed")
            self._delete_leading_locked(lambda segment: segment.next_offset <= offset)
            return self._log_start_offset

    def delete_oldest_segments(self, predicate: Callable[[SegmentInfo], bool]) -> int:
        """Delete older segments from the oldest while ``predicate(info)`` holds (never the
        active one; call ``roll()`` first to include it). Moves the log start offset to the
        first remaining segment. Returns how many segments were deleted. For retention."""
        with self._lock:
            self._check_writable_locked()
            deleted = self._delete_leading_locked(
                lambda segment: predicate(self._segments.info(segment, self._log_end_offset)), advance_start=True)
            return deleted

    def replace_segments(self, old: Sequence[SegmentInfo], cleaned: CleanedSegment) -> bool:
        """Swap the closed segments ``old`` (consecutive, as snapshotted by ``segments()``)
        for the cleaned segment written to ``cleaned``'s ``.cleaned`` files; for the log
        cleaner. Crash-safe: see :mod:`logd.storage.swap` for the steps and their recovery.

        Returns False, deleting the cleaned files, when the log changed meanwhile (one of
        ``old`` was deleted, truncated or replaced, or became active). A failure after the
        commit point fails the log (reopening it finishes the swap) and raises
        :class:`LogFailedError`. Readers that pinned an old segment keep reading it.
        """
        with self._lock:
            self._check_writable_locked()
            i = self._segments.find_run(old, cleaned, self._log_end_offset)
            if i < 0:
                discard_cleaned(self._fs, self.directory, cleaned.base_offset, cleaned.end_offset)
                return False
            doomed = self._segments[i:i + len(old)]
            self._segments.release_for_swap_locked(doomed)
            try:
                commit_swap(self._fs, self.directory, doomed, cleaned)
            except Exception as exc:
                self._fail_locked(exc)
                self._reads_refused = (f"{self.directory}: a segment swap failed ({exc}); reads resume once the "
                                       f"broker restarts, which finishes the swap")
                raise LogFailedError(f"{self.directory}: segment swap failed: {exc}") from exc
            self._segments.replace_locked(i, len(old), cleaned, self._config.index_interval_bytes)
            return True

    def _delete_leading_locked(self, should_delete: Callable[[Segment], bool], advance_start: bool = False) -> int:
        count = 0
        while count < len(self._segments) - 1 and should_delete(self._segments[count]):
            count += 1
        if not count:
            return 0
        doomed = self._segments.remove_leading_locked(count)
        if advance_start and self._segments[0].base_offset > self._log_start_offset:
            self._log_start_offset = self._segments[0].base_offset
            self._checkpoint_or_fail_locked()
            crash_point("retention.start_offset_checkpointed")
        for segment in doomed:
            self._segments.delete_removed_locked(segment)
            crash_point("retention.segment_deleted")
        crash_point("retention.segments_deleted")
        try:
            self._fs.fsync_dir(self.directory)
        except OSError as exc:
            self._fail_locked(exc)
            raise LogFailedError(f"{self.directory}: directory fsync failed: {exc}") from exc
        return count

    def truncate_to(self, offset: int) -> None:
        """Remove every batch whose last offset is >= ``offset`` (a batch is never split, so
        the log end offset becomes <= ``offset``). Below the log start offset the log is
        emptied and restarts at ``offset``. No-op at or beyond the log end."""
        with self._lock:
            self._check_writable_locked()
            self._wait_no_flush_locked()
            if offset >= self._log_end_offset:
                return
            self._truncations += 1
            try:
                if offset < self._log_start_offset or offset <= self._segments[0].base_offset:
                    new_start = max(offset, 0) if offset < self._log_start_offset else self._segments[0].base_offset
                    self._segments.reset_locked(new_start, self._config.index_interval_bytes, self._clock_ms())
                    self._log_start_offset = self._log_end_offset = new_start
                else:
                    self._segments.truncate_within_locked(offset)
                    self._log_end_offset = self._segments.active.next_offset
            except OSError as exc:
                self._fail_locked(exc)
                raise LogFailedError(f"{self.directory}: truncation failed: {exc}") from exc
            # A batch straddling the log start offset may have gone with the truncation.
            self._log_start_offset = min(self._log_start_offset, self._log_end_offset)
            self._truncated_ends.append((self._truncations, self._log_end_offset))
            active = self._segments[-1]
            self._durable_offset = self._high_watermark = self._log_end_offset
            self._visible_position = self._durable_position = active.size
            if self._observer is not None:
                self._observer.truncated_locked(self._log_end_offset)
            self._checkpoint_or_fail_locked()
            self._changed.notify_all()

    def __repr__(self) -> str:
        return (f"PartitionLog({self.directory}, start={self._log_start_offset}, "
                f"end={self._log_end_offset}, hw={self._high_watermark})")


# AppendObserver, parse_batches and walk_headers are defined in observer.py and batches.py;
# they are importable from here too.
__all__ = ["AppendObserver", "PartitionLog", "parse_batches", "walk_headers", "wall_clock_ms", "StorageError"]
