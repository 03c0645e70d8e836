"""The sticky balanced assignor: coverage, balance, stickiness, determinism."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from logd.groups import TopicPartition, assign

TOPICS = ["a", "b", "c"]

member_ids = st.lists(st.text("xyz0123", min_size=1, max_size=4), min_size=1, max_size=8, unique=True)
partition_counts = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 12), min_size=1)


def all_partitions(counts, topics=None):
    return {TopicPartition(t, p) for t, n in counts.items() if topics is None or t in topics for p in range(n)}


def owner_map(assignment):
    owners = {}
    for member, partitions in assignment.items():
        for tp in partitions:
            assert tp not in owners, f"{tp} assigned twice"
            owners[tp] = member
    return owners


def moved(before, after):
    old, new = owner_map(before), owner_map(after)
    return {tp for tp in new if tp in old and old[tp] != new[tp]}


def test_two_members_split_four_partitions():
    """Two members get two partitions each of a four-partition topic."""
    target = assign({}, {"m1": ["t"], "m2": ["t"]}, {"t": 4})
    assert target == {"m1": {TopicPartition("t", 0), TopicPartition("t", 2)},
                      "m2": {TopicPartition("t", 1), TopicPartition("t", 3)}}


def test_keeps_current_owners_when_balanced():
    """A balanced current assignment is returned unchanged, however unusual."""
    current = {"m1": {TopicPartition("t", 2), TopicPartition("t", 3)}, "m2": {TopicPartition("t", 0), TopicPartition("t", 1)}}
    assert assign(current, {"m1": ["t"], "m2": ["t"]}, {"t": 4}) == current


def test_drops_invalid_current_partitions_and_picks_up_new_ones():
    """Partitions of deleted topics, unsubscribed topics or out of range are dropped; new ones placed."""
    current = {"m1": {TopicPartition("t", 0), TopicPartition("t", 7), TopicPartition("gone", 0)},
               "m2": {TopicPartition("u", 0), TopicPartition("t", 0)}}
    target = assign(current, {"m1": ["t"], "m2": ["t"]}, {"t": 4, "u": 1})
    assert TopicPartition("t", 0) in target["m1"]  # the first claimant in id order keeps it
    assert set().union(*target.values()) == all_partitions({"t": 4})
    assert [len(p) for p in target.values()] == [2, 2]


def test_topic_without_subscribers_is_not_assigned():
    """Only subscribed topics are assigned; a member subscribed to nothing gets nothing."""
    target = assign({}, {"m1": ["a"], "m2": []}, {"a": 2, "b": 3})
    assert target == {"m1": all_partitions({"a": 2}), "m2": frozenset()}


@settings(max_examples=150, deadline=None)
@given(members=member_ids, counts=partition_counts, seed=st.randoms(use_true_random=False))
def test_homogeneous_covers_every_partition_once_and_balances(members, counts, seed):
    """With one subscription, every partition goes to exactly one member and counts differ by at most one."""
    current = {m: set() for m in members}
    for tp in all_partitions(counts):
        if seed.random() < 0.7:
            current[seed.choice(members)].add(tp)  # an arbitrary, possibly unbalanced history
    target = assign(current, {m: TOPICS for m in members}, counts)
    assert set(target) == set(members)
    assert set(owner_map(target)) == all_partitions(counts)
    sizes = [len(p) for p in target.values()]
    assert max(sizes) - min(sizes) <= 1
    assert assign(target, {m: TOPICS for m in members}, counts) == target  # a fixpoint: nothing moves


@settings(max_examples=150, deadline=None)
@given(members=member_ids, counts=partition_counts, newcomer=st.text("pq", min_size=5, max_size=5))
def test_adding_a_member_moves_at_most_its_share(members, counts, newcomer):
    """When a member joins a balanced group, only the partitions it receives move (<= ceil(P/N))."""
    subscriptions = {m: TOPICS for m in members}
    before = assign({}, subscriptions, counts)
    after = assign(before, {**subscriptions, newcomer: TOPICS}, counts)
    total = len(all_partitions(counts))
    assert moved(before, after) == set(after[newcomer])
    assert len(after[newcomer]) <= math.ceil(total / (len(members) + 1))


@settings(max_examples=150, deadline=None)
@given(members=member_ids.filter(lambda m: len(m) >= 2), counts=partition_counts, data=st.data())
def test_removing_a_member_moves_only_its_partitions(members, counts, data):
    """When a member leaves a balanced group, only its own partitions move."""
    subscriptions = {m: TOPICS for m in members}
    before = assign({}, subscriptions, counts)
    gone = data.draw(st.sampled_from(members))
    after = assign(before, {m: t for m, t in subscriptions.items() if m != gone}, counts)
    old = owner_map(before)
    changed = {tp for tp, owner in owner_map(after).items() if old[tp] != owner}
    assert changed == set(before[gone])


@settings(max_examples=150, deadline=None)
@given(
    subscriptions=st.dictionaries(st.text("xyz", min_size=1, max_size=3),
                                  st.lists(st.sampled_from(TOPICS), unique=True, max_size=3), min_size=1, max_size=8),
    counts=partition_counts,
)
def test_heterogeneous_subscriptions(subscriptions, counts):
    """Each partition goes to one subscriber of its topic; members with equal subscriptions differ by at most one."""
    target = assign({}, subscriptions, counts)
    owners = owner_map(target)
    subscribed = {t for topics in subscriptions.values() for t in topics}
    assert set(owners) == all_partitions(counts, subscribed)
    for tp, member in owners.items():
        assert tp.topic in subscriptions[member]
    for a in subscriptions:
        for b in subscriptions:
            if set(subscriptions[a]) == set(subscriptions[b]):
                assert abs(len(target[a]) - len(target[b])) <= 1
    assert assign(target, subscriptions, counts) == target


@settings(max_examples=60, deadline=None)
@given(members=member_ids, counts=partition_counts, seed=st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(members, counts, seed):
    """The result depends on the inputs' content, not on dict or set order."""
    shuffled = list(members)
    seed.shuffle(shuffled)
    first = assign({}, {m: TOPICS for m in members}, counts)
    second = assign({}, {m: list(reversed(TOPICS)) for m in shuffled}, dict(reversed(list(counts.items()))))
    assert first == second


def test_new_partitions_spread_without_moving_old_ones():
    """Growing a topic from 4 to 8 partitions keeps the old owners and gives each member two new ones."""
    subscriptions = {"m1": ["t"], "m2": ["t"]}
    before = assign({}, subscriptions, {"t": 4})
    after = assign(before, subscriptions, {"t": 8})
    for member in subscriptions:
        assert before[member] <= after[member]
        assert len(after[member]) == 4
