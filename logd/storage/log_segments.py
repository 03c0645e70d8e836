"""The segments of one log and the file work that changes which segments it has.

:class:`LogSegments` (Kafka's ``LogSegments``, with the file operations of its
``LocalLog``) holds the segments oldest first, the last one active, with their base
offsets for bisection and their total size. It pins a segment for a read, keeping the
indexes of only a few older segments loaded, and it carries out the segment-level steps
of the log's changes: cutting the tail at an offset, emptying the log, taking deleted
segments out and swapping a cleaned segment in. What those changes mean for the log's
offsets, checkpoint, failure state and crash points stays in :mod:`logd.storage.log`.

Thread-safety: no lock of its own; the owning ``PartitionLog`` calls every method with
its lock held (the ``*_locked`` ones change the segments or their files).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence, overload

from logd.storage.config import SegmentInfo
from logd.storage.files import FileSystem
from logd.storage.handles import HandleCache
from logd.storage.reader import PinnedSegment
from logd.storage.segment import Segment
from logd.storage.swap import CleanedSegment

logger = logging.getLogger("logd.storage")

#: Older segments per log whose indexes stay loaded in memory (the rest reload on use).
LOADED_INDEXES_PER_LOG = 4


class LogSegments:
    """The segments of one log, oldest first; ``active`` is the last. Never empty once
    the log is open. ``size_bytes`` is their total size (the log adds its appends)."""

    def __init__(self, fs: FileSystem, directory: Path, handles: HandleCache) -> None:
        self._fs = fs
        self._directory = directory
        self._handles = handles
        self._segments: list[Segment] = []
        self._base_offsets: list[int] = []
        self._loaded_older: OrderedDict[int, Segment] = OrderedDict()  # by base offset
        self.size_bytes = 0

    def load(self, segments: list[Segment]) -> None:
        """Take the segments recovery returned (their cached read handles are dropped)."""
        for segment in segments:
            # A handle cached by an earlier instance may point at a file replaced since.
            self._handles.discard(segment.log_path)
        self._segments = segments
        self._base_offsets = [segment.base_offset for segment in segments]
        self.size_bytes = sum(segment.size for segment in segments)

    # -- lookup ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segments)

    @overload
    def __getitem__(self, i: int) -> Segment: ...

    @overload
    def __getitem__(self, i: slice) -> list[Segment]: ...

    def __getitem__(self, i: int | slice) -> Segment | list[Segment]:
        return self._segments[i]

    def index(self, segment: Segment) -> int:
        return self._segments.index(segment)

    @property
    def active(self) -> Segment:
        return self._segments[-1]

    def index_for(self, offset: int) -> int:
        """The index of the segment that would hold ``offset`` (-1 below the first)."""
        return bisect_right(self._base_offsets, offset) - 1

    def base_offset_after(self, i: int) -> int | None:
        """The base offset of the segment after the ``i``-th, None if that is the last."""
        return self._base_offsets[i + 1] if i + 1 < len(self._segments) else None

    def info(self, segment: Segment, log_end_offset: int) -> SegmentInfo:
        is_active = segment is self._segments[-1]
        last_modified_ms = -1
        if segment.max_timestamp_ms < 0 and segment.size > 0:  # records without timestamps
            try:
                last_modified_ms = os.stat(segment.log_path).st_mtime_ns // 1_000_000
            except OSError:
                pass  # deleted meanwhile: it goes anyway
        return SegmentInfo(
            base_offset=segment.base_offset, size_bytes=segment.size,
            max_timestamp_ms=segment.max_timestamp_ms,
            next_offset=log_end_offset if is_active else segment.next_offset,
            path=segment.log_path, is_active=is_active, created_ms=segment.created_ms,
            last_modified_ms=last_modified_ms,
        )

    def find_run(self, old: Sequence[SegmentInfo], cleaned: CleanedSegment, log_end_offset: int) -> int:
        """Where the run ``old`` starts, or -1 if it is not there as snapshotted, is not
        followed by another segment, or does not match ``cleaned``."""
        if not old or cleaned.base_offset != old[0].base_offset or cleaned.end_offset != old[-1].next_offset:
            return -1
        i = self.index_for(old[0].base_offset)
        if i < 0 or i + len(old) >= len(self._segments):
            return -1
        current = [self.info(segment, log_end_offset) for segment in self._segments[i:i + len(old)]]
        return i if current == list(old) else -1

    def pin_older_locked(self, i: int) -> PinnedSegment:
        """Pin the ``i``-th segment, not the active one, for a read without the lock."""
        segment = self._segments[i]
        # Keep the indexes of only a few older segments loaded: memory stays bounded
        # however much of the log is read.
        self._loaded_older[segment.base_offset] = segment
        self._loaded_older.move_to_end(segment.base_offset)
        while len(self._loaded_older) > LOADED_INDEXES_PER_LOG:
            self._loaded_older.popitem(last=False)[1].drop_loaded_indexes()
        return PinnedSegment(segment, self._handles.acquire(segment.log_path, self._fs), segment.size, False)

    # -- changes ---------------------------------------------------------------------------

    def add_locked(self, segment: Segment) -> None:
        """Make ``segment`` (newly rolled, empty) the active one."""
        self._segments.append(segment)
        self._base_offsets.append(segment.base_offset)

    def remove_leading_locked(self, count: int) -> list[Segment]:
        """Take the first ``count`` segments out of the list (their files stay until
        :meth:`delete_removed_locked`); returns them."""
        doomed = self._segments[:count]
        del self._segments[:count]
        del self._base_offsets[:count]
        return doomed

    def delete_removed_locked(self, segment: Segment) -> None:
        """Delete the files of a segment taken out by :meth:`remove_leading_locked` (a
        failure is logged, not raised: the segment is out of the log already)."""
        self.size_bytes -= segment.size
        self._handles.discard(segment.log_path)
        try:
            segment.delete_files_locked()
        except OSError as exc:
            logger.warning("%s: could not delete: %s", segment.log_path, exc)

    def truncate_within_locked(self, offset: int) -> None:
        """Cut the log before the batch holding ``offset`` (at or after the first segment's
        base offset): delete every later segment, cut the one holding it at that batch
        (which becomes the active segment), fsync it, write its indexes, fsync the
        directory. Raises OSError."""
        i = self.index_for(offset)
        for segment in self._segments[i + 1:]:
            self.size_bytes -= segment.size
            self._handles.discard(segment.log_path)
            segment.delete_files_locked()
        del self._segments[i + 1:]
        del self._base_offsets[i + 1:]
        segment = self._segments[i]
        if segment.parked:
            segment.unpark_locked()
        elif segment.write_handle is None:
            self._handles.discard(segment.log_path)
            segment.open_for_append_locked(create=False)
        assert segment.write_handle is not None
        fd = segment.write_handle.fd
        offset_index, _ = segment.indexes(fd)
        batch = segment.find_batch(fd, offset, offset_index.lookup(offset - segment.base_offset), segment.size)
        old_size = segment.size
        if batch is None:
            segment.truncate_locked(segment.size, segment.next_offset)
        else:
            segment.truncate_locked(batch.position, batch.base_offset)
        segment.fsync_locked()
        segment.write_indexes_locked(final=False)
        self._fs.fsync_dir(self._directory)
        self.size_bytes -= old_size - segment.size

    def reset_locked(self, new_start: int, index_interval_bytes: int, created_ms: int) -> None:
        """Delete every segment and start over with one empty segment at ``new_start``
        (its file created, the directory fsynced). Raises OSError."""
        for segment in self._segments:
            self._handles.discard(segment.log_path)
            segment.delete_files_locked()
        self._fs.fsync_dir(self._directory)
        segment = Segment(self._fs, self._directory, new_start, index_interval_bytes, created_ms)
        segment.open_for_append_locked(create=True)
        self._fs.fsync_dir(self._directory)
        self._segments, self._base_offsets = [segment], [new_start]
        self.size_bytes = 0

    def release_for_swap_locked(self, doomed: Sequence[Segment]) -> None:
        """Before a swap replaces ``doomed``: load the indexes a reader pinning one of them
        may still need (after the swap, ``<base>.index`` names the cleaned segment's index)
        and drop their cached read handles."""
        for segment in doomed:
            handle = self._handles.acquire(segment.log_path, self._fs)
            try:
                segment.indexes(handle.fd)
            finally:
                handle.release()
            self._handles.discard(segment.log_path)

    def replace_locked(self, i: int, count: int, cleaned: CleanedSegment, index_interval_bytes: int) -> None:
        """After a committed swap: the ``count`` segments from the ``i``-th are one now."""
        new = Segment(self._fs, self._directory, cleaned.base_offset, index_interval_bytes, cleaned.created_ms)
        new.size, new.next_offset = cleaned.size_bytes, cleaned.end_offset
        new.max_timestamp_ms = cleaned.max_timestamp_ms
        doomed = self._segments[i:i + count]
        self._segments[i:i + count] = [new]
        self._base_offsets[i:i + count] = [new.base_offset]
        self.size_bytes += new.size - sum(segment.size for segment in doomed)


__all__ = ["LOADED_INDEXES_PER_LOG", "LogSegments"]
