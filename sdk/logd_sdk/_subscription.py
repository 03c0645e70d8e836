"""The consumer's per-partition state, kept in one place.

For each assigned TopicPartition: ``position`` (the next offset ``poll`` returns),
``fetch_position`` (the next offset to fetch; ahead of ``position`` while prefetched
data is buffered), a pending ``reset_to`` lookup, a sticky ``error`` that ``poll``
raises until the partition is seeked or reassigned, an ``epoch`` that changes on
every seek or reset so that data fetched before it is dropped, and ``retry_at``: after
a retriable error of its own (a fetch answered STORAGE_ERROR or UNAVAILABLE for it, a
failed offset lookup) the partition is neither fetched nor looked up until then, with
exponential backoff, while the other partitions carry on.

Two ways to get partitions (Kafka's rule: one or the other, not both):

* manual ``assign`` (:meth:`SubscriptionState.assign`) sets the assignment directly;
* ``subscribe`` records the topics (:attr:`SubscriptionState.topics`) and the group
  membership component (``_membership``) drives :meth:`add`, :meth:`start_revoking`,
  :meth:`release` and :meth:`drop_all` with what the coordinator hands out.

With a ``group_id`` new partitions start with ``reset_to = "committed"``: the fetcher
looks up the group's committed offset and falls back to ``auto_offset_reset``.

Revocation is in two steps. :meth:`start_revoking` moves a partition from
``assignment`` to ``revoking`` at once: the fetcher never sees it again and buffered
or in-flight data for it is dropped (``drain`` skips partitions missing from
``assignment``), so ``poll`` returns none of its records from then on; its position
stays, for the commit that precedes the release. :meth:`release` then forgets it.

Thread safety: not locked itself; the consumer's lock guards every access.
"""

from __future__ import annotations

import itertools
from typing import Iterable

from logd_sdk._errors import (
    IllegalStateError,
    LogdError,
    NotAssignedError,
    PartitionNotFoundError,
    TopicNotFoundError,
)
from logd_sdk._transport import backoff_s
from logd_sdk._types import TopicPartition

RESET_STRATEGIES = ("earliest", "latest", "none")
#: The longest a partition waits after its own retriable errors before it is tried again.
MAX_PARTITION_BACKOFF_MS = 1000
#: A partition's topic (or the partition) does not exist now: see ``SubscriptionState.lose_topic``.
TOPIC_GONE = (TopicNotFoundError, PartitionNotFoundError)
_epochs = itertools.count(1)

NONE, MANUAL, SUBSCRIBED = "none", "manual", "subscribed"


class PartitionState:
    """Fetch and position state of one assigned partition (see the module docstring)."""

    __slots__ = ("position", "fetch_position", "epoch", "reset_to", "error", "high_watermark", "log_start_offset",
                 "retry_at", "retries")

    def __init__(self, reset_to: str) -> None:
        self.position: int | None = None
        self.fetch_position: int | None = None
        self.epoch = next(_epochs)
        self.reset_to: str | None = reset_to  # "committed", "earliest", "latest", "none" or None
        self.error: LogdError | None = None
        self.high_watermark = -1
        self.log_start_offset = -1
        self.retry_at = 0.0  # monotonic; see the module docstring
        self.retries = 0

    def back_off(self, now: float, backoff_ms: int) -> None:
        """A retriable error of this partition's: skip it until a backoff has passed."""
        self.retry_at = now + backoff_s(self.retries, backoff_ms, MAX_PARTITION_BACKOFF_MS)
        self.retries += 1

    def clear_backoff(self) -> None:
        self.retry_at, self.retries = 0.0, 0

    @property
    def fetchable(self) -> bool:
        return self.fetch_position is not None and self.reset_to is None and self.error is None

    @property
    def wants_fetcher(self) -> bool:
        """A position to look up or data to fetch (backing off or not)."""
        return self.reset_to is not None or self.fetchable

    def seek(self, offset: int) -> None:
        self.position = self.fetch_position = offset
        self.reset_to = None
        self.error = None
        self.epoch = next(_epochs)
        self.clear_backoff()

    def request_reset(self, strategy: str) -> None:
        self.position = self.fetch_position = None
        self.reset_to = strategy
        self.error = None
        self.epoch = next(_epochs)
        self.clear_backoff()


