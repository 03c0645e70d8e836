"""One consumer group's state: members, target assignment, ownership, offsets.

Reconciliation (incremental and cooperative, after KIP-848). For each member the broker
keeps three sets of partitions:

* ``target``   — what the assignor wants the member to own (recomputed on every group
  epoch bump: a member joins, leaves or is evicted, a subscription or a subscribed
  topic's partition count changes);
* ``assigned`` — what the broker last told the member it may own (the heartbeat answer);
* ``revoking`` — partitions taken out of ``assigned`` that the member has not yet
  reported as released.

A member *owns* ``assigned | revoking`` as far as the broker knows, and the ``owners``
index maps each such partition to its single owner. Reconciling a member on a heartbeat
that carries its current epoch:

1. partitions of ``revoking`` missing from the reported ``owned_partitions`` are
   released (the member has committed and stopped fetching them);
2. partitions of ``assigned`` no longer in the target move to ``revoking``;
3. partitions of the target owned by nobody else are added to ``assigned``.

So a partition moves only after its old owner released it, or left, or was evicted,
and ``owners`` never maps a partition to two members: at no moment do two live members
own a partition. Members keep every partition that does not move. Each change of
``assigned`` bumps the member epoch, so a release report can be trusted only when it
carries the current epoch (it was sent after the member saw its latest assignment).

A static member that leaves with epoch -2 is *absent*: it keeps ``assigned`` (nothing
moves while it restarts) but has nothing to revoke; partitions the target takes from it
are released at once, since no process holds them.

Not thread-safe: owned by :class:`~logd.groups.manager.GroupMetadataManager`.
"""

from __future__ import annotations

from dataclasses import dataclass

from logd.groups import assignor
from logd.groups.records import MemberRecord, group_key, group_value, member_key
from logd.groups.types import EMPTY, RECONCILING, STABLE, OffsetAndMetadata, TopicPartition

_NONE: frozenset[TopicPartition] = frozenset()


@dataclass(slots=True, eq=False)
class ConsumerGroupMember:
    """A member as the broker sees it. ``deadline_ms`` (session expiry) is not persisted."""

    member_id: str
    instance_id: str  # "" for a dynamic member
    topics: frozenset[str]
    session_timeout_ms: int
    epoch: int = 0
    previous_epoch: int = 0
    absent: bool = False  # a static member that left with epoch -2 and may come back
    assigned: frozenset[TopicPartition] = _NONE
    revoking: frozenset[TopicPartition] = _NONE
    deadline_ms: int = 0

    def bump_epoch(self) -> None:
        self.previous_epoch = self.epoch
        self.epoch += 1


