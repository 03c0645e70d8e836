"""Incremental cooperative reconciliation: safety (never two owners), liveness (convergence)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logd.groups import FencedMemberError, GroupMetadataManager, TopicPartition

from .sim import SESSION_TIMEOUT_MS, FakeClock, SimMember, assert_disjoint, sequential_ids, tps


def make_manager(counts):
    return GroupMetadataManager(lambda topic: counts.get(topic, 0), member_id_factory=sequential_ids())


def is_converged(manager, members, partitions):
    owned = [m.owned for m in members]
    sizes = [len(o) for o in owned]
    return (set().union(*owned) == partitions and sum(sizes) == len(partitions)
            and max(sizes) - min(sizes) <= 1 and manager.describe_group("g", lambda t, p: 0).state == "Stable")


def test_eight_members_on_sixteen_partitions_converge_quickly():
    """Eight members joining at once own two partitions each after at most three heartbeat rounds."""
    counts = {"t": 16}
    manager, clock = make_manager(counts), FakeClock()
    members = [SimMember(manager, "g", ["t"]) for _ in range(8)]
    for member in members:
        member.heartbeat(clock.now_ms)
        assert_disjoint(members)
    for round_number in range(1, 4):
        clock.advance(50)
        for member in members:
            member.heartbeat(clock.now_ms)
            assert_disjoint(members)
        if is_converged(manager, members, tps("t", *range(16))):
            break
    assert is_converged(manager, members, tps("t", *range(16))), [sorted(m.owned) for m in members]
    assert round_number <= 3


def test_members_keep_partitions_that_do_not_move():
    """When a third member joins, the two others never lose a partition that stays theirs."""
    counts = {"t": 6}
    manager, clock = make_manager(counts), FakeClock()
    a, b = SimMember(manager, "g", ["t"]), SimMember(manager, "g", ["t"])
    for _ in range(3):
        a.heartbeat(clock.now_ms), b.heartbeat(clock.now_ms)
    before = {"a": set(a.owned), "b": set(b.owned)}
    c = SimMember(manager, "g", ["t"])
    history = {"a": [], "b": []}
    for _ in range(4):
        for name, member in (("a", a), ("b", b)):
            member.heartbeat(clock.now_ms)
            history[name].append(set(member.owned))
        c.heartbeat(clock.now_ms)
        assert_disjoint([a, b, c])
    for name, snapshots in history.items():
        final = snapshots[-1]
        assert final <= before[name]
        for owned in snapshots:
            assert final <= owned  # kept throughout, never revoked and given back
    assert len(c.owned) == 2


def test_slow_release_blocks_the_handover_until_released():
    """A partition being revoked is not given to its new owner until the old one reports it released."""
    counts = {"t": 2}
    manager, clock = make_manager(counts), FakeClock()
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    b = SimMember(manager, "g", ["t"])
    b.heartbeat(clock.now_ms)
    a.heartbeat(clock.now_ms, release_now=False)  # told to give one up, still working on it
    assert len(a.to_release) == 1
    for _ in range(3):
        a.heartbeat(clock.now_ms, release_now=False)
        b.heartbeat(clock.now_ms)
        assert b.owned == set()
        assert_disjoint([a, b])
    a.release()
    a.heartbeat(clock.now_ms)
    b.heartbeat(clock.now_ms)
    assert len(a.owned) == len(b.owned) == 1
    assert_disjoint([a, b])


def test_final_commit_of_a_revoked_partition_is_accepted_then_refused():
    """The old owner may commit a partition until it reports it released; then the commit is fenced."""
    counts = {"t": 2}
    manager, clock = make_manager(counts), FakeClock()
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    b = SimMember(manager, "g", ["t"])
    b.heartbeat(clock.now_ms)
    a.heartbeat(clock.now_ms, release_now=False)
    (revoked,) = a.to_release
    a.commit({revoked: 7}, clock.now_ms)  # the commit before on_revoke returns
    a.release()
    a.heartbeat(clock.now_ms)
    with pytest.raises(FencedMemberError):
        a.commit({revoked: 8}, clock.now_ms)
    assert manager.fetch_committed_offsets("g", [revoked]) == {revoked: 7}


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["beat", "beat", "beat", "slow_beat", "lost_beat", "release", "commit", "tick",
                         "join", "leave", "crash", "grow"]),
        st.integers(0, 5),
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=120, deadline=None)
@given(operations=OPERATIONS, initial_members=st.integers(1, 4), partitions=st.integers(1, 9))
def test_random_histories_never_share_a_partition_and_converge(operations, initial_members, partitions):
    """Under random joins, leaves, crashes, lost answers, slow releases and new partitions, no two
    live members ever own a partition, every commit of an owner succeeds, the group converges once
    everyone heartbeats, and replaying the records gives back the same committed offsets."""
    counts = {"t": partitions}
    manager, clock = make_manager(counts), FakeClock()
    records: list = []
    members = [SimMember(manager, "g", ["t"], records=records) for _ in range(initial_members)]
    crashed: list[SimMember] = []
    committed: dict[TopicPartition, int] = {}
    next_offset = iter(range(1, 1_000_000))
    for operation, index in operations:
        member = members[index % len(members)] if members else None
        if operation == "join" or member is None:
            members.append(SimMember(manager, "g", ["t"], records=records))
            members[-1].heartbeat(clock.now_ms)
        elif operation in ("beat", "slow_beat", "lost_beat"):
            member.heartbeat(clock.now_ms, release_now=operation == "beat", lose_answer=operation == "lost_beat")
        elif operation == "release":
            member.release()
        elif operation == "commit" and member.owned:
            offsets = {tp: next(next_offset) for tp in member.owned}
            member.commit(offsets, clock.now_ms)  # an owner's commit must never be refused
            committed.update(offsets)
        elif operation == "leave" and len(members) > 1:
            member.leave(clock.now_ms)
            members.remove(member)
        elif operation == "crash" and len(members) > 1:
            members.remove(member)
            crashed.append(member)  # stops heartbeating; its partitions wait for the eviction
        elif operation == "tick":
            clock.advance(SESSION_TIMEOUT_MS // 4 * (index % 4 + 1))
            for m in members:
                m.check_session(clock.now_ms)
            records.extend(manager.expire(clock.now_ms))
        elif operation == "grow":
            counts["t"] += 1
        assert_disjoint(members)

    # Liveness: everyone heartbeats promptly, crashed members time out.
    clock.advance(SESSION_TIMEOUT_MS)
    for m in members:
        m.check_session(clock.now_ms)
    for _ in range(6):
        for m in members:
            m.heartbeat(clock.now_ms)
            assert_disjoint(members)
        clock.advance(10)
    assert is_converged(manager, members, tps("t", *range(counts["t"]))), [sorted(m.owned) for m in members]

    records.extend(manager.take_records())
    replayed = make_manager(counts)
    replayed.replay(records, clock.now_ms)
    assert replayed.fetch_committed_offsets("g") == manager.fetch_committed_offsets("g") == dict(sorted(committed.items()))
    describe = lambda m: m.describe_group("g", lambda t, p: 100)  # noqa: E731
    assert describe(replayed) == describe(manager)
    # Members go on after the "restart" without a rebalance: same epochs, same partitions.
    for m in members:
        m.manager = replayed
        before = set(m.owned)
        m.heartbeat(clock.now_ms)
        assert m.owned == before
