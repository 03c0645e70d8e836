"""The result shapes of the contract: frozen dataclasses with Kafka's names.

All are immutable and safe to share between threads. ``Record`` objects are built in the
consumer's hot loop through :data:`_RecordBuilder`, a mutable twin with the same slots whose
instances are re-classed to ``Record`` (a frozen dataclass's ``__init__`` costs ~1 µs, the
twin ~0.25 µs; the result is an ordinary ``Record``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    """A partition of a topic; hashable and ordered by (topic, partition)."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record was written. ``offset`` is -1 with ``acks=0``."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record. ``value`` None is a tombstone; ``headers`` keep send order
    (read them, do not change them: copy with ``list(record.headers)`` to edit)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


@dataclass(slots=True)
class _RecordBuilder:
    """Mutable twin of :class:`Record` (same slots, same order) for fast construction."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


class _NoHeaders(list):
    """The ``headers`` of every consumed record that has none: one shared, read-only empty
    list (a ``Record`` is immutable; mutating it raises TypeError). A fresh ``[]`` per
    record doubled the objects the garbage collector tracks for a poll's records, and its
    young passes over the records a poll has just built were about a fifth of consuming
    (1M records: 0.17 s of GC in 0.89 s; 0.12 s with the shared list). Copies and
    pickles are plain empty lists."""

    __slots__ = ()

    def __new__(cls, *args: object) -> list:  # type: ignore[misc]
        # Whatever builds "another one of these" (dataclasses.asdict, copies) gets a list.
        return list(*args)  # type: ignore[call-overload]

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("a consumed record's headers are read-only")

    append = extend = insert = pop = remove = clear = sort = reverse = _read_only  # type: ignore[assignment]
    __init__ = __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return list, ()


#: See :class:`_NoHeaders` (made without its ``__new__``, which makes plain lists).
NO_HEADERS: list[tuple[str, bytes | None]] = list.__new__(_NoHeaders)


def make_record(topic: str, partition: int, offset: int, timestamp_ms: int, key: bytes | None,
                value: bytes | None, headers: list[tuple[str, bytes | None]]) -> Record:
    """Build a :class:`Record` without the frozen ``__init__`` (see the module docstring)."""
    record = _RecordBuilder(topic, partition, offset, timestamp_ms, key, value, headers)
    record.__class__ = Record
    return record  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition of a topic: readable offsets [log_start_offset, log_end_offset)."""

    partition: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic, its partitions by number and every config (defaults included)."""

    name: str
    partitions: list[PartitionInfo]
    config: dict[str, str]


@dataclass(frozen=True, slots=True)
class MemberDescription:
    """A live member of a consumer group and the partitions it owns."""

    member_id: str
    group_instance_id: str | None
    assignment: list[TopicPartition]


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """A group's committed offset on a partition (None if none), the end offset and the lag
    (``log_end_offset - committed_offset``; -1 when there is no committed offset)."""

    committed_offset: int | None
    log_end_offset: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A consumer group: state (Empty, Stable, Reconciling, Dead), members and offsets."""

    group_id: str
    state: str
    members: list[MemberDescription]
    offsets: dict[TopicPartition, PartitionOffsets]
