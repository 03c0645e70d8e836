"""The sparse offset index and the time index of one segment, held in memory.

Both are append-only arrays kept in memory for the active segment and loaded lazily (whole)
for an older one; the files are written at roll, flush and close, never fsynced per
append, and rebuilt from the log when missing or invalid.

``.index`` format: a sequence of 8-byte little-endian entries::

    relative_offset u32   base offset of a batch - the segment's base offset
    position        u32   byte position of that batch in the .log file

one entry for a batch about every ``index_interval_bytes`` of log; both columns strictly
increase.

``.timeindex`` format: a sequence of 12-byte little-endian entries::

    timestamp       i64   the largest batch max_timestamp seen in the segment so far (ms)
    relative_offset u32   base offset of the batch that holds it - the segment's base offset

appended at the same moments as the offset index, only when the timestamp grew, plus a
final entry when the segment rolls; both columns strictly increase. So every record at or
before an entry's batch has a timestamp <= the entry's timestamp.

Thread-safety: not synchronised. The owning segment mutates an index with the log lock
held; readers of an active segment's index hold the log lock; a loaded index of an older
segment is never mutated, so any thread may read it.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

from logd.storage.files import FileSystem

OFFSET_ENTRY_SIZE = 8
TIME_ENTRY_SIZE = 12
_TIME_ENTRY = struct.Struct("<qI")
_BIG_ENDIAN = sys.byteorder == "big"


class InvalidIndexError(ValueError):
    """An index file is malformed (size, ordering, or a value out of range)."""


def _write_tail(fs: FileSystem, path: Path, data: bytes, start: int) -> None:
    """Write ``data[start:]`` at ``start``, cut the file at ``len(data)``, fsync."""
    fd = fs.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        if start < len(data):
            fs.pwrite(fd, memoryview(data)[start:], start)
        fs.ftruncate(fd, len(data))
        fs.fsync(fd)
    finally:
        fs.close(fd)


class OffsetIndex:
    """Sparse map from relative offset to file position (see the module docstring)."""

    def __init__(self) -> None:
        self.relative_offsets = array("I")
        self.positions = array("I")
        self._persisted_entries = 0

    def __len__(self) -> int:
        return len(self.positions)

    def append(self, relative_offset: int, position: int) -> None:
        assert not self.positions or (
            relative_offset > self.relative_offsets[-1] and position > self.positions[-1]
        ), "offset index entries must increase"
        self.relative_offsets.append(relative_offset)
        self.positions.append(position)

    def lookup(self, relative_offset: int) -> int:
        """Position of the last indexed batch whose base offset is <= ``relative_offset``
        (0 if none): a batch boundary at or before the batch holding the offset."""
        i = bisect_right(self.relative_offsets, relative_offset)
        return self.positions[i - 1] if i else 0

    def lookup_entry(self, relative_offset: int) -> tuple[int, int]:
        """The last entry (relative offset, position) with relative offset <=
        ``relative_offset``, or (-1, 0) if none."""
        i = bisect_right(self.relative_offsets, relative_offset)
        return (self.relative_offsets[i - 1], self.positions[i - 1]) if i else (-1, 0)

    def floor_position(self, position: int) -> int:
        """The largest indexed batch position <= ``position`` (0 if none)."""
        i = bisect_right(self.positions, position)
        return self.positions[i - 1] if i else 0

    def truncate_to_position(self, position: int) -> None:
        """Drop the entries of batches at or after ``position``."""
        i = bisect_left(self.positions, position)
        del self.relative_offsets[i:]
        del self.positions[i:]
        self._persisted_entries = min(self._persisted_entries, i)

    def to_bytes(self) -> bytes:
        combined = array("I", bytes(4 * 2 * len(self.positions)))
        combined[0::2] = self.relative_offsets
        combined[1::2] = self.positions
        if _BIG_ENDIAN:
            combined.byteswap()
        return combined.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, log_size: int) -> "OffsetIndex":
        """Parse and check an index file against the size of its log file."""
        if len(data) % OFFSET_ENTRY_SIZE:
            raise InvalidIndexError(f"size {len(data)} is not a multiple of {OFFSET_ENTRY_SIZE}")
        combined = array("I")
        combined.frombytes(data)
        if _BIG_ENDIAN:
            combined.byteswap()
        index = cls()
        index.relative_offsets = combined[0::2]
        index.positions = combined[1::2]
        _check_increasing(index.relative_offsets, "relative offsets")
        _check_increasing(index.positions, "positions")
        if index.positions and index.positions[-1] >= log_size:
            raise InvalidIndexError(f"position {index.positions[-1]} beyond log size {log_size}")
        index._persisted_entries = len(index.positions)
        return index

    def write(self, fs: FileSystem, path: Path) -> None:
        """Persist the entries not yet in the file (and cut any stale tail), then fsync."""
        _write_tail(fs, path, self.to_bytes(), self._persisted_entries * OFFSET_ENTRY_SIZE)
        self._persisted_entries = len(self.positions)


class TimeIndex:
    """Map from the growing max timestamp to the batch holding it (see the module docstring)."""

    def __init__(self) -> None:
        self.timestamps = array("q")
        self.relative_offsets = array("I")
        self._persisted_entries = 0

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def last_timestamp(self) -> int:
        return self.timestamps[-1] if self.timestamps else -1

    def maybe_append(self, timestamp_ms: int, relative_offset: int) -> None:
        """Add an entry if ``timestamp_ms`` exceeds the last one."""
        if self.timestamps and timestamp_ms <= self.timestamps[-1]:
            return
        if self.relative_offsets and relative_offset <= self.relative_offsets[-1]:
            # The same batch already holds an entry; it now carries a larger timestamp
            # (cannot happen for one batch, kept for safety).
            self.timestamps[-1] = timestamp_ms
            return
        self.timestamps.append(timestamp_ms)
        self.relative_offsets.append(relative_offset)

    def lookup_below(self, timestamp_ms: int) -> int | None:
        """Relative offset of the last entry with a timestamp < ``timestamp_ms``, or None.

        Every record at or before that entry's batch is older than ``timestamp_ms``.
        """
        i = bisect_left(self.timestamps, timestamp_ms)
        return self.relative_offsets[i - 1] if i else None

    def truncate_to_relative_offset(self, relative_offset: int) -> None:
        """Drop entries of batches whose base offset is >= ``relative_offset``."""
        i = bisect_left(self.relative_offsets, relative_offset)
        del self.timestamps[i:]
        del self.relative_offsets[i:]
        self._persisted_entries = min(self._persisted_entries, i)

    def to_bytes(self) -> bytes:
        pack = _TIME_ENTRY.pack
        return b"".join(pack(t, r) for t, r in zip(self.timestamps, self.relative_offsets))

    @classmethod
    def from_bytes(cls, data: bytes, next_relative_offset: int) -> "TimeIndex":
        """Parse and check a time index file; offsets must lie below ``next_relative_offset``."""
        if len(data) % TIME_ENTRY_SIZE:
            raise InvalidIndexError(f"size {len(data)} is not a multiple of {TIME_ENTRY_SIZE}")
        index = cls()
        for timestamp_ms, relative_offset in _TIME_ENTRY.iter_unpack(data):
            index.timestamps.append(timestamp_ms)
            index.relative_offsets.append(relative_offset)
        _check_increasing(index.timestamps, "timestamps")
        _check_increasing(index.relative_offsets, "relative offsets")
        if index.relative_offsets and index.relative_offsets[-1] >= next_relative_offset:
            raise InvalidIndexError(
                f"relative offset {index.relative_offsets[-1]} beyond the segment's end {next_relative_offset}"
            )
        index._persisted_entries = len(index.timestamps)
        return index

    def write(self, fs: FileSystem, path: Path) -> None:
        _write_tail(fs, path, self.to_bytes(), self._persisted_entries * TIME_ENTRY_SIZE)
        self._persisted_entries = len(self.timestamps)


def _check_increasing(values: array, what: str) -> None:
    if any(a >= b for a, b in zip(values, values[1:])):
        raise InvalidIndexError(f"{what} do not strictly increase")
