"""Helpers shared by the storage tests: batch builders and a reader of whole logs."""

from __future__ import annotations

from logd_sdk import codec
from logd.storage import PartitionLog

TINY = dict(segment_bytes=1024, index_interval_bytes=128)


def make_batch(first: int, count: int = 2, *, timestamp_ms: int = 1_000, size: int = 10,
               codec_id: int = codec.CODEC_NONE) -> bytes:
    """A batch of ``count`` records whose values name their intended offset (first + i)."""
    records = [
        (timestamp_ms + i, b"k%d" % (first + i), (b"v%d-" % (first + i)).ljust(size, b"."), None)
        for i in range(count)
    ]
    return codec.encode_batch(records, codec=codec_id)


def records_of(data: bytes) -> list[codec.DecodedRecord]:
    out = []
    for position, _ in codec.iter_batches(data):
        out.extend(codec.decode_batch(data, position)[1])
    return out


def read_all(log: PartitionLog, start: int | None = None, max_bytes: int = 300) -> list[codec.DecodedRecord]:
    """Every visible record from ``start`` (default: log start), read in small fetches."""
    offset = log.log_start_offset if start is None else start
    out: list[codec.DecodedRecord] = []
    while offset < log.high_watermark:
        data = log.read(offset, max_bytes)
        assert data, f"empty read at {offset} below the high watermark {log.high_watermark}"
        for record in records_of(data):
            if record.offset >= offset:
                out.append(record)
        last = codec.read_header(data, list(codec.iter_batches(data))[-1][0])
        offset = last.next_offset
    return out


def values_by_offset(log: PartitionLog) -> dict[int, bytes | None]:
    return {record.offset: record.value for record in read_all(log)}
