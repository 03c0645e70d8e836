"""Membership by heartbeat: joins, leaves, evictions, fencing, static members, metadata changes."""

from __future__ import annotations

import pytest

from logd.groups import (
    FencedMemberError,
    GroupMetadataManager,
    InvalidGroupRequestError,
    OffsetAndMetadata,
    TopicPartition,
    UnknownMemberError,
)
from logd.groups.manager import HEARTBEAT_INTERVAL_MS, RECONCILING_HEARTBEAT_INTERVAL_MS

from .sim import SESSION_TIMEOUT_MS, FakeClock, SimMember, assert_disjoint, sequential_ids, tps


@pytest.fixture
def counts():
    return {"t": 4}


@pytest.fixture
def manager(counts):
    return GroupMetadataManager(lambda topic: counts.get(topic, 0), member_id_factory=sequential_ids())


@pytest.fixture
def clock():
    return FakeClock()


def settle(members, clock, rounds=4):
    for _ in range(rounds):
        for member in members:
            member.heartbeat(clock.now_ms)
            assert_disjoint(members)
        clock.advance(10)


def test_join_issues_member_id_and_epoch(manager, clock):
    """The first heartbeat gets a broker-chosen id, epoch >= 1 and every free partition."""
    records, result = manager.heartbeat("g", "", 0, now_ms=clock.now_ms, subscribed_topics=["t"])
    assert result.member_id == "m0001"
    assert result.member_epoch >= 1
    assert set(result.assignment) == tps("t", 0, 1, 2, 3)
    assert records  # the group and member records


def test_join_with_client_chosen_member_id(manager, clock):
    """A joining member may choose its own id (KIP-1082), so a lost join answer can be retried."""
    _, first = manager.heartbeat("g", "my-id", 0, now_ms=clock.now_ms, subscribed_topics=["t"])
    _, again = manager.heartbeat("g", "my-id", 0, now_ms=clock.now_ms, subscribed_topics=["t"])
    assert first.member_id == again.member_id == "my-id"
    assert again.member_epoch > first.member_epoch
    assert set(again.assignment) == tps("t", 0, 1, 2, 3)
    assert [m.member_id for m in manager.describe_group("g", lambda t, p: 0).members] == ["my-id"]


def test_two_members_split_four_partitions_disjointly(manager, clock):
    """Two members end up with two partitions each, disjoint and covering all four."""
    a, b = SimMember(manager, "g", ["t"]), SimMember(manager, "g", ["t"])
    settle([a, b], clock)
    assert a.owned | b.owned == tps("t", 0, 1, 2, 3)
    assert len(a.owned) == len(b.owned) == 2
    assert manager.describe_group("g", lambda t, p: 0).state == "Stable"


def test_member_that_leaves_hands_all_to_the_other(manager, clock):
    """After one of two members leaves, the other owns all four partitions on its next heartbeat."""
    a, b = SimMember(manager, "g", ["t"]), SimMember(manager, "g", ["t"])
    settle([a, b], clock)
    result = a.leave(clock.now_ms)
    assert result.member_epoch == -1
    b.heartbeat(clock.now_ms)
    assert b.owned == tps("t", 0, 1, 2, 3)


def test_leave_is_idempotent(manager, clock):
    """Leaving twice, or leaving a group that does not exist, is not an error."""
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    a.leave(clock.now_ms)
    assert a.leave(clock.now_ms).member_epoch == -1
    assert manager.heartbeat("nope", "x", -1, now_ms=clock.now_ms)[1].member_epoch == -1


