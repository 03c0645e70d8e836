"""Checking a producer's concatenated batches before they are appended to a log.

``parse_batches`` is the storage engine's own check of what it is asked to write: every
batch framed within the buffer, passing ``codec.validate`` (header fields, length, CRC)
and holding a dense, non-empty run of offsets. It reads headers only, never the records;
a caller that must look inside (the broker: ``logd.broker.broker.check_records``) passes
a ``check_batch`` that is run on each batch once its CRC has passed, so that each batch's
CRC is computed once per append. It runs before the log's lock is taken, so the work of
one append does not hold up another.
"""

from __future__ import annotations

from typing import Callable

from logd_sdk import codec
from logd.storage.segment import BatchPosition

#: ``check_batch(buffer, position, header)``: a further check of the batch at ``position``
#: of ``buffer`` (CRC and header already checked); raises ``codec.CorruptBatchError``.
BatchCheck = Callable[[memoryview, int, codec.BatchHeader], None]


def parse_batches(batches: bytes | bytearray | memoryview, check_batch: BatchCheck | None = None) -> list[BatchPosition]:
    """Validate a producer's concatenated batches; positions are relative to the buffer.

    Each batch must pass ``codec.validate`` and hold a dense, non-empty run of offsets
    (``last_offset_delta == records_count - 1``); then ``check_batch``, if given, runs on
    it. Raises ``codec.CorruptBatchError`` (or whatever ``check_batch`` raises).
    """
    view = memoryview(batches)
    end = len(view)
    if end == 0:
        raise codec.CorruptBatchError("no batch to append")
    parsed = []
    position = 0
    while position < end:
        if end - position < codec.HEADER_SIZE:
            raise codec.CorruptBatchError(f"{end - position} trailing bytes after the last batch")
        header = codec.validate(view, position)
        if header.records_count < 1 or header.last_offset_delta != header.records_count - 1:
            raise codec.CorruptBatchError(
                f"batch at byte {position}: {header.records_count} records but last offset delta "
                f"{header.last_offset_delta}")
        if check_batch is not None:
            check_batch(view, position, header)
        size = header.batch_length + codec.LOG_OVERHEAD
        parsed.append(BatchPosition(position, size, header.base_offset, header.next_offset, header.max_timestamp))
        position += size
    return parsed


__all__ = ["BatchCheck", "parse_batches"]
