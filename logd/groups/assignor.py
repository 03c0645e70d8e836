"""The sticky, balanced assignor: who should own which partition.

A pure, deterministic function (in the spirit of Kafka's ``UniformAssignor``, KIP-848)::

    assign(current, subscriptions, partition_counts) -> target

``current`` is the previous target assignment, ``subscriptions`` maps each member to the
topics it subscribes to, ``partition_counts`` gives each topic's partition count (0 or
missing: the topic does not exist). The result maps every member to a frozenset of
partitions; every partition of every subscribed topic goes to exactly one member
subscribed to its topic.

The algorithm, in three passes:

1. **Keep.** Each member keeps the partitions it had that are still valid (the topic
   exists, the partition is in range, the member still subscribes to the topic). A
   partition claimed by two members (a corrupt input) stays with the first member in
   member-id order.
2. **Place.** Every partition nobody kept, in (topic, partition) order, goes to the
   subscribed member with the fewest partitions (ties: smallest member id). Sorting by
   partition spreads each topic's partitions across members.
3. **Balance.** While some member R could take a partition from a member D holding at
   least two more (``count[D] >= count[R] + 2``, and R subscribes to the partition's
   topic), move one partition from D to R: R is the least loaded such member, D the most
   loaded one with a partition R can take. Each move lowers the sum of squared counts,
   so the loop ends; when it does, two members with the same subscription differ by at
   most one partition (any partition of one could move to the other). The moved
   partition is taken from the topic where D leads R the most, to keep topics spread.

Stickiness: pass 1 keeps everything valid and pass 3 moves only what balance needs, so
when one member joins a balanced homogeneous group only the partitions the new member
ends with move (at most ceil(P/N)), and when one leaves only its partitions move.
Cost: O(P log P) plus O(N log N + P_D) per move in a homogeneous group; heterogeneous
groups may scan member pairs, which is fine at the sizes a single broker serves.
"""

from __future__ import annotations

from collections import Counter
from typing import Collection, Mapping

from logd.groups.types import TopicPartition


def assign(
    current: Mapping[str, Collection[TopicPartition]],
    subscriptions: Mapping[str, Collection[str]],
    partition_counts: Mapping[str, int],
) -> dict[str, frozenset[TopicPartition]]:
    """Compute the target assignment (see the module docstring for the algorithm)."""
    members = sorted(subscriptions)
    topics_of = {
        member: frozenset(t for t in subscriptions[member] if partition_counts.get(t, 0) > 0)
        for member in members
    }
    owned: dict[str, set[TopicPartition]] = {member: set() for member in members}
    placed = _keep(current, members, topics_of, partition_counts, owned)
    _place(members, topics_of, partition_counts, owned, placed)
    _balance(members, topics_of, owned)
    return {member: frozenset(owned[member]) for member in members}


def _keep(current, members, topics_of, partition_counts, owned) -> set[TopicPartition]:
    placed: set[TopicPartition] = set()
    for member in members:
        for tp in sorted(current.get(member, ())):
            valid = tp.topic in topics_of[member] and 0 <= tp.partition < partition_counts[tp.topic]
            if valid and tp not in placed:
                owned[member].add(tp)
                placed.add(tp)
    return placed


def _place(members, topics_of, partition_counts, owned, placed) -> None:
    subscribers: dict[str, list[str]] = {}
    for member in members:
        for topic in topics_of[member]:
            subscribers.setdefault(topic, []).append(member)
    for topic in sorted(subscribers):
        eligible = subscribers[topic]
        for partition in range(partition_counts[topic]):
            tp = TopicPartition(topic, partition)
            if tp in placed:
                continue
            # Members are sorted, so min() breaks count ties by the smallest member id.
            receiver = min(eligible, key=lambda m: len(owned[m]))
            owned[receiver].add(tp)
            placed.add(tp)


def _balance(members, topics_of, owned) -> None:
    homogeneous = len(set(topics_of.values())) <= 1
    while True:
        move = _find_move(members, topics_of, owned, homogeneous)
        if move is None:
            return
        donor, receiver, tp = move
        owned[donor].remove(tp)
        owned[receiver].add(tp)


def _find_move(members, topics_of, owned, homogeneous):
    """The next (donor, receiver, partition) move, or None when balanced."""
    by_load = sorted(members, key=lambda m: (len(owned[m]), m))
    for receiver in by_load:
        for donor in reversed(by_load):
            if len(owned[donor]) - len(owned[receiver]) < 2:
                break
            movable = [tp for tp in owned[donor] if tp.topic in topics_of[receiver]]
            if movable:
                return donor, receiver, _pick(movable, owned[receiver])
        if homogeneous:
            # Every member can take any partition: if the least loaded member found no
            # donor two ahead of it, no other member will.
            return None
    return None


def _pick(movable: list[TopicPartition], receiver_owned: set[TopicPartition]) -> TopicPartition:
    """The partition to move: from the topic where the donor leads the receiver most."""
    donor_counts = Counter(tp.topic for tp in movable)
    receiver_counts = Counter(tp.topic for tp in receiver_owned)
    topic = max(sorted(donor_counts), key=lambda t: donor_counts[t] - receiver_counts[t])
    return max(tp for tp in movable if tp.topic == topic)
