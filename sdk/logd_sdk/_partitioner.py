"""Choosing a partition for a record.

- A key picks ``mmh3.hash(key, seed=0, signed=False) % partitions`` (the contract's
  formula; murmur3 x86 32-bit). The producer's ``send`` inlines this expression on its hot
  path; :func:`partition_for_key` is the reference the tests pin it against.
- Keyless records stick to one partition for one batch: once the batch they filled there
  closes (it filled up, or the sender took it after ``linger_ms`` or a flush), or
  ``batch_size`` bytes went to it, the next keyless record moves to another partition
  chosen at random (Kafka's sticky partitioner, KIP-480, with KIP-794's byte bound).
  Busy producers send full batches spread evenly over time; a slow one (a record now and
  then, each sent alone) still spreads its records over every partition.
- An explicit ``partition=`` wins over both.
"""

from __future__ import annotations

import random
from typing import Any

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
        # topic -> [partition, bytes sent to it, the batch its last record went into]
        self._sticky: dict[str, list] = {}

    def partition(self, topic: str, partitions: int, size: int) -> int:
        """The partition for a keyless record of ``size`` bytes on a topic of ``partitions``."""
        state = self._sticky.get(topic)
        if state is None or state[1] >= self._batch_size or state[0] >= partitions \
                or (state[2] is not None and state[2].closed):
            state = self._sticky[topic] = [self._next(state, partitions), 0, None]
        state[1] += size
        return state[0]

    def filling(self, topic: str, batch: Any) -> None:
        """Note the batch (anything with a ``closed`` flag) that took the topic's last
        keyless record: when it closes, the next keyless record moves on."""
        state = self._sticky.get(topic)
        if state is not None:
            state[2] = batch

    @staticmethod
    def _next(state: list | None, partitions: int) -> int:
        if partitions == 1:
            return 0
        if state is None:
            return random.randrange(partitions)
        # Any partition but the current one, uniformly.
        choice = random.randrange(partitions - 1)
        return choice + 1 if choice >= state[0] else choice
