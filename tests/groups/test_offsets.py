"""Committed offsets: commit validation, fetch, describe with lag, reset and delete."""

from __future__ import annotations

import pytest

from logd.groups import (
    FencedMemberError,
    GroupMetadataManager,
    GroupNotEmptyError,
    GroupNotFoundError,
    InvalidGroupRequestError,
    OffsetAndMetadata,
    TopicPartition,
    UnknownMemberError,
)
from logd.groups.errors import UnknownTopicError
from logd.groups.records import decode_key, decode_offset_value

from .sim import FakeClock, SimMember, sequential_ids, tps

T0, T1, T2, T3 = (TopicPartition("t", p) for p in range(4))


@pytest.fixture
def manager():
    counts = {"t": 4}
    return GroupMetadataManager(lambda topic: counts.get(topic, 0), member_id_factory=sequential_ids())


@pytest.fixture
def clock():
    return FakeClock()


def two_members(manager, clock):
    a, b = SimMember(manager, "g", ["t"]), SimMember(manager, "g", ["t"])
    for _ in range(3):
        a.heartbeat(clock.now_ms)
        b.heartbeat(clock.now_ms)
    return a, b


def test_owner_commit_is_stored_and_returns_its_record(manager, clock):
    """An owner's commit is stored, fetchable, and returned as one offset record per partition."""
    a, _ = two_members(manager, clock)
    (tp, *_) = sorted(a.owned)
    records, _ = manager.commit_offsets("g", a.member_id, a.epoch, {tp: OffsetAndMetadata(42, "meta")},
                                        now_ms=clock.now_ms)
    (key, value), = records
    assert decode_key(key).tp == tp and decode_key(key).group_id == "g"
    assert decode_offset_value(value) == OffsetAndMetadata(42, "meta")
    assert manager.fetch_committed_offsets("g", [tp, TopicPartition("t", 99)]) == {tp: 42, TopicPartition("t", 99): -1}
    assert manager.fetch_committed_offsets("g") == {tp: 42}


def test_commit_for_a_partition_of_another_member_is_fenced(manager, clock):
    """A member cannot commit a partition it does not own, and nothing of the request is stored."""
    a, b = two_members(manager, clock)
    mine, theirs = sorted(a.owned)[0], sorted(b.owned)[0]
    with pytest.raises(FencedMemberError) as raised:
        manager.commit_offsets("g", a.member_id, a.epoch, {mine: OffsetAndMetadata(1), theirs: OffsetAndMetadata(1)},
                               now_ms=clock.now_ms)
    assert f"t-{theirs.partition}" in str(raised.value)
    assert manager.fetch_committed_offsets("g") == {}


def test_commit_with_stale_epoch_is_fenced(manager, clock):
    """A commit with an epoch older than the member's previous epoch is fenced; the previous one passes."""
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    old_epoch = a.epoch
    members = [a]
    for _ in range(3):  # each newcomer takes a partition from a: a's epoch moves each time
        members.append(SimMember(manager, "g", ["t"]))
        for _ in range(3):
            for m in members:
                m.heartbeat(clock.now_ms)
    assert a.epoch >= old_epoch + 2
    tp = sorted(a.owned)[0]
    with pytest.raises(FencedMemberError):
        manager.commit_offsets("g", a.member_id, old_epoch, {tp: OffsetAndMetadata(1)}, now_ms=clock.now_ms)
    for bad_epoch in (0, -1, a.epoch + 1):
        with pytest.raises(FencedMemberError):
            manager.commit_offsets("g", a.member_id, bad_epoch, {tp: OffsetAndMetadata(1)}, now_ms=clock.now_ms)
    manager.commit_offsets("g", a.member_id, a.epoch, {tp: OffsetAndMetadata(2)}, now_ms=clock.now_ms)