class SubscriptionState:
    """The assignment, each partition's :class:`PartitionState`, and the subscription."""

    def __init__(self, auto_offset_reset: str, use_committed: bool) -> None:
        if auto_offset_reset not in RESET_STRATEGIES:
            raise ValueError(f"auto_offset_reset must be one of {RESET_STRATEGIES}, got {auto_offset_reset!r}")
        self.auto_offset_reset = auto_offset_reset
        self.use_committed = use_committed
        self.assignment: dict[TopicPartition, PartitionState] = {}
        # Owned partitions being revoked: not fetched, not returned, position kept.
        self.revoking: dict[TopicPartition, PartitionState] = {}
        self.mode = NONE
        self.topics: tuple[str, ...] = ()

    # -- how partitions are chosen -----------------------------------------------------

    def set_mode(self, mode: str) -> None:
        """Enter ``mode`` (MANUAL or SUBSCRIBED); IllegalStateError when the other is on."""
        if self.mode not in (NONE, mode):
            other = "assign()" if self.mode == MANUAL else "subscribe()"
            raise IllegalStateError(f"this consumer already uses {other}: call unsubscribe() before switching")
        self.mode = mode

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment; partitions kept keep their state."""
        wanted = list(dict.fromkeys(partitions))
        self.assignment = {tp: self.assignment.get(tp) or PartitionState(self._initial()) for tp in wanted}

    def _initial(self) -> str:
        return "committed" if self.use_committed else self.auto_offset_reset

    # -- group membership (see the module docstring) -------------------------------------

    def owned(self) -> set[TopicPartition]:
        """Every partition the group member owns: assigned or being revoked."""
        return set(self.assignment) | set(self.revoking)

    def add(self, tp: TopicPartition) -> bool:
        """Own ``tp`` again or anew; True when it is new (not taken back from revoking)."""
        state = self.revoking.pop(tp, None)
        if state is None:
            self.assignment.setdefault(tp, PartitionState(self._initial()))
            return True
        # Its buffered data was dropped: fetch again from what poll returned last.
        if state.position is not None:
            state.seek(state.position)
        else:
            state.request_reset(self._initial())
        self.assignment[tp] = state
        return False

    def start_revoking(self, tp: TopicPartition) -> None:
        """Stop fetching and returning ``tp``; keep its position for the final commit."""
        state = self.assignment.pop(tp)
        state.reset_to = None  # nothing to look up any more: no position means nothing to commit
        state.epoch = next(_epochs)
        self.revoking[tp] = state

    def release(self, tp: TopicPartition) -> bool:
        """Forget a revoked partition; False when it was not being revoked any more."""
        return self.revoking.pop(tp, None) is not None

    def drop_all(self) -> list[TopicPartition]:
        """Forget every owned partition at once (lost, or unsubscribed); returns them."""
        dropped = sorted(self.owned())
        self.assignment = {}
        self.revoking = {}
        return dropped

    def positions(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Known positions of owned partitions (all, or those given)."""
        owned = {**self.revoking, **self.assignment}
        wanted = owned if partitions is None else {tp: owned[tp] for tp in partitions if tp in owned}
        return {tp: state.position for tp, state in wanted.items() if state.position is not None}

    # -- lookups -------------------------------------------------------------------------

    def state(self, tp: TopicPartition) -> PartitionState:
        """The state of an assigned partition; NotAssignedError otherwise."""
        if not isinstance(tp, TopicPartition):
            raise TypeError(f"expected a TopicPartition, got {tp!r}")
        state = self.assignment.get(tp)
        if state is None:
            how = "it is not in the group's assignment" if self.mode == SUBSCRIBED else "assign() it first"
            raise NotAssignedError(f"{tp.topic}-{tp.partition} is not assigned to this consumer; {how}")
        return state

    def partitions_or_all(self, partitions: Iterable[TopicPartition]) -> list[TopicPartition]:
        """The given partitions (checked to be assigned), or all when none are given."""
        given = list(partitions)
        if not given:
            return list(self.assignment)
        for tp in given:
            self.state(tp)
        return given

    def needing_reset(self, now: float | None = None) -> dict[TopicPartition, tuple[str, int]]:
        """Partitions with a pending position lookup: tp -> (strategy, epoch); with ``now``,
        not those backing off."""
        return {tp: (s.reset_to, s.epoch) for tp, s in self.assignment.items()
                if s.reset_to is not None and (now is None or s.retry_at <= now)}

    def fetchable(self, now: float | None = None) -> list[tuple[TopicPartition, PartitionState]]:
        """Partitions to fetch; with ``now``, not those backing off."""
        return [(tp, s) for tp, s in self.assignment.items() if s.fetchable and (now is None or s.retry_at <= now)]

    def next_retry_at(self) -> float | None:
        """When the first partition backing off may be fetched or looked up again."""
        return min((s.retry_at for s in self.assignment.values() if s.retry_at and s.wants_fetcher), default=None)

    def lose_topic(self, tp: TopicPartition, error: LogdError, now: float, backoff_ms: int) -> None:
        """``tp``'s topic or partition does not exist now (deleted, perhaps being created
        again): ``error`` is for ``poll`` to report once (it was sticky, and blocked every
        other partition for good); meanwhile the position is looked up again after a
        backoff, from the committed offset or ``auto_offset_reset``, so the consumer
        resumes once the topic is back. Kafka retries UNKNOWN_TOPIC_OR_PARTITION alike."""
        state = self.assignment[tp]
        retries = state.retries
        state.request_reset(self._initial())
        state.retries = retries
        state.back_off(now, backoff_ms)
        state.error = error

    def take_error(self) -> LogdError | None:
        """The first partition's error, for ``poll`` to raise. A missing topic's (see
        ``lose_topic``) is reported once; the others stay until a seek or reset."""
        for state in self.assignment.values():
            error = state.error
            if error is not None:
                if isinstance(error, TOPIC_GONE):
                    state.error = None
                return error
        return None
