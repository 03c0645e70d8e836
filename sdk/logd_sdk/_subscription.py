"""The consumer's per-partition state, kept in one place.

For each assigned TopicPartition: ``position`` (the next offset ``poll`` returns),
``fetch_position`` (the next offset to fetch; ahead of ``position`` while prefetched
data is buffered), a pending ``reset_to`` lookup, a sticky ``error`` that ``poll``
raises until the partition is seeked or reassigned, and an ``epoch`` that changes on
every seek or reset so that data fetched before it is dropped.

Manual ``assign`` sets the assignment directly; a group membership component (the
groups issue) will call :meth:`SubscriptionState.assign` with what the coordinator
hands out, and ``reset_to = "committed"`` makes the fetcher start from the group's
committed offsets.

Thread safety: not locked itself; the consumer's lock guards every access.
"""

from __future__ import annotations

import itertools
from typing import Iterable

from logd_sdk._errors import LogdError, NotAssignedError
from logd_sdk._types import TopicPartition

RESET_STRATEGIES = ("earliest", "latest", "none")
_epochs = itertools.count(1)


class PartitionState:
    """Fetch and position state of one assigned partition (see the module docstring)."""

    __slots__ = ("position", "fetch_position", "epoch", "reset_to", "error", "high_watermark", "log_start_offset")

    def __init__(self, reset_to: str) -> None:
        self.position: int | None = None
        self.fetch_position: int | None = None
        self.epoch = next(_epochs)
        self.reset_to: str | None = reset_to  # "committed", "earliest", "latest", "none" or None
        self.error: LogdError | None = None
        self.high_watermark = -1
        self.log_start_offset = -1

    @property
    def fetchable(self) -> bool:
        return self.fetch_position is not None and self.reset_to is None and self.error is None

    def seek(self, offset: int) -> None:
        self.position = self.fetch_position = offset
        self.reset_to = None
        self.error = None
        self.epoch = next(_epochs)

    def request_reset(self, strategy: str) -> None:
        self.position = self.fetch_position = None
        self.reset_to = strategy
        self.error = None
        self.epoch = next(_epochs)


class SubscriptionState:
    """The assignment and each partition's :class:`PartitionState`."""

    def __init__(self, auto_offset_reset: str, use_committed: bool) -> None:
        if auto_offset_reset not in RESET_STRATEGIES:
            raise ValueError(f"auto_offset_reset must be one of {RESET_STRATEGIES}, got {auto_offset_reset!r}")
        self.auto_offset_reset = auto_offset_reset
        self.use_committed = use_committed
        self.assignment: dict[TopicPartition, PartitionState] = {}

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment; partitions kept keep their state."""
        wanted = list(dict.fromkeys(partitions))
        initial = "committed" if self.use_committed else self.auto_offset_reset
        self.assignment = {tp: self.assignment.get(tp) or PartitionState(initial) for tp in wanted}

    def state(self, tp: TopicPartition) -> PartitionState:
        """The state of an assigned partition; NotAssignedError otherwise."""
        if not isinstance(tp, TopicPartition):
            raise TypeError(f"expected a TopicPartition, got {tp!r}")
        state = self.assignment.get(tp)
        if state is None:
            raise NotAssignedError(f"{tp.topic}-{tp.partition} is not assigned to this consumer; assign() it first")
        return state

    def partitions_or_all(self, partitions: Iterable[TopicPartition]) -> list[TopicPartition]:
        """The given partitions (checked to be assigned), or all when none are given."""
        given = list(partitions)
        if not given:
            return list(self.assignment)
        for tp in given:
            self.state(tp)
        return given

    def needing_reset(self) -> dict[TopicPartition, tuple[str, int]]:
        """Partitions with a pending position lookup: tp -> (strategy, epoch)."""
        return {tp: (s.reset_to, s.epoch) for tp, s in self.assignment.items() if s.reset_to is not None}

    def fetchable(self) -> list[tuple[TopicPartition, PartitionState]]:
        return [(tp, s) for tp, s in self.assignment.items() if s.fetchable]

    def first_error(self) -> tuple[TopicPartition, LogdError] | None:
        for tp, state in self.assignment.items():
            if state.error is not None:
                return tp, state.error
        return None
