"""Value types of the group coordinator: what handlers take and return.

Plain, immutable Python values; the server translates them to and from protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    """A partition of a topic. A tuple, so it sorts by (topic, partition) and hashes."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed position: the next offset to read, and a free-form string."""

    offset: int
    metadata: str = ""


# Group states shown by describe (Kafka's ConsumerGroupState names).
EMPTY = "Empty"  # no members (committed offsets may exist)
RECONCILING = "Reconciling"  # some member has not reached its target assignment yet
STABLE = "Stable"  # every member owns exactly its target assignment
DEAD = "Dead"  # the group does not exist


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """The answer to a heartbeat.

    ``member_epoch`` is -1 after a leave and -2 after a static member's temporary leave.
    ``assignment`` is sorted; partitions the member owns and that are missing here must
    be released (then reported as no longer owned on the next heartbeat).
    """

    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: tuple[TopicPartition, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str  # "" for a dynamic member
    assignment: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """``committed_offset`` -1 when nothing is committed; ``log_end_offset`` -1 when
    the partition does not exist; ``lag`` -1 when either is unknown."""

    topic: str
    partition: int
    committed_offset: int
    log_end_offset: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str
    members: tuple[MemberDescription, ...] = ()
    offsets: tuple[PartitionOffsets, ...] = field(default_factory=tuple)
