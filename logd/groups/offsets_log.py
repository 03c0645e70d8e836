"""Where the coordinator's records live: the ``OffsetsLog`` seam and two implementations.

:class:`OffsetsLog` is the whole contract between the coordinator and storage:
``append`` returns once the records are durable (by the partition's flush policy) and
``read_all`` yields every record still in the log, oldest first. A log may also offer
the pipelined pair ``append_unflushed(records) -> token`` / ``wait_durable(token)``
(:class:`PipelinedOffsetsLog`): the coordinator then writes under its lock but waits for
the fsync outside it, so concurrent commits share one fsync (group commit).

:class:`PartitionOffsetsLog` stores them in one partition of the internal topic
``__consumer_offsets`` (``cleanup.policy=compact``: the broker's cleaner keeps the last
value of each key). Each call to ``append`` writes one or more record batches
(:mod:`logd_sdk.codec`, uncompressed: the records are small) in a single
``PartitionLog.append`` call; keys and values are the bytes of
:mod:`logd.groups.records`. :class:`MemoryOffsetsLog` keeps them in a list, for tests
and for a broker without a data directory.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Protocol, Sequence

from logd_sdk import codec

OFFSETS_TOPIC = "__consumer_offsets"
MAX_RECORDS_PER_BATCH = 500
READ_CHUNK_BYTES = 1 << 20

Record = tuple[bytes, bytes | None]


class OffsetsLog(Protocol):
    """Durable, ordered storage for ``(key, value)`` records (value None: tombstone)."""

    def append(self, records: Sequence[Record]) -> None:
        """Append ``records`` in order; return once they are durable, raise otherwise."""

    def read_all(self) -> Iterator[Record]:
        """Yield every record in the log, oldest first (compaction may have dropped
        records superseded by a later value of the same key)."""


class PipelinedOffsetsLog(OffsetsLog, Protocol):
    """An :class:`OffsetsLog` whose appends can be made durable later, in a group."""

    def append_unflushed(self, records: Sequence[Record]) -> int:
        """Append in order, return at once; the token is for :meth:`wait_durable`."""

    def wait_durable(self, token: int) -> None:
        """Return once every record appended up to ``token`` is durable, raise otherwise."""


class MemoryOffsetsLog:
    """An :class:`OffsetsLog` in a list (not durable). ``records`` is public for tests."""

    def __init__(self, records: Sequence[Record] = ()) -> None:
        self.records: list[Record] = list(records)

    def append(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    def read_all(self) -> Iterator[Record]:
        return iter(list(self.records))


class PartitionLogLike(Protocol):
    """The part of ``logd.storage``'s ``PartitionLog`` this module uses."""

    @property
    def log_start_offset(self) -> int: ...

    @property
    def high_watermark(self) -> int: ...

    def append(self, batches: bytes): ...

    # Optional, used when present: append_unflushed(batches) -> AppendInfo and
    # wait_durable(offset), the group-commit pair of logd.storage.PartitionLog.

    def read(self, offset: int, max_bytes: int) -> bytes: ...


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PartitionOffsetsLog:
    """A :class:`PipelinedOffsetsLog` on a ``PartitionLog`` (a partition of ``__consumer_offsets``).

    Durability follows the partition's flush policy: ``append`` returns when the
    ``PartitionLog.append`` does; ``wait_durable`` waits for the group-commit fsync
    except under the ``never`` policy. Thread safety: no state of its own; ``append*``
    are called under the coordinator's lock, ``wait_durable`` and ``read_all`` anywhere.
    ``clock_ms`` stamps the batches (wall clock: record timestamps are informational).
    """

    def __init__(self, partition_log: PartitionLogLike, *, clock_ms: Callable[[], int] = _wall_clock_ms) -> None:
        self._log = partition_log
        self._clock_ms = clock_ms

    def append(self, records: Sequence[Record]) -> None:
        if records:
            self._log.append(self._encode(records))

    def append_unflushed(self, records: Sequence[Record]) -> int:
        if not records:
            return 0
        if not hasattr(self._log, "append_unflushed"):
            self._log.append(self._encode(records))  # a log without the pair: durable at once
            return 0
        return self._log.append_unflushed(self._encode(records)).last_offset + 1

    def wait_durable(self, token: int) -> None:
        config = getattr(self._log, "config", None)
        if token and hasattr(self._log, "wait_durable") and getattr(config, "flush_policy", "group") != "never":
            self._log.wait_durable(token)

    def _encode(self, records: Sequence[Record]) -> bytes:
        now_ms = self._clock_ms()
        return b"".join(
            codec.encode_batch(
                [(now_ms, key, value, None) for key, value in records[start : start + MAX_RECORDS_PER_BATCH]],
                codec=codec.CODEC_NONE,
            )
            for start in range(0, len(records), MAX_RECORDS_PER_BATCH)
        )

    def read_all(self) -> Iterator[Record]:
        offset = self._log.log_start_offset
        end = self._log.high_watermark
        max_bytes = READ_CHUNK_BYTES
        while offset < end:
            data = self._log.read(offset, max_bytes)
            next_offset = offset
            for position, header in codec.iter_batches(data):
                if header.next_offset <= offset:
                    continue
                _, decoded = codec.decode_batch(data, position)
                for record in decoded:
                    if record.offset >= offset:
                        assert record.key is not None, "a __consumer_offsets record without a key"
                        yield record.key, record.value
                next_offset = header.next_offset
            if next_offset == offset:
                if not data:
                    return  # nothing more to read below the high watermark
                if max_bytes >= codec.MAX_BATCH_BYTES:
                    raise codec.CorruptBatchError(f"no whole batch at offset {offset} of {OFFSETS_TOPIC}")
                max_bytes *= 2  # one batch larger than the chunk: read more
                continue
            offset = next_offset