def test_commit_racing_an_epoch_bump_is_accepted(manager, clock):
    """A commit carrying the previous epoch (sent before the member saw its new epoch) is accepted."""
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    previous_epoch, kept = a.epoch, None
    SimMember(manager, "g", ["t"]).heartbeat(clock.now_ms)
    a.heartbeat(clock.now_ms)  # revokes two partitions: new epoch
    assert a.epoch == previous_epoch + 1
    kept = sorted(a.owned)[0]
    manager.commit_offsets("g", a.member_id, previous_epoch, {kept: OffsetAndMetadata(5)}, now_ms=clock.now_ms)
    assert manager.fetch_committed_offsets("g", [kept]) == {kept: 5}


def test_unknown_member_commit(manager, clock):
    """A commit from a member id the group does not know raises UnknownMemberError."""
    two_members(manager, clock)
    with pytest.raises(UnknownMemberError):
        manager.commit_offsets("g", "ghost", 1, {T0: OffsetAndMetadata(1)}, now_ms=clock.now_ms)
    with pytest.raises(UnknownMemberError):
        manager.commit_offsets("nogroup", "ghost", 1, {T0: OffsetAndMetadata(1)}, now_ms=clock.now_ms)
    with pytest.raises(UnknownMemberError):
        manager.commit_offsets("g", "", 3, {T0: OffsetAndMetadata(1)}, now_ms=clock.now_ms)


def test_manual_consumer_commits_only_to_a_group_without_members(manager, clock):
    """member_id "" with epoch -1 commits freely to an empty group and is fenced while members exist."""
    manager.commit_offsets("manual", "", -1, {T0: OffsetAndMetadata(10)}, now_ms=clock.now_ms)
    assert manager.fetch_committed_offsets("manual", [T0]) == {T0: 10}
    assert "manual" in manager.list_groups()
    two_members(manager, clock)
    with pytest.raises(FencedMemberError):
        manager.commit_offsets("g", "", -1, {T0: OffsetAndMetadata(10)}, now_ms=clock.now_ms)


def test_invalid_offsets_are_rejected(manager, clock):
    """Negative offsets or partitions, empty topics and oversized metadata are invalid requests."""
    for offsets in ({T0: OffsetAndMetadata(-1)}, {TopicPartition("t", -1): OffsetAndMetadata(0)},
                    {TopicPartition("", 0): OffsetAndMetadata(0)}, {T0: OffsetAndMetadata(0, "m" * 4097)}):
        with pytest.raises(InvalidGroupRequestError):
            manager.commit_offsets("g", "", -1, offsets, now_ms=clock.now_ms)


def test_fetch_for_unknown_group_is_all_minus_one(manager):
    """Fetching committed offsets of a group that does not exist answers -1 (nothing committed)."""
    assert manager.fetch_committed_offsets("nope", [T0, T1]) == {T0: -1, T1: -1}
    assert manager.fetch_committed_offsets("nope") == {}


def test_describe_reports_committed_end_and_lag(manager, clock):
    """Describe gives committed offset, end offset and lag per partition; -1 where unknown."""
    a, b = two_members(manager, clock)
    tp = sorted(a.owned)[0]
    manager.commit_offsets("g", a.member_id, a.epoch, {tp: OffsetAndMetadata(30)}, now_ms=clock.now_ms)
    ends = {T0: 100, T1: 100, T2: 100}  # T3 missing: the end offset is unknown
    description = manager.describe_group("g", lambda topic, p: ends.get(TopicPartition(topic, p)))
    rows = {TopicPartition(o.topic, o.partition): o for o in description.offsets}
    assert set(rows) == tps("t", 0, 1, 2, 3)
    assert (rows[tp].committed_offset, rows[tp].log_end_offset, rows[tp].lag) == (30, ends.get(tp, -1), 70 if tp in ends else -1)
    other = sorted(b.owned)[0]
    assert rows[other].committed_offset == -1 and rows[other].lag == -1
    assert rows[T3].log_end_offset == -1


