"""Choosing a partition for a record.

- A key picks ``mmh3.hash(key, seed=0, signed=False) % partitions`` (the contract's
  formula; murmur3 x86 32-bit). The producer's ``send`` inlines this expression on its hot
  path; :func:`partition_for_key` is the reference the tests pin it against.
- Keyless records stick to one partition until ``batch_size`` bytes went to it, then move
  to another chosen at random (Kafka's KIP-794 uniform sticky partitioner): full batches,
  spread evenly over time.
- An explicit ``partition=`` wins over both.
"""

from __future__ import annotations

import random

import mmh3

murmur3 = mmh3.hash


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition of a keyed record: ``mmh3.hash(key, seed=0, signed=False) % partitions``."""
    return murmur3(key, 0, False) % partitions


class StickyPartitioner:
    """Partition choice for keyless records, per topic (see the module docstring).

    Thread safety: racing threads may both switch or both count; the only effect is a
    slightly uneven batch, so no lock is taken on this hot path.
    """

    __slots__ = ("_batch_size", "_sticky")

    def __init__(self, batch_size: int) -> None:
        self._batch_size = batch_size
        self._sticky: dict[str, list[int]] = {}  # topic -> [partition, bytes sent to it]

    def partition(self, topic: str, partitions: int, size: int) -> int:
        """The partition for a keyless record of ``size`` bytes on a topic of ``partitions``."""
        state = self._sticky.get(topic)
        if state is None or state[1] >= self._batch_size or state[0] >= partitions:
            state = self._sticky[topic] = [self._next(state, partitions), 0]
        state[1] += size
        return state[0]

    @staticmethod
    def _next(state: list[int] | None, partitions: int) -> int:
        if partitions == 1:
            return 0
        if state is None:
            return random.randrange(partitions)
        # Any partition but the current one, uniformly.
        choice = random.randrange(partitions - 1)
        return choice + 1 if choice >= state[0] else choice
