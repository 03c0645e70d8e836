"""The group coordinator's state machine: request handlers over every group.

Kafka's ``GroupMetadataManager`` shape: each mutating handler updates the in-memory
state and returns ``(records, response)``, where ``records`` are the ``(key, value)``
pairs to append to ``__consumer_offsets`` before the response is sent (value ``None`` =
tombstone; formats in :mod:`logd.groups.records`); :meth:`replay` rebuilds the same
state from those records at start-up. No I/O, no threads, no clock: the time ``now_ms``
(a monotonic clock in ms) is an argument of every handler that needs it.

How records are produced: offset commits, resets and deletes queue their records
directly; group and member records are *diffed*: handlers mark a group dirty and
:meth:`take_records` emits a record for each group/member whose persisted state changed
since it was last emitted (and a tombstone for each that disappeared). So every change
reaches the log without each code path having to remember to write it. Records of a
handler that then raised (a lazy eviction before a fencing error, say) stay queued and
go out with the next :meth:`take_records`.

Membership, epochs and fencing (the wire protocol is ``proto/logd/v1/groups.proto``):

* ``member_epoch`` 0 joins. With an empty ``member_id`` the broker picks a UUID; an
  unknown non-empty id is accepted as the client's choice (KIP-1082); a known id (or a
  known ``group_instance_id``) rejoins: the member says it owns nothing, gets back at
  once what it still owns in the broker's view and its epoch moves on, which fences any
  request of its previous life. A static member rejoining under a new member id
  replaces the old one (the old id becomes unknown) and keeps its partitions.
* ``member_epoch`` -1 leaves (idempotent: an unknown member is no error); -2 is a
  static member's temporary leave: it keeps its partitions until its session times out
  (a dynamic member's -2 is a plain leave).
* any other epoch must be the member's current epoch (full reconciliation) or the
  previous one (our last answer was lost: the same answer again, the report of owned
  partitions ignored). Anything else is :class:`FencedMemberError`; an unknown member id
  is :class:`UnknownMemberError`. A fenced request changes nothing.
* a member silent for ``session_timeout_ms`` is evicted by :meth:`expire` (called
  periodically by the server) or lazily by the next request touching its group.

Commits: a member's commit must carry its current or previous epoch (a commit racing a
heartbeat answer is not a zombie) and every partition must be owned by the member in
the broker's view (``assigned | revoking``, so the final commit of a partition being
revoked is accepted). A member id "" with epoch -1 is a consumer that assigned its
partitions itself: accepted only while the group has no members (Kafka's simple
consumer). Members include absent static members: they still hold partitions.

Heartbeat interval: :data:`HEARTBEAT_INTERVAL_MS` while the member owns exactly its
target, :data:`RECONCILING_HEARTBEAT_INTERVAL_MS` while it has partitions to release or
to receive, both capped at a third of the session timeout.

Not thread-safe: :class:`logd.groups.coordinator.GroupCoordinator` wraps it in a lock.
"""

from __future__ import annotations

import uuid
from typing import Callable, Iterable, Mapping

from logd.groups.errors import (
    FencedMemberError,
    GroupNotEmptyError,
    GroupNotFoundError,
    InvalidGroupRequestError,
    UnknownMemberError,
    UnknownPartitionError,
    UnknownTopicError,
)
from logd.groups.group import ConsumerGroup, ConsumerGroupMember, encode_metadata
from logd.groups.records import (
    MemberRecord,
    RecordFormatError,
    decode_group_value,
    decode_key,
    decode_offset_value,
    offset_key,
    offset_value,
)
from logd.groups.types import (
    DEAD,
    GroupDescription,
    HeartbeatResult,
    MemberDescription,
    OffsetAndMetadata,
    PartitionOffsets,
    TopicPartition,
)

Records = list[tuple[bytes, bytes | None]]

JOIN_EPOCH = 0
LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2
MANUAL_COMMIT_EPOCH = -1

HEARTBEAT_INTERVAL_MS = 500
RECONCILING_HEARTBEAT_INTERVAL_MS = 50
DEFAULT_SESSION_TIMEOUT_MS = 10_000
MAX_SESSION_TIMEOUT_MS = 30 * 60 * 1000
MAX_ID_LENGTH = 255
MAX_METADATA_LENGTH = 4096  # Kafka's offset.metadata.max.bytes


def new_member_id() -> str:
    return str(uuid.uuid4())


