"""The lock-free half of reading: I/O on a segment pinned by :class:`PartitionLog`.

``PartitionLog`` decides under its lock which segment to read and up to which byte
(the committed end: the high watermark's position in the active segment, the size of an
older one), and pins it (:class:`PinnedSegment`: a referenced file handle). The functions
here then do the file I/O without the lock:

- a fetch: find the batch holding the offset (an exact offset-index hit needs no read),
  find the last whole batch within the byte budget (from the index entry at or below
  ``start + max_bytes``, usually one small read), then one ``pread`` of exactly that
  range: no copy, never half a batch;
- a time lookup: from the time index entry below the timestamp, walk the batch headers
  to the first batch whose max timestamp qualifies, and decode that one batch.

Thread-safety: a pinned segment is used by one reader; an older segment's indexes are
immutable once loaded, and an active segment's index lookups are done by the caller with
the log lock held (``PinnedSegment`` then carries the index objects it read).
"""

from __future__ import annotations

from dataclasses import dataclass

from logd_sdk import codec
from logd.storage.files import FileSystem
from logd.storage.handles import Handle
from logd.storage.index import OffsetIndex, TimeIndex
from logd.storage.segment import Segment, walk_batches


@dataclass
class PinnedSegment:
    """A segment pinned for reading outside the lock: a referenced handle and the end of
    what readers may see in it. ``release()`` it when done."""

    segment: Segment
    handle: Handle
    end: int
    is_active: bool
    offset_index: OffsetIndex | None = None
    time_index: TimeIndex | None = None

    def indexes(self) -> tuple[OffsetIndex, TimeIndex]:
        if self.offset_index is None or self.time_index is None:
            self.offset_index, self.time_index = self.segment.indexes(self.handle.fd)
        return self.offset_index, self.time_index

    def release(self) -> None:
        self.handle.release()


def read_hints(pinned: PinnedSegment, offset: int, max_bytes: int) -> tuple[int, bool, int]:
    """(position to search from, whether a batch starts exactly at ``offset`` there,
    an indexed batch boundary <= position + max_bytes)."""
    offset_index, _ = pinned.indexes()
    relative_offset = offset - pinned.segment.base_offset
    found, hint = offset_index.lookup_entry(relative_offset)
    return hint, found == relative_offset, offset_index.floor_position(hint + max_bytes)


def read_batches(fs: FileSystem, pinned: PinnedSegment, offset: int, max_bytes: int,
                 hints: tuple[int, bool, int], *, at_least_one: bool) -> tuple[bytes, bool]:
    """Whole batches from the one holding ``offset`` within ``max_bytes`` (at least one
    when asked). Returns them and whether the read reached the pinned end."""
    hint, exact, floor = hints
    segment, fd = pinned.segment, pinned.handle.fd
    if exact:
        start = hint  # a batch starts at this offset: no need to look for it
    else:
        batch = segment.find_batch(fd, offset, hint, pinned.end)
        if batch is None:
            return b"", True
        start = batch.position
    end = segment.read_end(fd, start, max_bytes, pinned.end, floor, at_least_one=at_least_one)
    if end <= start:
        return b"", False
    data = fs.pread(fd, end - start, start)
    if len(data) < end - start:
        data = whole_batches(data)  # the segment was truncated meanwhile
    return data, end == pinned.end


def time_hint(pinned: PinnedSegment, timestamp_ms: int, log_start: int) -> int:
    """A batch boundary to scan from: no record before it is both >= ``timestamp_ms``
    and at or after the log start offset."""
    offset_index, time_index = pinned.indexes()
    relative_offset = time_index.lookup_below(timestamp_ms)
    position = 0 if relative_offset is None else offset_index.lookup(relative_offset)
    return max(position, offset_index.lookup(log_start - pinned.segment.base_offset))


def scan_for_timestamp(fs: FileSystem, pinned: PinnedSegment, position: int, timestamp_ms: int,
                       log_start: int, high_watermark: int) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record from ``position`` with timestamp >=
    ``timestamp_ms`` in [log_start, high_watermark), or None."""
    fd = pinned.handle.fd
    for batch in walk_batches(fs, fd, position, pinned.end, verify=False):
        if batch.max_timestamp_ms < timestamp_ms or batch.next_offset <= log_start:
            continue
        data = fs.pread(fd, batch.size, batch.position)
        _, records = codec.decode_batch(data)
        for record in records:
            if record.timestamp_ms >= timestamp_ms and log_start <= record.offset < high_watermark:
                return record.offset, record.timestamp_ms
    return None


def whole_batches(data: bytes) -> bytes:
    """The prefix of ``data`` made of whole batches."""
    end = 0
    while len(data) - end >= codec.LOG_OVERHEAD:
        size = codec.batch_size_at(data, end)
        if size < codec.HEADER_SIZE or end + size > len(data):
            break
        end += size
    return data[:end]
