"""The crash-safe swap of cleaned segments for old ones (Kafka's scheme), and its recovery.

The log cleaner replaces a run of closed segments ``[b0, b1, .., bk]`` (the next segment
starts at ``end``) with one cleaned segment whose base offset is ``b0``. Its files::

    <b0>.<end>.log.cleaned        the cleaned batches (written and fsynced by the cleaner)
    <b0>.<end>.index.cleaned      its offset index   (idem)
    <b0>.<end>.timeindex.cleaned  its time index     (idem)
    <b0>.<end>.log.swap           the log file once the swap is committed

(``<n>`` is ``f"{n:020d}"``.) The end offset is in the name because compaction may drop
the last batches of the run, so the cleaned data alone cannot tell recovery which old
segments it replaces.

The swap, step by step; each step is a named crash point (:func:`crash_point`)::

    cleaned_partial       the cleaned log is written, its indexes are not     -> old
    cleaned_written       every .cleaned file written and fsynced             -> old
    swap_renamed          .log.cleaned renamed to .log.swap, dir not fsynced  -> new
    swap_committed        directory fsynced: the commit point                 -> new
    old_segment_deleted   the first old segment's files unlinked              -> new
    old_segments_deleted  every old segment unlinked, directory fsynced       -> new
    log_renamed           .log.swap renamed to <b0>.log                       -> new
    indexes_renamed       the index files renamed to <b0>.index/.timeindex    -> new
    swap_done             directory fsynced                                   -> new

(The right column is what a log reopened after a crash at that point holds: the old
segments or the new one, never a mix. After ``swap_renamed`` a real power loss may still
undo the rename; then recovery sees the state of ``cleaned_written``: old.)

Recovery (:func:`finish_interrupted_swaps`, the first step of opening a log):

1. A ``.log.swap`` exists: the swap was committed. Delete every segment file whose base
   offset lies in ``[b0, end)`` (what is left of the old segments), move the index
   ``.cleaned`` files into place if they are there, rename the swap to ``<b0>.log``.
2. Delete every other ``.cleaned`` file: an uncommitted swap is rolled back; an index
   left over after ``log_renamed`` is not trusted (the segment's indexes are rebuilt
   from the log, as for any segment whose index files are missing).
3. fsync the directory if anything changed.

Thread-safety: the writer is used by one thread (the cleaner); ``commit_swap`` is called
by ``PartitionLog.replace_segments`` with the log's lock held; recovery runs before the
log is shared.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from logd import faults
from logd.storage.files import FileSystem, unlink_if_exists
from logd.storage.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIMEINDEX_SUFFIX,
    BatchPosition,
    Segment,
    segment_file_name,
)

logger = logging.getLogger("logd.storage")

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
#: The cleaner's own state file in a partition directory (format in ``logd.storage.cleaner``);
#: named here so that recovery knows it.
CLEANER_CHECKPOINT_FILE = "cleaner-checkpoint"

CRASH_POINTS = (
    "cleaned_partial", "cleaned_written", "swap_renamed", "swap_committed", "old_segment_deleted",
    "old_segments_deleted", "log_renamed", "indexes_renamed", "swap_done",
)

_SWAP_FILE = re.compile(r"^(\d{20})\.(\d{20})(\.log|\.index|\.timeindex)(\.cleaned|\.swap)$")
_SEGMENT_FILE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex)$")
_WRITE_BUFFER_BYTES = 256 * 1024

#: Tests set this to a function of the crash point's name that raises, to stop a swap
#: there. Raise a ``BaseException`` subclass (not an ``Exception``): error handling then
#: does not run, as it would not in a killed process.
crash_hook: Callable[[str], None] | None = None


def crash_point(name: str) -> None:
    """Call the test hook, if any, at the named step (see the module docstring); then
    :func:`logd.faults.crash_point` as ``swap.<name>`` (so ``LOGD_CRASH_POINT`` can kill
    a broker subprocess there)."""
    assert name in CRASH_POINTS, name
    hook = crash_hook
    if hook is not None:
        hook(name)
    faults.crash_point("swap." + name)


def swap_file_name(base_offset: int, end_offset: int, suffix: str, state: str) -> str:
    """``<base>.<end><suffix><state>``, e.g. ``...0000.00000000000000000042.log.swap``."""
    return f"{base_offset:020d}.{end_offset:020d}{suffix}{state}"


@dataclass(frozen=True)
class CleanedSegment:
    """A cleaned segment written to its ``.cleaned`` files, ready for ``replace_segments``.

    ``end_offset`` is where the replaced run ends (the next segment's base offset);
    ``max_timestamp_ms`` is -1 when no batch survived (the segment is empty).
    """

    directory: Path
    base_offset: int
    end_offset: int
    size_bytes: int
    max_timestamp_ms: int
    created_ms: int

    def path(self, suffix: str, state: str = CLEANED_SUFFIX) -> Path:
        return self.directory / swap_file_name(self.base_offset, self.end_offset, suffix, state)


class CleanedSegmentWriter:
    """Writes one cleaned segment: batches appended in offset order, then ``finish()``.

    Reuses :class:`Segment`'s append path (index building, max timestamp) on a segment
    whose three paths point at the ``.cleaned`` names. Writes are buffered. ``abort()``
    deletes what was written. Not thread-safe (the cleaner's thread owns it).
    """

    def __init__(self, fs: FileSystem, directory: Path, base_offset: int, end_offset: int,
                 index_interval_bytes: int, created_ms: int) -> None:
        assert base_offset < end_offset
        self._fs = fs
        self._directory = directory
        self._end_offset = end_offset
        self._segment = Segment(fs, directory, base_offset, index_interval_bytes, created_ms)
        names = {LOG_SUFFIX: "log_path", INDEX_SUFFIX: "index_path", TIMEINDEX_SUFFIX: "timeindex_path"}
        for suffix, attribute in names.items():
            path = directory / swap_file_name(base_offset, end_offset, suffix, CLEANED_SUFFIX)
            unlink_if_exists(fs, path)  # left by an aborted pass; recovery also removes them
            setattr(self._segment, attribute, path)
        self._buffer = bytearray()
        self._positions: list[BatchPosition] = []
        self._segment.open_for_append_locked(create=True)

    @property
    def size_bytes(self) -> int:
        return self._segment.size + len(self._buffer)

    def append(self, batch: bytes | memoryview, base_offset: int, next_offset: int, max_timestamp_ms: int) -> None:
        """Add one whole, valid batch (offsets must increase and stay below the end)."""
        assert next_offset <= self._end_offset, (next_offset, self._end_offset)
        self._positions.append(BatchPosition(len(self._buffer), len(batch), base_offset, next_offset,
                                             max_timestamp_ms))
        self._buffer += batch
        if len(self._buffer) >= _WRITE_BUFFER_BYTES:
            self._write_buffer()

    def _write_buffer(self) -> None:
        if self._positions:
            self._segment.append_locked(self._buffer, self._positions)
        self._buffer = bytearray()
        self._positions = []

    def finish(self, modified_ns: int | None = None) -> CleanedSegment:
        """Write the rest, fsync the log, write and fsync its indexes, close.
        ``modified_ns``: the log file's modification time to keep (the replaced segments'
        newest: retention ages records without a timestamp by it, as Kafka's cleaner
        keeps it; a rewrite must not make them young again)."""
        segment = self._segment
        try:
            self._write_buffer()
            segment.fsync_locked()
            if modified_ns is not None:
                os.utime(segment.log_path, ns=(modified_ns, modified_ns))
            crash_point("cleaned_partial")
            segment.write_indexes_locked(final=True)
        finally:
            segment.deactivate_locked()
        crash_point("cleaned_written")
        return CleanedSegment(self._directory, segment.base_offset, self._end_offset, segment.size,
                              segment.max_timestamp_ms, segment.created_ms)

    def abort(self) -> None:
        """Close and delete the files (the pass was given up)."""
        self._segment.deactivate_locked()
        discard_cleaned(self._fs, self._directory, self._segment.base_offset, self._end_offset)


def discard_cleaned(fs: FileSystem, directory: Path, base_offset: int, end_offset: int) -> None:
    """Delete a cleaned segment's ``.cleaned`` files (never committed)."""
    for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX):
        unlink_if_exists(fs, directory / swap_file_name(base_offset, end_offset, suffix, CLEANED_SUFFIX))


