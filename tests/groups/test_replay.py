"""Persistence: record formats round-trip and replay(records) rebuilds the live state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logd.groups import GroupMetadataManager, OffsetAndMetadata, TopicPartition
from logd.groups.records import (
    MemberRecord,
    RecordFormatError,
    decode_key,
    decode_offset_value,
    member_key,
    offset_key,
    offset_value,
)

from .sim import SESSION_TIMEOUT_MS, FakeClock, SimMember, sequential_ids, tps

COUNTS = {"t": 4, "u": 2}
names = st.text(min_size=1, max_size=20)


def new_manager():
    return GroupMetadataManager(lambda topic: COUNTS.get(topic, 0), member_id_factory=sequential_ids("r"))


def snapshot(manager):
    """Everything the public API shows about every group."""
    return {
        group_id: (manager.describe_group(group_id, lambda t, p: 50), manager.fetch_committed_offsets(group_id))
        for group_id in manager.list_groups()
    }


def compact(records):
    """What the log cleaner leaves: the last value per key, tombstones dropped."""
    latest = dict(records)
    return [(key, value) for key, value in latest.items() if value is not None]


@settings(max_examples=100, deadline=None)
@given(group=names, topic=names, partition=st.integers(0, 2**31 - 1), offset=st.integers(0, 2**63 - 1), metadata=st.text())
def test_offset_record_round_trip(group, topic, partition, offset, metadata):
    """Any group and topic name, partition and offset survive the key and value encoding."""
    tp = TopicPartition(topic, partition)
    decoded = decode_key(offset_key(group, tp))
    assert (decoded.kind, decoded.group_id, decoded.tp) == ("offset", group, tp)
    assert decode_offset_value(offset_value(OffsetAndMetadata(offset, metadata))) == OffsetAndMetadata(offset, metadata)


def test_keys_of_different_groups_never_collide():
    """Length prefixes keep ("a/b", "c") and ("a", "b/c") apart."""
    assert offset_key("a/b", TopicPartition("c", 0)) != offset_key("a", TopicPartition("b/c", 0))
    assert member_key("ab", "c") != member_key("a", "bc")


def test_member_record_round_trip():
    """A member record decodes to what was encoded."""
    record = MemberRecord("host", frozenset({"t", "u"}), 3000, 7, 6, True, frozenset(tps("t", 0)),
                          frozenset(tps("u", 1)), frozenset(tps("t", 0, 2)))
    assert MemberRecord.decode(record.encode()) == record


@pytest.mark.parametrize("key, value", [
    (b"bogus:x", b"{}"),
    (offset_key("g", TopicPartition("t", 0))[:-1], b'{"v":1,"offset":1}'),
    (offset_key("g", TopicPartition("t", 0)), b'{"v":2,"offset":1}'),
    (offset_key("g", TopicPartition("t", 0)), b"not json"),
])
def test_replay_refuses_records_it_cannot_read(key, value):
    """Unknown keys, truncated keys, unknown versions and garbage values raise RecordFormatError."""
    with pytest.raises(RecordFormatError):
        new_manager().replay([(key, value)], 0)


def run_history(manager, clock):
    """A history touching every kind of record; returns (records, members still running)."""
    log: list = []
    a = SimMember(manager, "g1", ["t", "u"], records=log)
    b = SimMember(manager, "g1", ["t", "u"], records=log)
    s = SimMember(manager, "g1", ["t", "u"], instance_id="static-1", records=log)
    for _ in range(4):
        for m in (a, b, s):
            m.heartbeat(clock.now_ms)
    a.commit({tp: 10 + tp.partition for tp in a.owned}, clock.now_ms)
    b.commit({tp: 20 + tp.partition for tp in b.owned}, clock.now_ms)
    b.commit({tp: 30 + tp.partition for tp in b.owned}, clock.now_ms)  # overwrites
    s.leave(clock.now_ms, epoch=-2)
    log += manager.commit_offsets("g2", "", -1, {TopicPartition("t", 0): OffsetAndMetadata(5, "m")}, now_ms=clock.now_ms)[0]
    log += manager.reset_offsets("g2", {TopicPartition("t", 1): 9, TopicPartition("t", 0): -1}, now_ms=clock.now_ms)[0]
    log += manager.commit_offsets("g3", "", -1, {TopicPartition("t", 0): OffsetAndMetadata(1)}, now_ms=clock.now_ms)[0]
    log += manager.delete_group("g3", now_ms=clock.now_ms)[0]
    c = SimMember(manager, "g4", ["t"], records=log)
    c.heartbeat(clock.now_ms)
    clock.advance(SESSION_TIMEOUT_MS)
    log += manager.expire(clock.now_ms)  # g4 becomes Empty, g1 loses everyone
    a2 = SimMember(manager, "g1", ["t", "u"], records=log)
    a2.heartbeat(clock.now_ms)
    return log, [a2]


def test_replay_rebuilds_groups_members_and_offsets():
    """Replaying every record of a history, or the compacted log, gives the same groups, members and offsets."""
    clock = FakeClock()
    live = new_manager()
    log, _ = run_history(live, clock)
    log += live.take_records()
    expected = snapshot(live)
    assert set(expected) == {"g1", "g2", "g4"}
    assert expected["g2"][1] == {TopicPartition("t", 1): 9}
    for records in (log, compact(log)):
        replayed = new_manager()
        replayed.replay(records, clock.now_ms)
        assert snapshot(replayed) == expected
        assert replayed.take_records() == []  # nothing to rewrite: the log already holds it


def test_members_carry_on_after_a_restart():
    """After replay a member keeps its id, epoch and partitions; its session restarts at replay time."""
    clock = FakeClock()
    live = new_manager()
    log: list = []
    a, b = (SimMember(live, "g", ["t"], records=log) for _ in range(2))
    for _ in range(3):
        a.heartbeat(clock.now_ms)
        b.heartbeat(clock.now_ms)
    owned = {m.member_id: set(m.owned) for m in (a, b)}
    clock.advance(SESSION_TIMEOUT_MS * 5)  # the broker was down for a while
    restarted = new_manager()
    restarted.replay(log, clock.now_ms)
    for m in (a, b):
        m.manager = restarted
        epoch = m.epoch
        m.heartbeat(clock.now_ms)
        assert (m.epoch, m.owned) == (epoch, owned[m.member_id])
    assert restarted.expire(clock.now_ms + SESSION_TIMEOUT_MS - 1) == []


def test_static_member_absent_across_a_restart_gets_its_partitions_back():
    """A static member that left with -2 before a restart rejoins afterwards with the same partitions."""
    clock = FakeClock()
    live = new_manager()
    log: list = []
    s = SimMember(live, "g", ["t"], instance_id="host-1", records=log)
    b = SimMember(live, "g", ["t"], records=log)
    for _ in range(3):
        s.heartbeat(clock.now_ms)
        b.heartbeat(clock.now_ms)
    mine = set(s.owned)
    s.leave(clock.now_ms, epoch=-2)
    restarted = new_manager()
    restarted.replay(log, clock.now_ms)
    again = SimMember(restarted, "g", ["t"], instance_id="host-1")
    assert set(again.heartbeat(clock.now_ms).assignment) == mine
