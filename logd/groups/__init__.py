"""The group coordinator: consumer-group membership, assignment and committed offsets.

A deterministic state machine in the style of Kafka's ``group-coordinator`` module and
its next-generation protocol (KIP-848): the broker computes assignments; members
heartbeat with their subscription and the partitions they own, and get back their
member epoch and the partitions they may own now.

Modules, one job each::

    types.py        TopicPartition, OffsetAndMetadata, results of the handlers
    errors.py       the domain errors (FencedMemberError, UnknownMemberError, ...)
    assignor.py     the sticky balanced assignor: a pure function
    group.py        one group: members, target assignment, ownership, reconciliation
    records.py      key/value format of the __consumer_offsets records
    manager.py      GroupMetadataManager: handlers returning (records, response);
                    replay(records) rebuilds the state; the clock is an argument
    offsets_log.py  the OffsetsLog seam (append durably, read_all) and its
                    implementations over a PartitionLog and in memory
    coordinator.py  GroupCoordinator: lock + clock + OffsetsLog around the manager

The invariants (tests/groups checks each):

* a partition of a subscribed topic is owned by at most one member at any moment,
  and once the group is stable by exactly one;
* a partition changes owner only after its old owner released it (reported it as no
  longer owned), left, or was evicted; partitions that need not move do not move;
* commits are accepted only from the current owner of each partition, with a current
  member epoch (or from a manual-assignment consumer while the group has no members);
* the state after ``replay(every record returned so far)`` equals the live state.

The flow of a rebalance (member C joins a group where A and B own 4 partitions):
C's join bumps the group epoch; the assignor moves one partition from A (or B) to C in
the target; C's answer lists only free partitions (none); A's next heartbeat answer
drops the partition (A's epoch moves on); A commits, stops fetching it and reports it
released on its following heartbeat (sent sooner: the interval is short while a member
reconciles); C's next heartbeat answer includes it. B never stops.

Threading and locks: only :class:`GroupCoordinator` is thread-safe (one lock); it is
taken before any broker or storage lock, never the other way round.
"""

from logd.groups.assignor import assign
from logd.groups.coordinator import GroupCoordinator
from logd.groups.errors import (
    CoordinatorNotAvailableError,
    FencedMemberError,
    GroupError,
    GroupNotEmptyError,
    GroupNotFoundError,
    InvalidGroupRequestError,
    UnknownMemberError,
)
from logd.groups.manager import GroupMetadataManager
from logd.groups.offsets_log import (
    OFFSETS_TOPIC,
    MemoryOffsetsLog,
    OffsetsLog,
    PartitionOffsetsLog,
    PipelinedOffsetsLog,
)
from logd.groups.types import (
    GroupDescription,
    HeartbeatResult,
    MemberDescription,
    OffsetAndMetadata,
    PartitionOffsets,
    TopicPartition,
)

__all__ = [
    "OFFSETS_TOPIC",
    "CoordinatorNotAvailableError",
    "FencedMemberError",
    "GroupCoordinator",
    "GroupDescription",
    "GroupError",
    "GroupMetadataManager",
    "GroupNotEmptyError",
    "GroupNotFoundError",
    "HeartbeatResult",
    "InvalidGroupRequestError",
    "MemberDescription",
    "MemoryOffsetsLog",
    "OffsetAndMetadata",
    "OffsetsLog",
    "PartitionOffsets",
    "PartitionOffsetsLog",
    "PipelinedOffsetsLog",
    "TopicPartition",
    "UnknownMemberError",
    "assign",
]
