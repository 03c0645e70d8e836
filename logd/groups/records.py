"""The records of ``__consumer_offsets``: byte format of keys and values.

The coordinator's state is a compacted key-value log (Kafka's ``__consumer_offsets``):
the last value of each key wins and a ``None`` value (tombstone) deletes the key. Three
kinds of keys, each a type prefix then length-prefixed UTF-8 strings (``u16`` big-endian
length) so that any group or topic name round-trips and keys compare bytewise::

    b"offset:" str(group) str(topic) i32(partition)   committed offset
    b"group:"  str(group)                              group epoch and topic metadata
    b"member:" str(group) str(member_id)               one member, with its assignments

Values are compact JSON objects with a format version ``"v": 1``::

    offset  {"v":1,"offset":42,"metadata":""}
    group   {"v":1,"epoch":7,"partition_counts":{"orders":3}}
    member  {"v":1,"instance_id":"","topics":["orders"],"session_timeout_ms":10000,
             "epoch":5,"previous_epoch":4,"absent":false,
             "assigned":{"orders":[0,2]},"revoking":{},"target":{"orders":[0,2]}}

Offsets are what must survive a restart; group and member records let members keep
their ids, epochs and partitions across a broker restart without a rebalance.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Iterable

from logd.groups.types import OffsetAndMetadata, TopicPartition

OFFSET_PREFIX = b"offset:"
GROUP_PREFIX = b"group:"
MEMBER_PREFIX = b"member:"
VERSION = 1

_LENGTH = struct.Struct(">H")
_PARTITION = struct.Struct(">i")


class RecordFormatError(ValueError):
    """A key or value of ``__consumer_offsets`` that this version cannot read."""


def _pack_str(text: str) -> bytes:
    data = text.encode()
    return _LENGTH.pack(len(data)) + data


def _unpack_str(buffer: bytes, position: int) -> tuple[str, int]:
    (length,) = _LENGTH.unpack_from(buffer, position)
    start = position + _LENGTH.size
    if start + length > len(buffer):
        raise RecordFormatError("string runs past the end of the key")
    return buffer[start : start + length].decode(), start + length


def offset_key(group_id: str, tp: TopicPartition) -> bytes:
    return OFFSET_PREFIX + _pack_str(group_id) + _pack_str(tp.topic) + _PARTITION.pack(tp.partition)


def group_key(group_id: str) -> bytes:
    return GROUP_PREFIX + _pack_str(group_id)


def member_key(group_id: str, member_id: str) -> bytes:
    return MEMBER_PREFIX + _pack_str(group_id) + _pack_str(member_id)


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _loads(value: bytes) -> dict:
    try:
        obj = json.loads(value)
    except ValueError as exc:
        raise RecordFormatError(f"bad record value: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise RecordFormatError(f"unknown record value version: {value[:40]!r}")
    return obj


def encode_partitions(partitions: Iterable[TopicPartition]) -> dict[str, list[int]]:
    """``{topic: sorted partitions}``: the JSON form of a set of partitions."""
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(partitions):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return by_topic


def decode_partitions(obj: dict[str, list[int]]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(topic, int(p)) for topic, parts in obj.items() for p in parts)


def offset_value(committed: OffsetAndMetadata) -> bytes:
    return _dumps({"v": VERSION, "offset": committed.offset, "metadata": committed.metadata})


def group_value(epoch: int, partition_counts: dict[str, int]) -> bytes:
    return _dumps({"v": VERSION, "epoch": epoch, "partition_counts": partition_counts})


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """The persisted part of a member (session deadlines are not persisted: replay
    gives every member a fresh session)."""

    instance_id: str
    topics: frozenset[str]
    session_timeout_ms: int
    epoch: int
    previous_epoch: int
    absent: bool
    assigned: frozenset[TopicPartition]
    revoking: frozenset[TopicPartition]
    target: frozenset[TopicPartition]

    def encode(self) -> bytes:
        return _dumps({
            "v": VERSION, "instance_id": self.instance_id, "topics": sorted(self.topics),
            "session_timeout_ms": self.session_timeout_ms, "epoch": self.epoch,
            "previous_epoch": self.previous_epoch, "absent": self.absent,
            "assigned": encode_partitions(self.assigned), "revoking": encode_partitions(self.revoking),
            "target": encode_partitions(self.target),
        })

    @classmethod
    def decode(cls, value: bytes) -> "MemberRecord":
        obj = _loads(value)
        try:
            return cls(
                obj["instance_id"], frozenset(obj["topics"]), int(obj["session_timeout_ms"]),
                int(obj["epoch"]), int(obj["previous_epoch"]), bool(obj["absent"]),
                decode_partitions(obj["assigned"]), decode_partitions(obj["revoking"]),
                decode_partitions(obj["target"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordFormatError(f"bad member record: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class DecodedKey:
    """A parsed key: ``kind`` is "offset", "group" or "member"."""

    kind: str
    group_id: str
    tp: TopicPartition | None = None
    member_id: str | None = None


def decode_key(key: bytes) -> DecodedKey:
    try:
        if key.startswith(OFFSET_PREFIX):
            group_id, position = _unpack_str(key, len(OFFSET_PREFIX))
            topic, position = _unpack_str(key, position)
            (partition,) = _PARTITION.unpack_from(key, position)
            if position + _PARTITION.size != len(key):
                raise RecordFormatError("trailing bytes in offset key")
            return DecodedKey("offset", group_id, tp=TopicPartition(topic, partition))
        if key.startswith(GROUP_PREFIX):
            group_id, position = _unpack_str(key, len(GROUP_PREFIX))
            if position != len(key):
                raise RecordFormatError("trailing bytes in group key")
            return DecodedKey("group", group_id)
        if key.startswith(MEMBER_PREFIX):
            group_id, position = _unpack_str(key, len(MEMBER_PREFIX))
            member_id, position = _unpack_str(key, position)
            if position != len(key):
                raise RecordFormatError("trailing bytes in member key")
            return DecodedKey("member", group_id, member_id=member_id)
    except (struct.error, UnicodeDecodeError) as exc:
        raise RecordFormatError(f"bad key {key[:40]!r}: {exc}") from None
    raise RecordFormatError(f"unknown key type {key[:40]!r}")


def decode_offset_value(value: bytes) -> OffsetAndMetadata:
    obj = _loads(value)
    try:
        return OffsetAndMetadata(int(obj["offset"]), str(obj.get("metadata", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordFormatError(f"bad offset record: {exc!r}") from None


def decode_group_value(value: bytes) -> tuple[int, dict[str, int]]:
    obj = _loads(value)
    try:
        return int(obj["epoch"]), {str(t): int(n) for t, n in obj["partition_counts"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RecordFormatError(f"bad group record: {exc!r}") from None