def test_silent_member_is_evicted_and_then_fenced(manager, clock):
    """A member silent for the session timeout loses its partitions; its later commit and heartbeat fail."""
    a, b = SimMember(manager, "g", ["t"]), SimMember(manager, "g", ["t"])
    settle([a, b], clock)
    a_owned = set(a.owned)
    for _ in range(SESSION_TIMEOUT_MS // 100):
        clock.advance(100)
        b.heartbeat(clock.now_ms)
    assert b.owned == tps("t", 0, 1, 2, 3)
    with pytest.raises(UnknownMemberError):
        manager.commit_offsets("g", a.member_id, a.epoch, {tp: OffsetAndMetadata(1) for tp in a_owned},
                               now_ms=clock.now_ms)
    with pytest.raises(FencedMemberError):  # UnknownMemberError is a FencedMemberError
        manager.heartbeat("g", a.member_id, a.epoch, now_ms=clock.now_ms, subscribed_topics=["t"])


def test_expire_evicts_at_the_session_deadline(manager, clock):
    """expire() keeps a member until exactly session_timeout_ms after its last heartbeat."""
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    assert manager.expire(clock.now_ms + SESSION_TIMEOUT_MS - 1) == []
    records = manager.expire(clock.now_ms + SESSION_TIMEOUT_MS)
    assert any(value is None for _, value in records)  # the member's tombstone
    assert manager.describe_group("g", lambda t, p: 0).state == "Empty"


def test_stale_epoch_is_fenced_and_changes_nothing(manager, clock):
    """A heartbeat with an epoch older than the previous one is fenced; the member goes on."""
    a, b, c, d = (SimMember(manager, "g", ["t"]) for _ in range(4))
    a.heartbeat(clock.now_ms)
    first_epoch = a.epoch
    settle([a, b], clock)
    settle([a, b, c, d], clock)
    assert a.epoch >= first_epoch + 2
    with pytest.raises(FencedMemberError) as raised:
        manager.heartbeat("g", a.member_id, first_epoch, now_ms=clock.now_ms, subscribed_topics=["t"])
    assert not isinstance(raised.value, UnknownMemberError)
    assert manager.take_records() == []
    assert isinstance(a.heartbeat(clock.now_ms).member_epoch, int)


def test_previous_epoch_gets_the_same_answer_again(manager, clock):
    """A heartbeat with the previous epoch (our answer was lost) is answered again, unchanged."""
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    b = SimMember(manager, "g", ["t"])
    b.heartbeat(clock.now_ms)
    lost = a.heartbeat(clock.now_ms, lose_answer=True)  # revokes two partitions; a never hears of it
    assert lost.member_epoch == a.epoch + 1
    again = a.heartbeat(clock.now_ms)
    assert again == lost
    # a reported all four as owned with a stale epoch: nothing was handed to b meanwhile.
    assert b.heartbeat(clock.now_ms).assignment == ()
    a.heartbeat(clock.now_ms)
    assert set(b.heartbeat(clock.now_ms).assignment) == tps("t", 0, 1, 2, 3) - a.owned


def test_fenced_member_rejoins_with_its_id(manager, clock):
    """After a fencing error a member rejoins with epoch 0 and its id, and gets its partitions back."""
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    member_id = a.member_id
    result = manager.heartbeat("g", member_id, 0, now_ms=clock.now_ms, subscribed_topics=["t"])[1]
    assert result.member_id == member_id
    assert set(result.assignment) == tps("t", 0, 1, 2, 3)


def test_static_member_rejoining_within_timeout_gets_same_partitions(manager, clock):
    """A static member leaving with -2 keeps its partitions; its next incarnation gets them back at once."""
    s = SimMember(manager, "g", ["t"], instance_id="host-1")
    b = SimMember(manager, "g", ["t"])
    settle([s, b], clock)
    before, old_id = set(s.owned), s.member_id
    assert s.leave(clock.now_ms, epoch=-2).member_epoch == -2
    clock.advance(SESSION_TIMEOUT_MS // 2)
    b.heartbeat(clock.now_ms)
    assert b.owned == tps("t", 0, 1, 2, 3) - before  # nothing moved to b meanwhile
    description = manager.describe_group("g", lambda t, p: 0)
    reserved = {m.member_id: set(m.assignment) for m in description.members}
    assert reserved == {old_id: before, b.member_id: b.owned}  # the absent member's partitions are kept
    restarted = SimMember(manager, "g", ["t"], instance_id="host-1")
    result = restarted.heartbeat(clock.now_ms)
    assert set(result.assignment) == before
    assert result.member_id != old_id
    with pytest.raises(UnknownMemberError):
        manager.heartbeat("g", old_id, s.epoch, now_ms=clock.now_ms, subscribed_topics=["t"])


def test_static_member_leaving_before_a_move_releases_what_moves(manager, clock):
    """A static member that leaves before its heartbeat learnt that a partition moves
    keeps only its target: the partition goes to its new owner at once, not after the
    session timeout (the absent member is never told to revoke it)."""
    s = SimMember(manager, "g", ["t"], instance_id="host-1")
    settle([s], clock)
    assert s.owned == tps("t", 0, 1, 2, 3)
    b = SimMember(manager, "g", ["t"])
    b.heartbeat(clock.now_ms)  # the target moves half to b; s has not heard yet
    s.leave(clock.now_ms, epoch=-2)
    clock.advance(10)
    b.heartbeat(clock.now_ms)
    assert len(b.owned) == 2
    description = manager.describe_group("g", lambda t, p: 0)
    reserved = {m.member_id: set(m.assignment) for m in description.members}
    assert reserved[s.member_id] == tps("t", 0, 1, 2, 3) - b.owned


def test_static_member_not_back_in_time_is_evicted(manager, clock):
    """A static member that does not come back within the session timeout loses its partitions."""
    s = SimMember(manager, "g", ["t"], instance_id="host-1")
    b = SimMember(manager, "g", ["t"])
    settle([s, b], clock)
    s.leave(clock.now_ms, epoch=-2)
    for _ in range(SESSION_TIMEOUT_MS // 100 + 1):
        clock.advance(100)
        b.heartbeat(clock.now_ms)
    assert b.owned == tps("t", 0, 1, 2, 3)


def test_absent_static_member_cannot_heartbeat_or_commit(manager, clock):
    """After -2 the old incarnation is fenced: only a rejoin with epoch 0 brings it back."""
    s = SimMember(manager, "g", ["t"], instance_id="host-1")
    s.heartbeat(clock.now_ms)
    epoch, owned = s.epoch, set(s.owned)
    s.leave(clock.now_ms, epoch=-2)
    with pytest.raises(FencedMemberError):
        manager.heartbeat("g", s.member_id, epoch, now_ms=clock.now_ms, subscribed_topics=["t"])
    with pytest.raises(FencedMemberError):
        manager.commit_offsets("g", s.member_id, epoch, {tp: OffsetAndMetadata(0) for tp in owned},
                               now_ms=clock.now_ms)


def test_new_partitions_and_topics_are_picked_up(manager, counts, clock):
    """Partitions added to a topic and a topic created after subscribing are assigned on the next heartbeats."""
    a, b = SimMember(manager, "g", ["t", "later"]), SimMember(manager, "g", ["t", "later"])
    settle([a, b], clock)
    counts["t"] = 6
    counts["later"] = 2
    settle([a, b], clock)
    assert a.owned | b.owned == tps("t", *range(6)) | tps("later", 0, 1)
    assert len(a.owned) == len(b.owned) == 4


def test_subscription_change_moves_partitions(manager, counts, clock):
    """A member that unsubscribes from a topic releases it and its partitions go to the other member."""
    counts["u"] = 2
    a, b = SimMember(manager, "g", ["t", "u"]), SimMember(manager, "g", ["t", "u"])
    settle([a, b], clock)
    a.topics = ["t"]
    settle([a, b], clock)
    assert all(tp.topic == "t" for tp in a.owned)
    assert tps("u", 0, 1) <= b.owned
    assert a.owned | b.owned == tps("t", 0, 1, 2, 3) | tps("u", 0, 1)


def test_heartbeat_interval_is_short_while_reconciling(manager, clock):
    """The answer asks for a quick heartbeat while partitions are pending, a normal one when stable."""
    a = SimMember(manager, "g", ["t"])
    a.heartbeat(clock.now_ms)
    assert a.interval_ms == min(HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS // 3)
    b = SimMember(manager, "g", ["t"])
    b.heartbeat(clock.now_ms)
    assert b.interval_ms == RECONCILING_HEARTBEAT_INTERVAL_MS  # waiting for a's partitions
    settle([a, b], clock)
    assert a.interval_ms == b.interval_ms == min(HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS // 3)


@pytest.mark.parametrize("kwargs", [
    {"group_id": "", "member_id": "", "member_epoch": 0},
    {"group_id": "g", "member_id": "", "member_epoch": -3},
    {"group_id": "g", "member_id": "x" * 256, "member_epoch": 0},
    {"group_id": "g", "member_id": "", "member_epoch": 0, "session_timeout_ms": -1},
])
def test_malformed_heartbeats_are_rejected(manager, clock, kwargs):
    """Empty group ids, epochs below -2, overlong ids and negative timeouts are invalid requests."""
    with pytest.raises(InvalidGroupRequestError):
        manager.heartbeat(now_ms=clock.now_ms, **kwargs)


def test_describe_lists_members_with_their_assignments(manager, clock):
    """Describe shows each member, its instance id and its current assignment."""
    a = SimMember(manager, "g", ["t"], instance_id="host-a")
    b = SimMember(manager, "g", ["t"])
    settle([a, b], clock)
    description = manager.describe_group("g", lambda t, p: 10)
    by_id = {m.member_id: m for m in description.members}
    assert set(by_id[a.member_id].assignment) == a.owned
    assert by_id[a.member_id].group_instance_id == "host-a"
    assert set(by_id[b.member_id].assignment) == b.owned
    assert manager.describe_group("unknown", lambda t, p: 0).state == "Dead"
    assert manager.list_groups() == ["g"]
    assert TopicPartition("t", 0) in {TopicPartition(o.topic, o.partition) for o in description.offsets}


def test_static_member_restarting_without_leaving_replaces_its_old_incarnation(manager, clock):
    """A static member that crashed and restarts (no -2) takes over its old partitions; the old id is fenced."""
    s = SimMember(manager, "g", ["t"], instance_id="host-1")
    b = SimMember(manager, "g", ["t"])
    settle([s, b], clock)
    before, old_id, old_epoch = set(s.owned), s.member_id, s.epoch
    restarted = SimMember(manager, "g", ["t"], instance_id="host-1")
    assert set(restarted.heartbeat(clock.now_ms).assignment) == before
    assert len(manager.describe_group("g", lambda t, p: 0).members) == 2
    with pytest.raises(UnknownMemberError):
        manager.commit_offsets("g", old_id, old_epoch, {tp: OffsetAndMetadata(1) for tp in before},
                               now_ms=clock.now_ms)


def test_join_with_a_known_member_id_and_another_instance_id_is_invalid(manager, clock):
    """A member id cannot change its group_instance_id; the request changes nothing."""
    a = SimMember(manager, "g", ["t"], instance_id="host-a")
    a.heartbeat(clock.now_ms)
    manager.take_records()
    with pytest.raises(InvalidGroupRequestError):
        manager.heartbeat("g", a.member_id, 0, now_ms=clock.now_ms, instance_id="host-b", subscribed_topics=["t"])
    assert manager.take_records() == []