def commit_swap(fs: FileSystem, directory: Path, old_segments: Sequence[Segment], cleaned: CleanedSegment) -> None:
    """Steps ``swap_renamed`` .. ``swap_done`` of the module docstring.

    The caller holds the log's lock, has checked that ``old_segments`` are the run that
    ``cleaned`` replaces, and fails the log if this raises (recovery then finishes or
    rolls back the swap).
    """
    swap = cleaned.path(LOG_SUFFIX, SWAP_SUFFIX)
    fs.rename(cleaned.path(LOG_SUFFIX), swap)
    crash_point("swap_renamed")
    fs.fsync_dir(directory)
    crash_point("swap_committed")
    for i, segment in enumerate(old_segments):
        segment.delete_files_locked()
        if i == 0:
            crash_point("old_segment_deleted")
    fs.fsync_dir(directory)
    crash_point("old_segments_deleted")
    fs.rename(swap, directory / segment_file_name(cleaned.base_offset, LOG_SUFFIX))
    crash_point("log_renamed")
    for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
        fs.rename(cleaned.path(suffix), directory / segment_file_name(cleaned.base_offset, suffix))
    crash_point("indexes_renamed")
    fs.fsync_dir(directory)
    crash_point("swap_done")


def finish_interrupted_swaps(fs: FileSystem, directory: Path) -> int:
    """Recovery of interrupted swaps (see the module docstring); returns how many were
    completed. Call before anything else looks at the segment files."""
    names = os.listdir(directory)
    swaps = sorted((int(m.group(1)), int(m.group(2))) for m in map(_SWAP_FILE.match, names)
                   if m and m.group(3) == LOG_SUFFIX and m.group(4) == SWAP_SUFFIX)
    changed = False
    for base_offset, end_offset in swaps:
        logger.warning("%s: completing the interrupted swap of the cleaned segment for offsets [%d, %d)",
                       directory, base_offset, end_offset)
        for name in os.listdir(directory):
            match = _SEGMENT_FILE.match(name)
            if match and base_offset <= int(match.group(1)) < end_offset:
                unlink_if_exists(fs, directory / name)
        fs.fsync_dir(directory)
        cleaned = CleanedSegment(directory, base_offset, end_offset, 0, -1, 0)
        for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
            if cleaned.path(suffix).exists():
                fs.rename(cleaned.path(suffix), directory / segment_file_name(base_offset, suffix))
        fs.rename(cleaned.path(LOG_SUFFIX, SWAP_SUFFIX), directory / segment_file_name(base_offset, LOG_SUFFIX))
        changed = True
    for name in os.listdir(directory):
        match = _SWAP_FILE.match(name)
        if match and match.group(4) == CLEANED_SUFFIX:
            logger.info("%s: removing %s, left by an interrupted log cleaner pass", directory, name)
            changed |= unlink_if_exists(fs, directory / name)
    if changed:
        fs.fsync_dir(directory)
    return len(swaps)