def test_reset_and_delete_are_refused_with_live_members(manager, clock):
    """reset_offsets and delete_group raise GroupNotEmptyError while members exist, and work once they left."""
    a, b = two_members(manager, clock)
    tp = sorted(a.owned)[0]
    manager.commit_offsets("g", a.member_id, a.epoch, {tp: OffsetAndMetadata(5)}, now_ms=clock.now_ms)
    with pytest.raises(GroupNotEmptyError):
        manager.reset_offsets("g", {tp: 0}, now_ms=clock.now_ms)
    with pytest.raises(GroupNotEmptyError):
        manager.delete_group("g", now_ms=clock.now_ms)
    a.leave(clock.now_ms)
    b.leave(clock.now_ms)
    records, _ = manager.reset_offsets("g", {tp: 0, T3: 7}, now_ms=clock.now_ms)
    assert len(records) == 2
    assert manager.fetch_committed_offsets("g") == dict(sorted({tp: 0, T3: 7}.items()))
    records, _ = manager.reset_offsets("g", {T3: -1}, now_ms=clock.now_ms)
    assert [value for _, value in records] == [None]
    assert manager.fetch_committed_offsets("g") == {tp: 0}


def test_delete_removes_offsets_and_writes_tombstones(manager, clock):
    """Deleting a group removes it and its offsets; every key it ever wrote gets a tombstone."""
    log: list = []
    a = SimMember(manager, "g", ["t"], records=log)
    b = SimMember(manager, "g", ["t"], records=log)
    for _ in range(3):
        a.heartbeat(clock.now_ms)
        b.heartbeat(clock.now_ms)
    a.commit({sorted(a.owned)[0]: 5}, clock.now_ms)
    a.leave(clock.now_ms)
    b.leave(clock.now_ms)
    log += manager.delete_group("g", now_ms=clock.now_ms)[0]
    assert manager.list_groups() == []
    assert manager.fetch_committed_offsets("g") == {}
    assert manager.describe_group("g", lambda t, p: 0).state == "Dead"
    live = dict(log)  # the last value of each key, as compaction keeps it
    assert any(decode_key(key).kind == "offset" for key in live)
    assert all(value is None for value in live.values()), [decode_key(k) for k, v in live.items() if v is not None]
    with pytest.raises(GroupNotFoundError):
        manager.delete_group("g", now_ms=clock.now_ms)


def test_evicted_members_no_longer_block_delete(manager, clock):
    """Members whose session ended are evicted lazily, so delete works without waiting for the ticker."""
    two_members(manager, clock)
    clock.advance(60_000)
    manager.delete_group("g", now_ms=clock.now_ms)
    assert manager.list_groups() == []


def test_a_deleted_topics_offsets_are_forgotten_and_new_commits_to_it_refused():
    """A topic created again under a deleted one's name starts at offset 0: the groups'
    old committed offsets used to survive, and a group then skipped its first records
    silently. They go (with tombstones), and a commit to a missing topic is refused."""
    counts = {"t": 1, "u": 1}
    manager = GroupMetadataManager(lambda topic: counts.get(topic, 0), member_id_factory=sequential_ids())
    t0, u0 = TopicPartition("t", 0), TopicPartition("u", 0)
    for group in ("g1", "g2"):
        manager.commit_offsets(group, "", -1, {t0: OffsetAndMetadata(50), u0: OffsetAndMetadata(7)}, now_ms=0)
    assert manager.offset_topics() == {"t", "u"}
    del counts["t"]
    records, _ = manager.forget_topics(["t"])
    assert sorted((decode_key(key).group_id, decode_key(key).tp, value) for key, value in records) == [
        ("g1", t0, None), ("g2", t0, None)]
    assert manager.fetch_committed_offsets("g1") == {u0: 7} and manager.offset_topics() == {"u"}
    with pytest.raises(UnknownTopicError, match="'t' does not exist"):
        manager.commit_offsets("g1", "", -1, {t0: OffsetAndMetadata(3)}, now_ms=0)