class GroupMetadataManager:
    """All groups of the broker (see the module docstring).

    ``partition_count(topic)`` returns a topic's partition count, 0 when it does not
    exist; it is read on heartbeats to notice new partitions and topics.
    """

    def __init__(
        self,
        partition_count: Callable[[str], int],
        *,
        member_id_factory: Callable[[], str] = new_member_id,
    ) -> None:
        self._partition_count = partition_count
        self._new_member_id = member_id_factory
        self._groups: dict[str, ConsumerGroup] = {}
        self._pending: Records = []
        self._dirty: set[str] = set()
        # group id -> {key: (state, value)} of the group/member records last emitted.
        self._written: dict[str, dict[bytes, tuple[tuple, bytes]]] = {}

    # -- heartbeat --------------------------------------------------------------------

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        *,
        now_ms: int,
        instance_id: str = "",
        subscribed_topics: Iterable[str] = (),
        owned_partitions: Iterable[TopicPartition] = (),
        session_timeout_ms: int = 0,
    ) -> tuple[Records, HeartbeatResult]:
        """Join, leave, or report liveness and owned partitions; returns the assignment."""
        _check_id("group_id", group_id, allow_empty=False)
        _check_id("member_id", member_id)
        _check_id("group_instance_id", instance_id)
        if member_epoch < STATIC_LEAVE_EPOCH:
            raise InvalidGroupRequestError(f"member_epoch {member_epoch} is invalid (>= -2)")
        if session_timeout_ms < 0:
            raise InvalidGroupRequestError(f"session_timeout_ms {session_timeout_ms} is negative")
        session_timeout_ms = min(session_timeout_ms or DEFAULT_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS)
        group = self._groups.get(group_id)
        if group is not None:
            self._expire_group(group, now_ms)
        if member_epoch == LEAVE_EPOCH:
            result = self._leave(group, member_id)
        elif member_epoch == STATIC_LEAVE_EPOCH:
            result = self._static_leave(group, member_id, now_ms)
        elif member_epoch == JOIN_EPOCH:
            result = self._join(group_id, member_id, instance_id, frozenset(subscribed_topics),
                                session_timeout_ms, now_ms)
        else:
            result = self._beat(group, member_id, member_epoch, frozenset(subscribed_topics),
                                frozenset(owned_partitions), session_timeout_ms, now_ms)
        return self.take_records(), result

    def _leave(self, group: ConsumerGroup | None, member_id: str) -> HeartbeatResult:
        if group is not None and member_id in group.members:
            group.remove_member(member_id)
            self._refresh_target(group)
        return HeartbeatResult(member_id, LEAVE_EPOCH, 0)

    def _static_leave(self, group: ConsumerGroup | None, member_id: str, now_ms: int) -> HeartbeatResult:
        member = group.members.get(member_id) if group is not None else None
        if member is None or not member.instance_id:
            return self._leave(group, member_id)  # nothing to keep for a dynamic member
        # The process is going away: what it was revoking is released with it, and so is
        # what it still holds but its target already moved (absent, it would never be
        # told to revoke it: the new owner waited a whole session). The rest stays
        # reserved for its next incarnation until the session ends.
        kept = member.assigned & group.target.get(member_id, frozenset())
        group.set_ownership(member, kept, frozenset())
        member.absent = True
        member.deadline_ms = now_ms + member.session_timeout_ms
        self._dirty.add(group.group_id)
        return HeartbeatResult(member_id, STATIC_LEAVE_EPOCH, 0)

    def _join(self, group_id: str, member_id: str, instance_id: str, topics: frozenset[str],
              session_timeout_ms: int, now_ms: int) -> HeartbeatResult:
        group = self._groups.get(group_id)
        member = group.members.get(member_id) if group is not None and member_id else None
        if member is not None and member.instance_id != instance_id:
            raise InvalidGroupRequestError(
                f"member {member_id} joined with group_instance_id {member.instance_id!r}, not {instance_id!r}")
        if group is None:
            group = self._groups[group_id] = ConsumerGroup(group_id)
        if member is None and instance_id:
            member = group.member_with_instance(instance_id)
            if member is not None:
                group.rename_member(member, member_id or self._fresh_member_id(group))
        needs_target = False
        if member is None:
            member = ConsumerGroupMember(member_id or self._fresh_member_id(group), instance_id, topics,
                                         session_timeout_ms)
            group.add_member(member)
            needs_target = True
        else:
            # A new incarnation owns nothing yet: hand back at once what it still holds.
            target = group.target.get(member.member_id, frozenset())
            group.set_ownership(member, member.assigned & target, frozenset())
            member.absent = False
        needs_target |= self._update_member(group, member, topics, session_timeout_ms, now_ms)
        if needs_target or self._metadata_changed(group):
            self._refresh_target(group)
        if not group.reconcile(member, None):
            member.bump_epoch()  # a join always starts a new epoch, fencing the old life
        self._dirty.add(group_id)
        return self._result(group, member)

    def _fresh_member_id(self, group: ConsumerGroup) -> str:
        member_id = self._new_member_id()
        while member_id in group.members:  # a client-chosen id, or a factory restarted
            member_id = self._new_member_id()
        return member_id

    def _beat(self, group: ConsumerGroup | None, member_id: str, member_epoch: int, topics: frozenset[str],
              owned: frozenset[TopicPartition], session_timeout_ms: int, now_ms: int) -> HeartbeatResult:
        member = self._member(group, member_id)
        if member_epoch == member.epoch:
            trusted = True
        elif member_epoch == member.previous_epoch:
            trusted = False  # our last answer was lost; the member has not seen it
        else:
            raise FencedMemberError(
                f"member {member_id} of group {group.group_id} sent epoch {member_epoch}, "
                f"current is {member.epoch}: rejoin with epoch 0")
        needs_target = self._update_member(group, member, topics, session_timeout_ms, now_ms)
        if needs_target or self._metadata_changed(group):
            self._refresh_target(group)
        if trusted:
            group.reconcile(member, owned)
        self._dirty.add(group.group_id)
        return self._result(group, member)

    def _member(self, group: ConsumerGroup | None, member_id: str) -> ConsumerGroupMember:
        """The live member ``member_id``, or the fencing error a request from it deserves."""
        member = group.members.get(member_id) if group is not None and member_id else None
        if member is None:
            where = f"group {group.group_id}" if group is not None else "the group"
            raise UnknownMemberError(f"member {member_id!r} is not in {where} (evicted or left): rejoin")
        if member.absent:
            raise FencedMemberError(f"static member {member_id} left the group: rejoin with epoch 0")
        return member

    def _update_member(self, group: ConsumerGroup, member: ConsumerGroupMember, topics: frozenset[str],
                       session_timeout_ms: int, now_ms: int) -> bool:
        """Record a heartbeat's subscription and session; True when the target must change."""
        member.session_timeout_ms = session_timeout_ms
        member.deadline_ms = now_ms + session_timeout_ms
        if member.topics == topics:
            return False
        member.topics = topics
        return True

    def _metadata_changed(self, group: ConsumerGroup) -> bool:
        return self._partition_counts(group) != group.partition_counts

    def _partition_counts(self, group: ConsumerGroup) -> dict[str, int]:
        return {topic: max(0, self._partition_count(topic)) for topic in sorted(group.subscribed_topics())}

    def _refresh_target(self, group: ConsumerGroup) -> None:
        group.refresh_target(self._partition_counts(group))
        self._dirty.add(group.group_id)

    def _result(self, group: ConsumerGroup, member: ConsumerGroupMember) -> HeartbeatResult:
        interval_ms = RECONCILING_HEARTBEAT_INTERVAL_MS if group.is_reconciling(member) else HEARTBEAT_INTERVAL_MS
        interval_ms = max(1, min(interval_ms, member.session_timeout_ms // 3))
        return HeartbeatResult(member.member_id, member.epoch, interval_ms, tuple(sorted(member.assigned)))

    # -- expiry -----------------------------------------------------------------------

    def expire(self, now_ms: int) -> Records:
        """Evict every member whose session ended at or before ``now_ms``; returns the
        records (including any still queued, see :meth:`take_records`)."""
        for group in list(self._groups.values()):
            self._expire_group(group, now_ms)
        return self.take_records()

    def _expire_group(self, group: ConsumerGroup, now_ms: int) -> None:
        expired = [m.member_id for m in group.members.values() if m.deadline_ms <= now_ms]
        if not expired:
            return
        for member_id in expired:
            group.remove_member(member_id)
        self._refresh_target(group)

    # -- offsets ----------------------------------------------------------------------

    def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        *,
        now_ms: int,
    ) -> tuple[Records, None]:
        """Validate and store committed offsets (the next offset to read)."""
        _check_id("group_id", group_id, allow_empty=False)
        _check_offsets(offsets.items(), lambda om: om.offset)
        if any(len(om.metadata) > MAX_METADATA_LENGTH for om in offsets.values()):
            raise InvalidGroupRequestError(f"offset metadata is longer than {MAX_METADATA_LENGTH} characters")
        group = self._groups.get(group_id)
        if group is not None:
            self._expire_group(group, now_ms)
        if member_id == "" and member_epoch == MANUAL_COMMIT_EPOCH:
            if group is not None and group.members:
                raise FencedMemberError(
                    f"group {group_id} has members: a consumer that assigned its partitions itself "
                    "may commit only to a group without members")
        else:
            self._check_commit_from_member(group, member_id, member_epoch, offsets)
        for topic in sorted({tp.topic for tp in offsets}):
            if self._partition_count(topic) == 0:  # deleted meanwhile: its offsets are gone
                raise UnknownTopicError(f"topic {topic!r} does not exist")
        group = self._group_for_offsets(group_id)
        for tp, committed in offsets.items():
            group.offsets[tp] = committed
            self._pending.append((offset_key(group_id, tp), offset_value(committed)))
        return self.take_records(), None

    def _check_commit_from_member(self, group: ConsumerGroup | None, member_id: str, member_epoch: int,
                                  offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        member = self._member(group, member_id)
        if member_epoch <= 0 or member_epoch not in (member.epoch, member.previous_epoch):
            raise FencedMemberError(
                f"member {member_id} of group {group.group_id} committed with epoch {member_epoch}, "
                f"current is {member.epoch}")
        not_owned = sorted(tp for tp in offsets if group.owners.get(tp) != member_id)
        if not_owned:
            listed = ", ".join(f"{tp.topic}-{tp.partition}" for tp in not_owned[:5])
            raise FencedMemberError(f"member {member_id} of group {group.group_id} does not own {listed}")

    def _group_for_offsets(self, group_id: str) -> ConsumerGroup:
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = ConsumerGroup(group_id)
            self._dirty.add(group_id)
        return group

    def fetch_committed_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Committed offsets, -1 for a partition without one; ``partitions`` None or
        empty = every committed partition of the group."""
        group = self._groups.get(group_id)
        committed = group.offsets if group is not None else {}
        wanted = list(partitions) if partitions is not None else []
        if not wanted:
            return {tp: committed[tp].offset for tp in sorted(committed)}
        return {tp: committed[tp].offset if tp in committed else -1 for tp in wanted}

    def reset_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int], *, now_ms: int) -> tuple[Records, None]:
        """Set committed offsets of a group without members; an offset of -1 removes
        the committed offset (the consumer then follows its ``auto_offset_reset``)."""
        _check_id("group_id", group_id, allow_empty=False)
        _check_offsets(offsets.items(), lambda offset: offset, minimum=-1)
        for tp in offsets:
            count = self._partition_count(tp.topic)
            if count == 0:
                raise UnknownTopicError(f"topic {tp.topic!r} does not exist")
            if tp.partition >= count:
                raise UnknownPartitionError(
                    f"topic {tp.topic!r} has {count} partitions (0-{count - 1}); there is no partition {tp.partition}")
        self._check_empty(group_id, now_ms, "reset offsets of")
        group = self._group_for_offsets(group_id)
        for tp, offset in offsets.items():
            key = offset_key(group_id, tp)
            if offset < 0:
                if group.offsets.pop(tp, None) is not None:
                    self._pending.append((key, None))
            else:
                group.offsets[tp] = OffsetAndMetadata(offset)
                self._pending.append((key, offset_value(group.offsets[tp])))
        return self.take_records(), None

    def delete_group(self, group_id: str, *, now_ms: int) -> tuple[Records, None]:
        """Delete a group without members and its committed offsets."""
        _check_id("group_id", group_id, allow_empty=False)
        if group_id not in self._groups:
            raise GroupNotFoundError(f"group {group_id} does not exist")
        self._check_empty(group_id, now_ms, "delete")
        group = self._groups.pop(group_id)
        self._pending.extend((offset_key(group_id, tp), None) for tp in sorted(group.offsets))
        self._dirty.add(group_id)
        return self.take_records(), None

    def forget_topics(self, topics: Iterable[str]) -> tuple[Records, None]:
        """Drop every group's committed offsets of ``topics`` (deleted: a topic created
        again under the name starts at offset 0, so old offsets would skip its first
        records, silently). Kafka's coordinator does the same."""
        gone = set(topics)
        for group_id, group in self._groups.items():
            for tp in sorted(tp for tp in group.offsets if tp.topic in gone):
                del group.offsets[tp]
                self._pending.append((offset_key(group_id, tp), None))
        return self.take_records(), None

    def offset_topics(self) -> set[str]:
        """The topics some group has committed offsets of."""
        return {tp.topic for group in self._groups.values() for tp in group.offsets}

    def _check_empty(self, group_id: str, now_ms: int, action: str) -> None:
        group = self._groups.get(group_id)
        if group is None:
            return
        self._expire_group(group, now_ms)
        if group.members:
            raise GroupNotEmptyError(
                f"cannot {action} group {group_id}: it has {len(group.members)} live member(s); "
                "stop its consumers first")

    # -- reads ------------------------------------------------------------------------

    def list_groups(self) -> list[str]:
        return sorted(self._groups)

    def describe_group(self, group_id: str, log_end_offset: Callable[[str, int], int | None]) -> GroupDescription:
        """State, members and per-partition offsets; an unknown group is ``Dead``.

        ``log_end_offset(topic, partition)`` gives the end offset, None if the partition
        does not exist. Offsets cover committed partitions and members' partitions.
        """
        group = self._groups.get(group_id)
        if group is None:
            return GroupDescription(group_id, DEAD)
        members = tuple(
            MemberDescription(m.member_id, m.instance_id, tuple(sorted(m.assigned)))
            for m in sorted(group.members.values(), key=lambda m: (m.instance_id, m.member_id))
        )
        partitions = set(group.offsets) | set(group.owners)
        offsets = []
        for tp in sorted(partitions):
            committed = group.offsets[tp].offset if tp in group.offsets else -1
            end = log_end_offset(tp.topic, tp.partition)
            end = -1 if end is None else end
            lag = max(0, end - committed) if committed >= 0 and end >= 0 else -1
            offsets.append(PartitionOffsets(tp.topic, tp.partition, committed, end, lag))
        return GroupDescription(group_id, group.state(), members, tuple(offsets))

    # -- persistence ------------------------------------------------------------------

    def take_records(self) -> Records:
        """Every record not yet returned: queued offset records, then the diff of the
        group and member records of the groups changed since the last call."""
        records, self._pending = self._pending, []
        for group_id in sorted(self._dirty):
            group = self._groups.get(group_id)
            current = group.metadata_state() if group is not None else {}
            written = self._written.setdefault(group_id, {})
            for key, state in current.items():
                previous = written.get(key)
                if previous is None or previous[0] != state:
                    value = encode_metadata(state)
                    written[key] = (state, value)
                    records.append((key, value))
            for key in [key for key in written if key not in current]:
                del written[key]
                records.append((key, None))
            if not written:
                del self._written[group_id]
        self._dirty.clear()
        return records

    def replay(self, records: Iterable[tuple[bytes, bytes | None]], now_ms: int) -> None:
        """Rebuild the state from ``__consumer_offsets`` (full or compacted) at start-up.

        The last value of each key wins, as compaction would keep it; every replayed
        member gets a fresh session from ``now_ms``. Call once, on an empty manager.
        """
        assert not self._groups and not self._pending, "replay into an empty manager only"
        latest: dict[bytes, bytes] = {}
        for key, value in records:
            if value is None:
                latest.pop(key, None)
            else:
                latest[key] = value
        for key, value in latest.items():
            self._replay_one(key, value, now_ms)
        for group in self._groups.values():
            group.rebuild_owners()
            # What replay restored is what the log holds: seed the diff with it.
            self._written[group.group_id] = {
                key: (state, encode_metadata(state)) for key, state in group.metadata_state().items()
            }

    def _replay_one(self, key: bytes, value: bytes, now_ms: int) -> None:
        decoded = decode_key(key)
        group = self._groups.get(decoded.group_id)
        if group is None:
            group = self._groups[decoded.group_id] = ConsumerGroup(decoded.group_id)
        if decoded.kind == "offset":
            group.offsets[decoded.tp] = decode_offset_value(value)
        elif decoded.kind == "group":
            group.epoch, group.partition_counts = decode_group_value(value)
        elif decoded.kind == "member":
            group.restore_member(decoded.member_id, MemberRecord.decode(value), now_ms)
        else:  # pragma: no cover - decode_key knows only these kinds
            raise RecordFormatError(f"unknown record kind {decoded.kind}")


def _check_id(name: str, value: str, allow_empty: bool = True) -> None:
    if not value and not allow_empty:
        raise InvalidGroupRequestError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidGroupRequestError(f"{name} is longer than {MAX_ID_LENGTH} characters")


def _check_offsets(items, offset_of, minimum: int = 0) -> None:
    for tp, value in items:
        if not tp.topic or tp.partition < 0:
            raise InvalidGroupRequestError(f"invalid partition {tp.topic!r}-{tp.partition}")
        if offset_of(value) < minimum:
            raise InvalidGroupRequestError(f"offset {offset_of(value)} for {tp.topic}-{tp.partition} is negative")
