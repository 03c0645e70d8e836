"""``GroupCoordinator``: the thread-safe service the gRPC layer calls.

It wraps :class:`~logd.groups.manager.GroupMetadataManager` with one lock, a clock and
an :class:`~logd.groups.offsets_log.OffsetsLog`. Every request, under the lock:

1. evicts members whose session ended (lazy expiry, so a request never sees a member
   the periodic :meth:`expire` has not caught yet);
2. runs the handler, which updates the state and returns its records;
3. appends the records to the log; and returns only once they, and every record
   appended before them, are durable: a commit is acknowledged after its offsets are, a
   heartbeat answer after the assignment it grants is (so a restart never forgets an
   assignment a member already acted on), and no answer shows state a crash could undo.

With a :class:`~logd.groups.offsets_log.PipelinedOffsetsLog` step 3 is split: the
records are written under the lock (so the log's order is the state's order) and the
wait for the fsync happens after the lock is released, so concurrent requests share
one fsync. Without it, ``append`` (durable) runs under the lock.

If an append fails the in-memory state is ahead of the log; the coordinator then stays
failed (nats-server's sticky write error) and answers every later request with
:class:`CoordinatorNotAvailableError` until the broker restarts and replays the log.

Construction replays the log (``OffsetsLog.read_all``) to rebuild the state.

Lock order: the coordinator lock is taken first; under it the coordinator calls
``partition_count``, ``log_end_offset`` and ``OffsetsLog.append``, which may take the
broker's and storage's locks. Those must never call into the coordinator.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Mapping, TypeVar

from logd.groups.errors import CoordinatorNotAvailableError
from logd.groups.manager import GroupMetadataManager, Records, new_member_id
from logd.groups.offsets_log import OFFSETS_TOPIC, OffsetsLog
from logd.groups.types import GroupDescription, HeartbeatResult, OffsetAndMetadata, TopicPartition

T = TypeVar("T")


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class GroupCoordinator:
    """All consumer groups of a broker. Thread-safe; every method takes the lock.

    ``partition_count(topic)``: partition count, 0 when the topic does not exist.
    ``log_end_offset(topic, partition)``: the end offset for lag, None when unknown.
    ``clock_ms``: a monotonic clock in ms (a fake one in tests).
    """

    def __init__(
        self,
        offsets_log: OffsetsLog,
        partition_count: Callable[[str], int],
        log_end_offset: Callable[[str, int], int | None],
        *,
        clock_ms: Callable[[], int] = monotonic_ms,
        member_id_factory: Callable[[], str] = new_member_id,
    ) -> None:
        self._lock = threading.Lock()
        self._log = offsets_log
        self._log_end_offset = log_end_offset
        self._clock_ms = clock_ms
        self._manager = GroupMetadataManager(partition_count, member_id_factory=member_id_factory)
        self._failure: BaseException | None = None
        self._pipelined = hasattr(offsets_log, "append_unflushed") and hasattr(offsets_log, "wait_durable")
        self._appended_token = 0  # token of the last pipelined append
        self._durable_token = 0  # every append up to it is known durable
        self._manager.replay(offsets_log.read_all(), clock_ms())

    # -- requests ---------------------------------------------------------------------

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        *,
        instance_id: str = "",
        subscribed_topics: Iterable[str] = (),
        owned_partitions: Iterable[TopicPartition] = (),
        session_timeout_ms: int = 0,
    ) -> HeartbeatResult:
        """See :meth:`GroupMetadataManager.heartbeat`."""
        return self._run(lambda now_ms: self._manager.heartbeat(
            group_id, member_id, member_epoch, now_ms=now_ms, instance_id=instance_id,
            subscribed_topics=subscribed_topics, owned_partitions=owned_partitions,
            session_timeout_ms=session_timeout_ms,
        ))

    def commit_offsets(
        self, group_id: str, member_id: str, member_epoch: int, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Validate, store durably, then return (raises FencedMemberError & co)."""
        self._run(lambda now_ms: self._manager.commit_offsets(group_id, member_id, member_epoch, offsets, now_ms=now_ms))

    def fetch_committed_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        return self._run(lambda now_ms: ([], self._manager.fetch_committed_offsets(group_id, partitions)))

    def list_groups(self) -> list[str]:
        return self._run(lambda now_ms: ([], self._manager.list_groups()))

    def describe_group(self, group_id: str) -> GroupDescription:
        return self._run(lambda now_ms: ([], self._manager.describe_group(group_id, self._log_end_offset)))

    def reset_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Refused with GroupNotEmptyError while the group has members; -1 removes."""
        self._run(lambda now_ms: self._manager.reset_offsets(group_id, offsets, now_ms=now_ms))

    def delete_group(self, group_id: str) -> None:
        """Refused with GroupNotEmptyError while the group has members."""
        self._run(lambda now_ms: self._manager.delete_group(group_id, now_ms=now_ms))

    def forget_topic(self, topic: str) -> None:
        """The topic was deleted: drop every group's committed offsets of it."""
        self._run(lambda now_ms: self._manager.forget_topics([topic]))

    def forget_missing_topics(self, exists: Callable[[str], bool]) -> None:
        """At start-up: drop the offsets of topics deleted before their offsets were
        (a crash between the two, or a broker older than this rule)."""
        self._run(lambda now_ms: self._manager.forget_topics(
            [topic for topic in self._manager.offset_topics() if not exists(topic)]))

    def expire(self) -> int:
        """Evict members whose session ended; returns how many records that wrote.
        Called every ~100 ms by the server's ticker."""
        with self._lock:
            self._check_not_failed_locked()
            records = self._manager.expire(self._clock_ms())
            self._append_locked(records)
            token = self._appended_token
        self._wait_durable(token)
        return len(records)

    # -- plumbing ---------------------------------------------------------------------

    def _run(self, handler: Callable[[int], tuple[Records, T]]) -> T:
        with self._lock:
            self._check_not_failed_locked()
            now_ms = self._clock_ms()
            records = self._manager.expire(now_ms)
            try:
                more, result = handler(now_ms)
            except BaseException as exc:
                # A request that failed may still have changed state first (a lazy
                # eviction): make that durable before reporting the failure.
                failure: BaseException | None = exc
                more = self._manager.take_records()
            else:
                failure = None
            self._append_locked(records + more)
            token = self._appended_token
        self._wait_durable(token)
        if failure is not None:
            raise failure
        return result

    def _check_not_failed_locked(self) -> None:
        if self._failure is not None:
            raise CoordinatorNotAvailableError(
                f"the group coordinator failed to write {OFFSETS_TOPIC}: {self._failure!r}; "
                "restart the broker") from self._failure

    def _append_locked(self, records: Records) -> None:
        if not records:
            return
        try:
            if self._pipelined:
                self._appended_token = max(self._appended_token, self._log.append_unflushed(records))
            else:
                self._log.append(records)
        except BaseException as exc:
            self._failure = exc
            raise

    def _wait_durable(self, token: int) -> None:
        """Outside the lock: wait until every append up to ``token`` is durable."""
        if token <= self._durable_token:
            return
        try:
            self._log.wait_durable(token)
        except BaseException as exc:
            self._failure = exc  # a plain store: the next request sees it under the lock
            raise
        with self._lock:
            self._durable_token = max(self._durable_token, token)
