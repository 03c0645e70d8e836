"""A segment: one ``.log`` file of batches with its ``.index`` and ``.timeindex``.

``<base_offset:020d>.log`` holds whole record batches (``logd_sdk.codec`` format) back to
back, nothing else: no file header, no padding. The indexes are described in
:mod:`logd.storage.index`. Only the newest segment of a log (the *active* one) is
written; it keeps its log file open and its indexes in memory. Older segments are
immutable until deleted; their file is opened through the :class:`HandleCache` and their
indexes are loaded on first use (and rebuilt from the log if the files are missing or
invalid).

Thread-safety: the owning :class:`~logd.storage.log.PartitionLog` calls every ``*_locked``
method with its lock held. The read helpers (``find_batch``, ``read_end``,
``offset_index``) run without the log lock on an immutable segment, or with it held on
the active one; ``_load_lock`` serialises the lazy loading of an older segment's indexes
with its deletion.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from pathlib import Path
from typing import Iterator, NamedTuple

from logd_sdk import codec
from logd.storage.files import FileSystem, read_file, unlink_if_exists
from logd.storage.handles import Handle
from logd.storage.index import (
    OFFSET_ENTRY_SIZE,
    TIME_ENTRY_SIZE,
    InvalidIndexError,
    OffsetIndex,
    TimeIndex,
)

logger = logging.getLogger("logd.storage")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"

# Fields read straight out of a batch header while walking a file.
_BASE_AND_LENGTH = struct.Struct("<qi")  # base_offset, batch_length at 0
_BASE_OFFSET = struct.Struct("<q")  # at 0
_BATCH_LENGTH = struct.Struct("<i")  # at 8
_WALK_FIELDS = struct.Struct("<i8xq")  # last_offset_delta at 23, max_timestamp at 35
_WALK_CHUNK = 4096
_VERIFY_CHUNK = 1024 * 1024


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class BatchPosition(NamedTuple):
    """Where a batch lies and what a walk needs from its header (a tuple: cheap to make)."""

    position: int
    size: int
    base_offset: int
    next_offset: int
    max_timestamp_ms: int


class InvalidBatchAt(Exception):
    """A walk found an invalid batch at ``position`` (the caller decides what that means)."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"invalid batch at byte {position}: {reason}")
        self.position = position
        self.reason = reason


def walk_batches(fs: FileSystem, fd: int, start: int, end: int, *, verify: bool,
                 expected_offset: int | None = None) -> Iterator[BatchPosition]:
    """Yield every whole batch in ``[start, end)`` of the file, in order.

    Stops quietly before a batch that runs past ``end`` (a torn tail: the caller compares
    the last position reached with ``end``). With ``verify``, each batch is CRC-checked
    (reading it whole, so memory is bounded by the largest batch) and its base offset must
    not go backwards; an invalid one raises :class:`InvalidBatchAt`. Without it only the
    headers are read.
    """
    # Unverified walks need only headers: read 4 KiB at a time among small batches, but
    # just the next header when batches are large (each needs its own read anyway).
    chunk_bytes = _VERIFY_CHUNK if verify else _WALK_CHUNK
    buffer = b""
    buffer_start = start
    position = start
    while end - position >= codec.LOG_OVERHEAD:
        relative = position - buffer_start
        if len(buffer) - relative < codec.HEADER_SIZE:
            buffer = fs.pread(fd, min(chunk_bytes, end - position), position)
            buffer_start, relative = position, 0
        if len(buffer) - relative < codec.LOG_OVERHEAD:
            return
        base_offset, batch_length = _BASE_AND_LENGTH.unpack_from(buffer, relative)
        size = batch_length + codec.LOG_OVERHEAD
        if size < codec.HEADER_SIZE or size > codec.MAX_BATCH_BYTES:
            if end - position < codec.HEADER_SIZE:
                return  # a torn header: its length field may be garbage
            raise InvalidBatchAt(position, f"batch length {batch_length} out of range")
        if size > end - position:
            return
        if verify:
            if len(buffer) - relative < size:
                buffer = fs.pread(fd, min(max(chunk_bytes, size), end - position), position)
                buffer_start, relative = position, 0
            try:
                header = codec.validate(buffer, relative, size)
            except codec.CorruptBatchError as exc:
                raise InvalidBatchAt(position, str(exc)) from None
            if expected_offset is not None and base_offset < expected_offset:
                raise InvalidBatchAt(
                    position, f"base offset {base_offset} goes back below {expected_offset}")
            next_offset = header.next_offset
            max_timestamp_ms = header.max_timestamp
            expected_offset = next_offset
        else:
            last_offset_delta, max_timestamp_ms = _WALK_FIELDS.unpack_from(buffer, relative + 23)
            next_offset = base_offset + last_offset_delta + 1
            chunk_bytes = _WALK_CHUNK if size < _WALK_CHUNK else codec.HEADER_SIZE
        yield BatchPosition(position, size, base_offset, next_offset, max_timestamp_ms)
        position += size