class ConsumerGroup:
    """A group: its epoch, members, target assignment, ownership index and offsets."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.epoch = 0
        # Partition counts of the subscribed topics when the target was computed: a
        # heartbeat that sees other counts bumps the epoch (new partitions, new topics).
        self.partition_counts: dict[str, int] = {}
        self.members: dict[str, ConsumerGroupMember] = {}
        self.target: dict[str, frozenset[TopicPartition]] = {}
        self.owners: dict[TopicPartition, str] = {}
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}

    # -- membership -------------------------------------------------------------------

    def subscribed_topics(self) -> set[str]:
        topics: set[str] = set()
        for member in self.members.values():
            topics |= member.topics
        return topics

    def member_with_instance(self, instance_id: str) -> ConsumerGroupMember | None:
        for member in self.members.values():
            if member.instance_id == instance_id:
                return member
        return None

    def add_member(self, member: ConsumerGroupMember) -> None:
        assert member.member_id not in self.members
        self.members[member.member_id] = member
        self.target.setdefault(member.member_id, _NONE)

    def remove_member(self, member_id: str) -> None:
        """Drop a member; everything it owned is free at once (it left or is dead)."""
        member = self.members.pop(member_id)
        self.set_ownership(member, _NONE, _NONE)
        self.target.pop(member_id, None)

    def rename_member(self, member: ConsumerGroupMember, new_member_id: str) -> None:
        """Give a static member's place to its new incarnation (same instance id)."""
        assert new_member_id not in self.members
        old_member_id = member.member_id
        del self.members[old_member_id]
        member.member_id = new_member_id
        self.members[new_member_id] = member
        self.target[new_member_id] = self.target.pop(old_member_id, _NONE)
        for tp in member.assigned | member.revoking:
            self.owners[tp] = new_member_id

    # -- assignment -------------------------------------------------------------------

    def refresh_target(self, partition_counts: dict[str, int]) -> None:
        """Bump the group epoch and recompute the target with the sticky assignor."""
        self.epoch += 1
        self.partition_counts = dict(partition_counts)
        subscriptions = {member_id: member.topics for member_id, member in self.members.items()}
        self.target = assignor.assign(self.target, subscriptions, partition_counts)
        for member in self.members.values():
            if member.absent:
                self.set_ownership(member, member.assigned & self.target[member.member_id], _NONE)

    def set_ownership(
        self, member: ConsumerGroupMember, assigned: frozenset[TopicPartition], revoking: frozenset[TopicPartition]
    ) -> None:
        """Replace a member's ``assigned`` and ``revoking`` and keep ``owners`` in step."""
        member_id = member.member_id
        for tp in (member.assigned | member.revoking) - (assigned | revoking):
            del self.owners[tp]
        for tp in assigned | revoking:
            owner = self.owners.setdefault(tp, member_id)
            assert owner == member_id, f"{tp} owned by {owner} and {member_id}"
        member.assigned = assigned
        member.revoking = revoking

    def reconcile(self, member: ConsumerGroupMember, owned: frozenset[TopicPartition] | None) -> bool:
        """Move ``member`` towards its target (see the module docstring).

        ``owned`` is the member's report, or None when it cannot be trusted (a join, or
        a heartbeat with the previous epoch). Returns True when ``assigned`` changed;
        the member epoch was then bumped.
        """
        revoking = member.revoking if owned is None else member.revoking & owned
        target = self.target.get(member.member_id, _NONE)
        member_id = member.member_id
        grants = frozenset(tp for tp in target - member.assigned if self.owners.get(tp, member_id) == member_id)
        assigned = (member.assigned & target) | grants
        revoking = (revoking | (member.assigned - target)) - assigned
        changed = assigned != member.assigned
        self.set_ownership(member, assigned, revoking)
        if changed:
            member.bump_epoch()
        return changed

    def is_reconciling(self, member: ConsumerGroupMember) -> bool:
        return bool(member.revoking) or member.assigned != self.target.get(member.member_id, _NONE)

    def state(self) -> str:
        if not self.members:
            return EMPTY
        if any(self.is_reconciling(m) for m in self.members.values() if not m.absent):
            return RECONCILING
        return STABLE

    # -- persistence ------------------------------------------------------------------

    def metadata_state(self) -> dict[bytes, tuple]:
        """``{key: comparable state}`` of the group and member records (cheap to
        compare; :func:`encode_metadata` turns a state into the record value)."""
        states: dict[bytes, tuple] = {
            group_key(self.group_id): ("group", self.epoch, tuple(sorted(self.partition_counts.items()))),
        }
        for member in self.members.values():
            states[member_key(self.group_id, member.member_id)] = (
                "member", member.instance_id, member.topics, member.session_timeout_ms, member.epoch,
                member.previous_epoch, member.absent, member.assigned, member.revoking,
                self.target.get(member.member_id, _NONE),
            )
        return states

    def restore_member(self, member_id: str, record: MemberRecord, now_ms: int) -> None:
        """Recreate a member from its record (replay); ``owners`` is rebuilt by the caller."""
        member = ConsumerGroupMember(
            member_id, record.instance_id, record.topics, record.session_timeout_ms, record.epoch,
            record.previous_epoch, record.absent, record.assigned, record.revoking,
            deadline_ms=now_ms + record.session_timeout_ms,
        )
        self.members[member_id] = member
        self.target[member_id] = record.target

    def rebuild_owners(self) -> None:
        """Recompute ``owners`` after replay; a partition claimed twice (not produced by
        a correct coordinator) stays with the first member in id order."""
        self.owners = {}
        for member_id in sorted(self.members):
            member = self.members[member_id]
            member.assigned = frozenset(tp for tp in member.assigned if tp not in self.owners)
            member.revoking = frozenset(tp for tp in member.revoking - member.assigned if tp not in self.owners)
            for tp in member.assigned | member.revoking:
                self.owners[tp] = member_id


def encode_metadata(state: tuple) -> bytes:
    """The record value for a state returned by :meth:`ConsumerGroup.metadata_state`."""
    if state[0] == "group":
        return group_value(state[1], dict(state[2]))
    return MemberRecord(*state[1:]).encode()
