"""The append observer: what a log tells the one object that watches its appends, and the
header-only walk of a segment file that rebuilds such an object's state at start-up.

``PartitionLog.attach_observer`` lets one object (the broker's producer state,
``logd.broker.producer_state``) check every append under the log's lock, in the same
lock hold as the write, and answer a duplicate with its earlier offsets instead of
writing; it also hears of truncations and persisted recovery points.
``PartitionLog.batch_headers`` walks the batch headers only (never the records, with
:func:`walk_headers`), to rebuild such state at start-up.
"""

from __future__ import annotations

from typing import Collection, Iterator, Protocol, Sequence

from logd_sdk import codec
from logd.storage.config import AppendInfo
from logd.storage.files import FileSystem
from logd.storage.segment import BatchPosition

#: Bytes read at a time by a walk of the headers of small batches.
_HEADER_WALK_CHUNK = 64 * 1024


class AppendObserver(Protocol):
    """Sees a log's appends (the broker's producer state, ``logd.broker.producer_state``).

    Every method is called with the log's lock held and must not call the log back.
    ``check_append_locked`` (pure: it may run twice for one append) runs in the same lock
    hold as the write it guards, so what it lets through is written before another
    append is checked.
    """

    def replay_locked(self, header: codec.BatchHeader) -> None:
        """A batch already in the log (the catch-up of ``attach_observer``)."""

    def check_append_locked(self, data: bytes | bytearray | memoryview,
                            batches: Sequence[BatchPosition]) -> AppendInfo | None:
        """Before a write: None to write; an AppendInfo to answer instead of writing (the
        batches duplicate earlier ones); raise to refuse the whole call."""

    def appended_locked(self, data: bytes | bytearray | memoryview, batches: Sequence[BatchPosition],
                        now_ms: int) -> None:
        """After a write; ``batches`` carry their assigned offsets."""

    def truncated_locked(self, log_end_offset: int) -> None:
        """The log was cut: it ends at ``log_end_offset`` now."""

    def checkpointed_locked(self, recovery_offset: int) -> None:
        """The recovery point was persisted: every batch below ``recovery_offset`` is durable."""

    def batches_to_keep_locked(self) -> Collection[int]:
        """Base offsets of batches that compaction must not drop, if emptied (each
        producer's newest: a rebuild of this state from the batch headers needs its
        sequences)."""


def walk_headers(fs: FileSystem, fd: int, start: int, end: int) -> Iterator[codec.BatchHeader]:
    """The headers of the whole batches in ``[start, end)`` of a segment file (``start`` a
    batch boundary), reading only headers: a chunk at a time among small batches, one
    header at a time among large ones. No CRC check: the caller trusts the range."""
    buffer, buffer_start, position, chunk_bytes = b"", start, start, _HEADER_WALK_CHUNK
    while end - position >= codec.HEADER_SIZE:
        relative = position - buffer_start
        if len(buffer) - relative < codec.HEADER_SIZE:
            buffer, buffer_start, relative = fs.pread(fd, min(chunk_bytes, end - position), position), position, 0
            if len(buffer) < codec.HEADER_SIZE:
                return
        header = codec.read_header(buffer, relative)
        if header.size < codec.HEADER_SIZE or header.size > end - position:
            return
        yield header
        position += header.size
        chunk_bytes = _HEADER_WALK_CHUNK if header.size < _HEADER_WALK_CHUNK else codec.HEADER_SIZE


__all__ = ["AppendObserver", "walk_headers"]