class Segment:
    """One segment of a partition log (see the module docstring for files and threading)."""

    def __init__(self, fs: FileSystem, directory: Path, base_offset: int,
                 index_interval_bytes: int, created_ms: int) -> None:
        self.fs = fs
        self.base_offset = base_offset
        self.log_path = directory / segment_file_name(base_offset, LOG_SUFFIX)
        self.index_path = directory / segment_file_name(base_offset, INDEX_SUFFIX)
        self.timeindex_path = directory / segment_file_name(base_offset, TIMEINDEX_SUFFIX)
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = created_ms
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp_ms = -1
        self.deleted = False
        #: The open read-write handle while the segment is active, else None.
        self.write_handle: Handle | None = None
        #: Active, but its file was closed to save a descriptor (reopened on next use).
        self.parked = False
        self._offset_index: OffsetIndex | None = None
        self._time_index: TimeIndex | None = None
        self._max_timestamp_relative_offset = 0
        self._bytes_since_index_entry = 0
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Segment({self.log_path.name}, size={self.size}, next_offset={self.next_offset})"

    # -- writing (active segment, log lock held) ---------------------------------------

    def open_for_append_locked(self, *, create: bool, read_only: bool = False) -> None:
        """Open the log file read-write (creating it if asked) and make the segment active
        (``read_only``: open it read-only, for a log on a read-only file system)."""
        flags = os.O_RDONLY if read_only else os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self.write_handle = Handle(self.fs, self.fs.open(self.log_path, flags))
        if create:
            self._offset_index = OffsetIndex()
            self._time_index = TimeIndex()

    def append_locked(self, data: bytes | bytearray | memoryview, batches: list[BatchPosition], *,
                      stamp_offsets: bool = False) -> None:
        """Write ``data`` (the ``batches``, positions relative to ``data``) at the end.

        One write for the whole buffer; index entries are added in memory only. If the
        write raises, nothing in memory changed (the caller fails the log).
        ``stamp_offsets``: write each batch's ``base_offset`` over the first 8 bytes of
        its header (the offsets the log assigned), leaving ``data`` untouched: one
        ``pwritev`` of the new offsets and the rest of each batch, instead of a copy of a
        producer's whole buffer to rewrite them in.
        """
        assert self.write_handle is not None, "append to an inactive segment"
        if stamp_offsets:
            view = memoryview(data)
            buffers = []
            for batch in batches:
                buffers.append(_BASE_OFFSET.pack(batch.base_offset))
                buffers.append(view[batch.position + 8:batch.position + batch.size])
            self.fs.pwritev(self.write_handle.fd, buffers, self.size)
        else:
            self.fs.pwrite(self.write_handle.fd, data, self.size)
        start = self.size
        for batch in batches:
            self._index_batch_locked(start + batch.position, batch)
        self.size += len(data)
        self.next_offset = batches[-1].next_offset

    def _index_batch_locked(self, position: int, batch: BatchPosition) -> None:
        relative_offset = batch.base_offset - self.base_offset
        if batch.max_timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms = batch.max_timestamp_ms
            self._max_timestamp_relative_offset = relative_offset
        if self._bytes_since_index_entry >= self.index_interval_bytes:
            assert self._offset_index is not None and self._time_index is not None
            self._offset_index.append(relative_offset, position)
            self._time_index.maybe_append(self.max_timestamp_ms, self._max_timestamp_relative_offset)
            self._bytes_since_index_entry = 0
        self._bytes_since_index_entry += batch.size

    def fsync_locked(self) -> None:
        assert self.write_handle is not None
        self.fs.fsync(self.write_handle.fd)

    def write_indexes_locked(self, *, final: bool) -> None:
        """Persist the in-memory indexes (``final``: add the last time index entry, as a
        segment does when it stops being active)."""
        offset_index, time_index = self._offset_index, self._time_index
        assert offset_index is not None and time_index is not None
        if final and self.max_timestamp_ms >= 0:
            time_index.maybe_append(self.max_timestamp_ms, self._max_timestamp_relative_offset)
        offset_index.write(self.fs, self.index_path)
        time_index.write(self.fs, self.timeindex_path)

    def deactivate_locked(self) -> None:
        """Stop being the active segment: drop the write handle (closed once unused)."""
        self.parked = False
        if self.write_handle is not None:
            self.write_handle.release()
            self.write_handle = None

    def park_locked(self) -> None:
        """Stay active but close the file (once unused) until ``unpark_locked``: an idle
        partition then holds no descriptor. The in-memory indexes stay."""
        if self.write_handle is not None:
            self.write_handle.release()
            self.write_handle = None
            self.parked = True

    def unpark_locked(self, read_only: bool = False) -> None:
        """Reopen the file of a parked active segment."""
        if self.parked:
            self.open_for_append_locked(create=False, read_only=read_only)
            self.parked = False

    def truncate_locked(self, position: int, next_offset: int) -> None:
        """Cut the log at ``position`` (a batch boundary) and trim the indexes. The caller
        fsyncs. The segment must be active (see ``open_for_append_locked``)."""
        assert self.write_handle is not None
        offset_index, time_index = self.indexes(self.write_handle.fd)
        self.fs.ftruncate(self.write_handle.fd, position)
        self.size = position
        self.next_offset = next_offset
        offset_index.truncate_to_position(position)
        time_index.truncate_to_relative_offset(next_offset - self.base_offset)
        # Recompute the max timestamp and the index spacing from what is left.
        self.max_timestamp_ms = -1
        self._max_timestamp_relative_offset = 0
        resume = offset_index.positions[-1] if len(offset_index) else 0
        if len(time_index):
            self.max_timestamp_ms = time_index.timestamps[-1]
            self._max_timestamp_relative_offset = time_index.relative_offsets[-1]
        self._bytes_since_index_entry = 0
        for batch in walk_batches(self.fs, self.write_handle.fd, resume, position, verify=False):
            if batch.max_timestamp_ms > self.max_timestamp_ms:
                self.max_timestamp_ms = batch.max_timestamp_ms
                self._max_timestamp_relative_offset = batch.base_offset - self.base_offset
            self._bytes_since_index_entry += batch.size

    # -- recovery and loading ------------------------------------------------------------

    def rebuild_indexes_locked(self, fd: int, *, verify_from: int) -> tuple[int, InvalidBatchAt | None]:
        """Rebuild both indexes by walking the log: headers only before ``verify_from``,
        CRC-checked from there. Returns the end of the valid batches and the first invalid
        batch found (None if the walk reached a clean end or a torn tail)."""
        self._offset_index, self._time_index = OffsetIndex(), TimeIndex()
        self.max_timestamp_ms = -1
        self._max_timestamp_relative_offset = 0
        self._bytes_since_index_entry = 0
        valid_end = 0
        next_offset = self.base_offset
        file_size = self.fs.file_size(fd)
        error = None
        try:
            # Headers only up to verify_from; CRC-checked from wherever that walk stopped.
            for batch in walk_batches(self.fs, fd, 0, min(verify_from, file_size), verify=False):
                self._index_batch_locked(batch.position, batch)
                valid_end, next_offset = batch.position + batch.size, batch.next_offset
            for batch in walk_batches(self.fs, fd, valid_end, file_size, verify=True,
                                      expected_offset=next_offset):
                self._index_batch_locked(batch.position, batch)
                valid_end, next_offset = batch.position + batch.size, batch.next_offset
        except InvalidBatchAt as exc:
            error = exc
        self.size = valid_end
        self.next_offset = next_offset
        return valid_end, error

    def load_indexes_for_recovery_locked(self, fd: int, recovery_position: int) -> int:
        """Load the index files, keeping only entries below ``recovery_position`` (written
        before the last checkpoint); walk headers from the last kept entry to the recovery
        position. Returns the position from which the caller must verify (a batch boundary
        <= recovery_position), or 0 when the files were unusable (indexes rebuilt later)."""
        try:
            file_size = self.fs.file_size(fd)
            offset_index = OffsetIndex.from_bytes(read_file(self.fs, self.index_path), file_size)
            time_index = TimeIndex.from_bytes(read_file(self.fs, self.timeindex_path), 1 << 32)
        except (FileNotFoundError, InvalidIndexError):
            return 0
        offset_index.truncate_to_position(recovery_position)
        if len(offset_index) and not len(time_index):
            return 0  # every offset index entry comes with a time index entry: it was lost
        resume = offset_index.positions[-1] if len(offset_index) else 0
        if len(offset_index):
            # Spot-check the last kept entry: a batch with that base offset must be there.
            head = self.fs.pread(fd, codec.LOG_OVERHEAD, resume)
            if len(head) < codec.LOG_OVERHEAD or (
                    _BASE_AND_LENGTH.unpack(head)[0] != self.base_offset + offset_index.relative_offsets[-1]):
                return 0
            time_index.truncate_to_relative_offset(offset_index.relative_offsets[-1] + 1)
        else:
            time_index = TimeIndex()
        self._offset_index, self._time_index = offset_index, time_index
        self.max_timestamp_ms = time_index.last_timestamp
        self._max_timestamp_relative_offset = time_index.relative_offsets[-1] if len(time_index) else 0
        self._bytes_since_index_entry = 0
        position = resume
        next_offset = self.base_offset + (offset_index.relative_offsets[-1] if len(offset_index) else 0)
        try:
            for batch in walk_batches(self.fs, fd, resume, recovery_position, verify=False):
                if batch.base_offset < next_offset:
                    return 0
                if batch.position > resume:
                    self._index_batch_locked(batch.position, batch)
                else:
                    self._bytes_since_index_entry += batch.size
                    if batch.max_timestamp_ms > self.max_timestamp_ms:
                        self.max_timestamp_ms = batch.max_timestamp_ms
                        self._max_timestamp_relative_offset = batch.base_offset - self.base_offset
                position = batch.position + batch.size
                next_offset = batch.next_offset
        except InvalidBatchAt:
            return 0
        self.size = position
        self.next_offset = next_offset
        return position

    def continue_recovery_locked(self, fd: int, position: int) -> tuple[int, InvalidBatchAt | None]:
        """CRC-check and index the batches from ``position`` (after
        ``load_indexes_for_recovery_locked``). Returns (valid end, first invalid batch)."""
        error = None
        try:
            for batch in walk_batches(self.fs, fd, position, self.fs.file_size(fd), verify=True,
                                      expected_offset=self.next_offset):
                self._index_batch_locked(batch.position, batch)
                self.size = batch.position + batch.size
                self.next_offset = batch.next_offset
        except InvalidBatchAt as exc:
            error = exc
        return self.size, error

    def load_summary_locked(self, log_size: int, next_offset: int) -> bool:
        """For an older segment at open: size, next offset and max timestamp from the last
        time index entry, without loading the indexes. False if the index files look
        invalid (the caller then rebuilds them)."""
        self.size = log_size
        self.next_offset = next_offset
        try:
            index_size = os.stat(self.index_path).st_size
            timeindex_size = os.stat(self.timeindex_path).st_size
        except FileNotFoundError:
            return False
        if index_size % OFFSET_ENTRY_SIZE or timeindex_size % TIME_ENTRY_SIZE:
            return False
        if log_size == 0:
            return True
        if timeindex_size == 0:
            return False  # a non-empty segment gets a final time index entry on roll
        tail = read_file(self.fs, self.timeindex_path)[-TIME_ENTRY_SIZE:]
        timestamp_ms, relative_offset = struct.unpack("<qI", tail)
        if relative_offset >= next_offset - self.base_offset:
            return False
        self.max_timestamp_ms = timestamp_ms
        return True

    # -- reading -------------------------------------------------------------------------

    def indexes(self, fd: int) -> tuple[OffsetIndex, TimeIndex]:
        """The indexes, loaded (or rebuilt through ``fd``) on first use."""
        offset_index, time_index = self._offset_index, self._time_index
        if offset_index is not None and time_index is not None:
            return offset_index, time_index
        with self._load_lock:
            if self._offset_index is None or self._time_index is None:
                self._load_or_rebuild(fd)
            assert self._offset_index is not None and self._time_index is not None
            return self._offset_index, self._time_index

    def _load_or_rebuild(self, fd: int) -> None:
        try:
            offset_index = OffsetIndex.from_bytes(read_file(self.fs, self.index_path), self.size)
            time_index = TimeIndex.from_bytes(read_file(self.fs, self.timeindex_path),
                                              self.next_offset - self.base_offset)
            self._offset_index, self._time_index = offset_index, time_index
            return
        except (FileNotFoundError, InvalidIndexError) as exc:
            logger.warning("%s: rebuilding the indexes (%s)", self.log_path, exc)
        max_timestamp_ms = self.max_timestamp_ms
        size, next_offset = self.size, self.next_offset
        self.rebuild_indexes_locked(fd, verify_from=size)
        # A read-time rebuild never changes what the log believes the segment holds.
        self.size, self.next_offset = size, next_offset
        self.max_timestamp_ms = max(self.max_timestamp_ms, max_timestamp_ms)
        if not self.deleted:
            try:
                self.write_indexes_locked(final=True)
            except OSError as exc:  # derived data: the read goes on with the loaded indexes
                logger.warning("%s: could not save the rebuilt indexes: %s", self.log_path, exc)

    def drop_loaded_indexes(self) -> None:
        """Forget an older segment's loaded indexes (memory); they reload on next use. Not
        a deleted one's: a reader that pinned it would reload them from its base offset's
        index files, which a compaction swap has replaced with the cleaned segment's (and
        read the old file at the new file's positions)."""
        with self._load_lock:
            if self.write_handle is None and not self.parked and not self.deleted:
                self._offset_index = self._time_index = None

    def find_batch(self, fd: int, offset: int, hint: int, end: int) -> BatchPosition | None:
        """The first batch in ``[hint, end)`` whose last offset is >= ``offset``, or None.
        ``hint`` is a batch boundary at or before that batch (from the offset index)."""
        for batch in walk_batches(self.fs, fd, hint, end, verify=False):
            if batch.next_offset > offset:
                return batch
        return None

    def read_end(self, fd: int, start: int, max_bytes: int, end: int, floor: int, *, at_least_one: bool) -> int:
        """End of the whole batches from ``start`` (a batch boundary) that fit ``max_bytes``
        within ``[start, end)``; at least one batch when ``at_least_one``. ``floor`` is a
        batch boundary <= ``start + max_bytes`` from the index, to walk from.

        The hot path of every fetch, hence a plain loop over length fields rather than
        :func:`walk_batches`: usually one small read at ``floor``.
        """
        if end - start <= max_bytes:
            return end
        target = start + max_bytes
        position = max(start, floor)
        pread = self.fs.pread
        chunk, chunk_start, read_size = b"", position, codec.LOG_OVERHEAD
        while end - position >= codec.LOG_OVERHEAD:
            relative = position - chunk_start
            if len(chunk) - relative < codec.LOG_OVERHEAD:
                chunk, chunk_start, relative = pread(fd, min(read_size, end - position), position), position, 0
                if len(chunk) < codec.LOG_OVERHEAD:
                    break
            size = _BATCH_LENGTH.unpack_from(chunk, relative + 8)[0] + codec.LOG_OVERHEAD
            if size < codec.HEADER_SIZE or position + size > end:
                break  # cannot happen below the committed end, unless truncated meanwhile
            if position + size > target:
                if position == start and at_least_one:
                    return start + size
                return position
            position += size
            # Small batches: read their length fields a page at a time.
            read_size = _WALK_CHUNK if size < _WALK_CHUNK else codec.LOG_OVERHEAD
        return position

    # -- deletion ------------------------------------------------------------------------

    def delete_files_locked(self) -> None:
        """Close (once unused) and unlink the segment's files; the caller fsyncs the dir."""
        with self._load_lock:
            self.deleted = True
            self.deactivate_locked()
            for path in (self.log_path, self.index_path, self.timeindex_path):
                unlink_if_exists(self.fs, path)
