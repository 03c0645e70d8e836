"""Consumer: reads records of assigned partitions, prefetching in the background.

The consumer keeps every partition's position in a :class:`SubscriptionState` and owns a
:class:`Fetcher` thread that fills a bounded buffer; ``poll`` decodes from that buffer.
Partitions come from manual ``assign`` or from ``subscribe``: then a
:class:`~logd_sdk._membership.GroupMembership` heartbeats in its own thread and drives
the assignment (KIP-848; see that module for the protocol and the callbacks).

``poll`` does the group work of the application's thread first: it runs queued
``on_assign``/``on_revoke`` callbacks and revocations (commit, callback, release), and
the auto-commit when ``auto_commit_interval_ms`` has passed, committing the positions
reached by the records returned so far (Kafka's at-least-once rule: records returned by
one poll count as processed when the next poll starts). Commits made while subscribed
carry the member's id and epoch; a manually assigned consumer commits with member id ""
and epoch -1, which the broker accepts only while the group has no members.

Thread safety: every public method may be called from any thread; one condition
(``self._lock``) guards the subscription state, the membership state and the fetch
buffer, and no RPC or callback runs while it is held. ``close`` wakes a ``poll`` blocked
in another thread (it returns []).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, Iterator, Mapping

from logd_sdk._errors import (
    FencedMemberError,
    IllegalStateError,
    InvalidGroupIdError,
    LogdError,
    NotAssignedError,
    UnknownMemberError,
)
from logd_sdk._fetcher import EARLIEST, LATEST, Fetcher, fetch_committed, list_offsets
from logd_sdk._membership import GroupMembership
from logd_sdk._subscription import MANUAL, NONE, SUBSCRIBED, SubscriptionState
from logd_sdk._transport import Transport
from logd_sdk._types import Record, TopicPartition
from logd_sdk.protocol import groups_pb2, topics_pb2

log = logging.getLogger("logd_sdk.consumer")

#: The most close() gives its commit and its leave each (capped by request_timeout_ms):
#: with the broker down, close() used to wait default_api_timeout_ms (60 s) to commit.
CLOSE_TIMEOUT_MS = 5000


def _flatten(partitions: tuple) -> list[TopicPartition]:
    """``f(tp1, tp2)`` or ``f([tp1, tp2])`` both mean the same partitions."""
    if len(partitions) == 1 and isinstance(partitions[0], (list, tuple, set, frozenset)):
        partitions = tuple(partitions[0])
    for tp in partitions:
        if not isinstance(tp, TopicPartition):
            raise TypeError(f"expected TopicPartition objects, got {tp!r}")
    return list(partitions)


class Consumer:
    """Reads records from logd partitions.

    ``auto_offset_reset`` ("earliest", "latest", "none") says where to start without a
    committed offset and what to do when the position falls out of range ("none": poll
    raises OffsetOutOfRangeError). ``group_id`` enables ``subscribe``, ``commit`` and
    ``committed`` and makes assigned partitions start from the group's committed offsets.
    ``enable_auto_commit`` commits every ``auto_commit_interval_ms`` (inside ``poll``),
    before a partition is revoked and on ``close``. ``session_timeout_ms`` (0: the broker's
    10000) is how long the broker waits for a heartbeat before evicting the member;
    ``heartbeat_interval_ms`` is accepted for Kafka compatibility but the broker sets the
    interval (KIP-848). ``group_instance_id`` makes the member static: a restart within the
    session timeout gets its partitions back. Fetch sizes are bytes as stored (before
    decompression): ``max_partition_fetch_bytes`` per partition (1 MiB, Kafka's default)
    and ``fetch_max_bytes`` per response (4 MiB). These consumed 5-10% faster here than
    the earlier 4 MiB per partition and 8 MiB per response (smaller responses keep the
    decoding in the CPU's cache), and at most two responses wait, decompressed.
    """

    def __init__(self, bootstrap: str = "127.0.0.1:7070", group_id: str | None = None, *,
                 auto_offset_reset: str = "latest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000, max_poll_records: int = 500,
                 session_timeout_ms: int = 45000, heartbeat_interval_ms: int = 3000,
                 group_instance_id: str | None = None, fetch_min_bytes: int = 1, fetch_max_wait_ms: int = 500,
                 fetch_max_bytes: int = 4 * 1024 * 1024, max_partition_fetch_bytes: int = 1024 * 1024,
                 check_crcs: bool = True, request_timeout_ms: int = 30000, default_api_timeout_ms: int = 60000,
                 retry_backoff_ms: int = 100) -> None:
        if group_id is not None and (not isinstance(group_id, str) or not group_id):
            raise ValueError(f"group_id must be a non-empty str or None, got {group_id!r}")
        if isinstance(max_poll_records, bool) or not isinstance(max_poll_records, int) or max_poll_records < 1:
            raise ValueError(f"max_poll_records must be a positive int, got {max_poll_records!r}")
        self._subs = SubscriptionState(auto_offset_reset, use_committed=group_id is not None)
        self._transport = Transport(bootstrap, request_timeout_ms=request_timeout_ms,
                                    api_timeout_ms=default_api_timeout_ms, retry_backoff_ms=retry_backoff_ms)
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self._enable_auto_commit = enable_auto_commit
        self._auto_commit_interval_ms = auto_commit_interval_ms
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._request_timeout_ms = request_timeout_ms
        self._retry_backoff_ms = retry_backoff_ms
        self._max_poll_records = max_poll_records
        self._membership: GroupMembership | None = None
        self._last_committed: dict[TopicPartition, int] = {}
        self._next_auto_commit_at = time.monotonic() + auto_commit_interval_ms / 1000.0
        self._lock = threading.Condition(threading.Lock())
        self._closed = False
        self._closing_thread: int | None = None  # the thread running close(); _close_done once it finished
        self._close_done = threading.Event()
        self._iter_buffer: list[Record] = []
        self._iter_index = 0
        self._fetcher = Fetcher(self._transport, self._subs, self._lock, group_id=group_id,
                                fetch_min_bytes=fetch_min_bytes, fetch_max_wait_ms=fetch_max_wait_ms,
                                fetch_max_bytes=fetch_max_bytes, max_partition_fetch_bytes=max_partition_fetch_bytes,
                                check_crcs=check_crcs, request_timeout_ms=request_timeout_ms,
                                retry_backoff_ms=retry_backoff_ms)
        self._fetcher.start()

    # -- assignment -----------------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions (replacing any previous assignment).

        IllegalStateError while subscribed (call ``unsubscribe`` first)."""
        partitions = _flatten((list(partitions),))
        with self._lock:
            self._check_open_locked()
            self._subs.set_mode(MANUAL)
            kept = set(partitions)
            self._drop_unread_locked([tp for tp in self._unread_offsets_locked() if tp not in kept])
            self._subs.assign(partitions)
            if not partitions:
                self._subs.mode = NONE
            self._fetcher.wakeup_locked()

    def assignment(self) -> set[TopicPartition]:
        """The partitions currently assigned (for a group member: not those being revoked)."""
        with self._lock:
            return set(self._subs.assignment)

    def subscribe(self, topics: Iterable[str], on_assign: Callable[[list[TopicPartition]], object] | None = None,
                  on_revoke: Callable[[list[TopicPartition]], object] | None = None) -> None:
        """Join ``group_id`` and consume the partitions the group assigns to this member.

        ``on_assign(partitions)`` and ``on_revoke(partitions)`` run in the thread calling
        ``poll``: on_assign before any record of a new partition is returned, on_revoke
        after the revoked partitions' positions were committed (auto-commit) and before
        they are released to their next owner, on ``close``/``unsubscribe``, and when
        the partitions were lost (fenced or the session expired; nothing committed then).
        Calling it again replaces the topics and callbacks. Raises InvalidGroupIdError
        without a ``group_id`` and IllegalStateError after ``assign``.
        """
        if isinstance(topics, str):
            raise TypeError(f"subscribe() takes a list of topic names, got the str {topics!r}")
        topics = list(topics)
        for topic in topics:
            if not isinstance(topic, str) or not topic:
                raise TypeError(f"topic names must be non-empty str, got {topic!r}")
        for callback in (on_assign, on_revoke):
            if callback is not None and not callable(callback):
                raise TypeError(f"callbacks must be callable, got {callback!r}")
        group_id = self._require_group("subscribe")
        if not topics:
            self.unsubscribe()
            return
        with self._lock:
            self._check_open_locked()
            self._subs.set_mode(SUBSCRIBED)
            if self._membership is None:
                self._membership = GroupMembership(
                    self._transport, group_id, self._subs, self._lock, self._fetcher.wakeup_locked, self._commit_sync,
                    auto_commit=self._enable_auto_commit, session_timeout_ms=self._session_timeout_ms,
                    group_instance_id=self.group_instance_id, request_timeout_ms=self._request_timeout_ms,
                    retry_backoff_ms=self._retry_backoff_ms)
            self._membership.subscribe_locked(topics, on_assign, on_revoke)

    def subscription(self) -> set[str]:
        """The subscribed topics (empty when not subscribed)."""
        with self._lock:
            return set(self._subs.topics) if self._subs.mode == SUBSCRIBED else set()

    def unsubscribe(self) -> None:
        """Drop every partition; a group member commits (auto-commit), calls on_revoke and
        leaves the group at once."""
        with self._lock:
            subscribed = self._subs.mode == SUBSCRIBED
            self._give_back_unread_locked()
        try:
            if subscribed and self._membership is not None:
                self._membership.leave()  # re-raises an on_revoke's exception, once left
        finally:
            with self._lock:
                self._subs.assign([])
                self._subs.mode = NONE
                self._fetcher.wakeup_locked()

    def partitions_for_topic(self, topic: str) -> set[int]:
        """The partition numbers of a topic (TopicNotFoundError if it does not exist)."""
        response = self._transport.call(self._transport.topics.DescribeTopic, topics_pb2.DescribeTopicRequest(name=topic))
        return {p.partition for p in response.partitions}

    # -- reading --------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> list[Record]:
        """Records from the assigned partitions, waiting up to ``timeout_ms`` for the first.

        Returns at most ``max_records`` (default ``max_poll_records``), in offset order per
        partition; [] when nothing arrived in time. Runs the group callbacks and the
        auto-commit first (see the module docstring). Raises a partition's sticky error
        (OffsetOutOfRangeError with auto_offset_reset "none", CorruptRecordError, ...)
        until it is seeked or unassigned; TopicNotFoundError/PartitionNotFoundError once
        per failed lookup of a missing topic (it is looked up again after a backoff, the
        other partitions go on); the first exception a group callback raised; and
        NotAssignedError when nothing is assigned and nothing subscribed.
        """
        limit = self._max_poll_records if max_records is None else max_records
        if limit < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
        membership = None
        while True:
            if membership is not None:
                membership.run_events()
            self._maybe_auto_commit()
            with self._lock:
                self._check_open_locked()
                membership = self._membership if self._subs.mode == SUBSCRIBED else None
                if membership is not None:
                    membership.check_locked()
                    if membership.has_events_locked():
                        continue
                elif not self._subs.assignment:
                    raise NotAssignedError("no partitions are assigned: call assign() or subscribe() first")
                error = self._subs.take_error()
                if error is not None:
                    raise error.with_traceback(None)
                records = self._fetcher.drain_locked(limit)
                if records:
                    return records
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0 or self._closed:
                    return []
                if self._auto_commit_on():
                    remaining = min(remaining, max(0.001, self._next_auto_commit_at - now))
                self._lock.wait(remaining)
                if self._closed:
                    return []

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        """The next record, polling as long as it takes; StopIteration once closed.
        ``position``, ``commit`` and ``close`` count only the records yielded so far."""
        while self._iter_index >= len(self._iter_buffer):
            if self._closed:
                raise StopIteration
            self._iter_buffer = self.poll(timeout_ms=1000)
            self._iter_index = 0
        record = self._iter_buffer[self._iter_index]
        self._iter_index += 1
        return record

    # -- positions ------------------------------------------------------------------------

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next poll of ``partition`` start at ``offset`` (ValueError if negative)."""
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, got {offset!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        with self._lock:
            self._check_open_locked()
            self._subs.state(partition).seek(offset)
            self._drop_unread_locked([partition])
            self._fetcher.wakeup_locked()

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Start the given partitions (all assigned ones if none) at their log start offset."""
        self._request_reset(_flatten(partitions), "earliest")

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Start the given partitions (all assigned ones if none) at their log end offset."""
        self._request_reset(_flatten(partitions), "latest")

    def _request_reset(self, partitions: list[TopicPartition], strategy: str) -> None:
        with self._lock:
            self._check_open_locked()
            reset = self._subs.partitions_or_all(partitions)
            for tp in reset:
                self._subs.state(tp).request_reset(strategy)
            self._drop_unread_locked(reset)
            self._fetcher.wakeup_locked()

    def position(self, partition: TopicPartition) -> int:
        """The offset of the next record ``poll`` returns for ``partition`` (also inside
        ``on_revoke`` for the partitions being revoked)."""
        deadline = time.monotonic() + self._transport.api_timeout_ms / 1000.0
        while True:
            with self._lock:
                self._check_open_locked()
                unread = self._unread_offsets_locked().get(partition)
                if unread is not None:
                    return unread  # the iterator holds it, not yet yielded
                revoking = self._subs.revoking.get(partition)
                if revoking is not None and revoking.position is not None:
                    return revoking.position
                state = self._subs.state(partition)
                if state.error is not None:
                    raise state.error.with_traceback(None)
                if state.position is not None and state.reset_to is None:
                    return state.position
                now = time.monotonic()
                if now > deadline:
                    raise IllegalStateError(f"no position for {partition.topic}-{partition.partition}")
                if now < state.retry_at:  # its lookup failed retriably: back off
                    self._lock.wait(min(state.retry_at, deadline) - now)
                    continue
                pending = {partition: (state.reset_to, state.epoch)}
            self._fetcher.resolve_positions(pending)  # type: ignore[arg-type]

    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]) -> dict[TopicPartition, int | None]:
        """The first offset with a timestamp at or after each given time (ms); None if none."""
        queries = {}
        for tp, ts in timestamps.items():
            if not isinstance(tp, TopicPartition):
                raise TypeError(f"expected TopicPartition keys, got {tp!r}")
            if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
                raise ValueError(f"timestamp for {tp.topic}-{tp.partition} must be an int >= 0 (ms), got {ts!r}")
            queries[tp] = ts
        return {tp: (None if offset < 0 else offset) for tp, offset in self._lookup(queries).items()}

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The log start offset of each partition."""
        return self._lookup({tp: EARLIEST for tp in _flatten((list(partitions),))})

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The log end offset (next offset to be written) of each partition."""
        return self._lookup({tp: LATEST for tp in _flatten((list(partitions),))})

    def _lookup(self, queries: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        if not queries:
            return {}
        out = {}
        for tp, (offset, error) in list_offsets(self._transport, queries).items():
            if error is not None:
                raise error
            out[tp] = offset
        return out

    # -- committed offsets ----------------------------------------------------------------

    def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset for ``partition`` (None if nothing is committed)."""
        group_id = self._require_group("committed")
        return fetch_committed(self._transport, group_id, [partition])[partition]

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit the next offsets to read (default: the current positions) for the group.

        Raises FencedMemberError when the group's coordinator refuses the commit: this
        member no longer owns a partition (revoked, or lost after an eviction), or a
        manually assigned consumer commits while the group has members.
        """
        self._commit(offsets, timeout_ms=None)

    def _commit(self, offsets: Mapping[TopicPartition, int] | None, timeout_ms: int | None) -> None:
        self._require_group("commit")
        with self._lock:
            self._check_open_locked()
            if self._membership is not None and self._subs.mode == SUBSCRIBED:
                self._membership.check_session_locked()
                if offsets is None:
                    lost = {tp: position for tp, position in self._membership.take_lost_positions_locked().items()
                            if self._last_committed.get(tp) != position}
                    if lost:
                        raise FencedMemberError(
                            f"group {self.group_id}: {', '.join(f'{tp.topic}-{tp.partition}' for tp in sorted(lost))} "
                            "were lost (this member was evicted: no heartbeat within session_timeout_ms) before "
                            "their positions were committed; their new owner resumes from the last commit")
            if offsets is None:
                offsets = self._subs.positions()
                for tp, unread in self._unread_offsets_locked().items():
                    if tp in offsets:
                        offsets[tp] = unread  # the iterator holds it, not yet yielded
        checked: dict[TopicPartition, int] = {}
        for tp, offset in offsets.items():
            if not isinstance(tp, TopicPartition):
                raise TypeError(f"expected TopicPartition keys, got {tp!r}")
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset for {tp} must be an int >= 0, got {offset!r}")
            checked[tp] = offset
        self._commit_sync(checked, timeout_ms=timeout_ms)

    def _commit_sync(self, offsets: Mapping[TopicPartition, int], timeout_ms: int | None = None) -> None:
        """One CommitOffsets call with this consumer's group identity (see the module docstring)."""
        if not offsets:
            return
        entries = [groups_pb2.CommitOffsetsRequest.Offset(topic=tp.topic, partition=tp.partition, offset=offset)
                   for tp, offset in offsets.items()]
        with self._lock:
            membership = self._membership if self._subs.mode == SUBSCRIBED else None
            identity = membership.identity_locked() if membership is not None else ("", -1, 0)
        retried = False
        while True:
            member_id, epoch, generation = identity
            request = groups_pb2.CommitOffsetsRequest(group_id=self.group_id, member_id=member_id,
                                                      member_epoch=epoch, offsets=entries)
            try:
                self._transport.call(self._transport.groups.CommitOffsets, request, timeout_ms=timeout_ms)
                break
            except (FencedMemberError, UnknownMemberError) as exc:
                with self._lock:
                    fresh = membership.identity_locked() if membership is not None else identity
                    still_owned = set(offsets) <= self._subs.owned()
                if fresh[1] != epoch and fresh[2] == generation and still_owned and not retried:
                    # The member's epoch moved on while the commit was on its way (one
                    # assignment change after another): the coordinator accepts only the
                    # current and previous epochs. Once more with the current one, as
                    # Kafka's client does on STALE_MEMBER_EPOCH; a second refusal stands.
                    # Not after a loss or a leave (the generation): the partitions may have
                    # been committed further by another owner meanwhile.
                    identity, retried = fresh, True
                    continue
                if membership is not None:
                    membership.commit_fenced()
                # An evicted member is unknown to the broker: to the application it is fenced.
                raise FencedMemberError(str(exc)) from None
        with self._lock:
            self._last_committed.update(offsets)

    def _auto_commit_on(self) -> bool:
        return self.group_id is not None and self._enable_auto_commit

    def _maybe_auto_commit(self) -> None:
        """Commit the positions that moved, once ``auto_commit_interval_ms`` has passed."""
        if not self._auto_commit_on() or time.monotonic() < self._next_auto_commit_at:
            return
        with self._lock:
            if self._closed:
                return
            self._next_auto_commit_at = time.monotonic() + self._auto_commit_interval_ms / 1000.0
            offsets = {tp: offset for tp, offset in self._subs.positions(self._subs.assignment).items()
                       if self._last_committed.get(tp) != offset}
        try:
            self._commit_sync(offsets, timeout_ms=min(self._request_timeout_ms, max(1000, self._auto_commit_interval_ms)))
        except LogdError as exc:
            log.warning("auto-commit failed: %s", exc)

    def _require_group(self, what: str) -> str:
        if self.group_id is None:
            raise InvalidGroupIdError(f"{what}() needs a Consumer created with a group_id")
        return self.group_id

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop fetching and close the channel. Idempotent; a call while another thread
        closes waits for it. A group member commits (with auto-commit), calls on_revoke
        and leaves the group at once (a static member keeps its partitions for
        ``session_timeout_ms``); a manually assigned consumer with a group_id commits its
        positions with auto-commit. The commit and the leave get ``CLOSE_TIMEOUT_MS``
        each at most (not ``default_api_timeout_ms``), so that close() with the broker
        down returns within seconds."""
        with self._lock:
            first = self._closing_thread is None
            if first:
                self._closing_thread = threading.get_ident()
                subscribed = self._subs.mode == SUBSCRIBED
                self._give_back_unread_locked()
            elif self._closing_thread == threading.get_ident():
                return  # from a callback of this close (on_revoke): it is under way
        if not first:  # two closes used to run on_revoke and commit twice
            self._close_done.wait()
            return
        try:
            timeout_ms = min(self._request_timeout_ms, CLOSE_TIMEOUT_MS)
            if subscribed and self._membership is not None:
                try:
                    self._membership.leave(commit_timeout_ms=timeout_ms)
                except Exception:
                    log.exception("leaving the group on close failed")
            elif self._auto_commit_on():
                try:
                    self._commit(None, timeout_ms=timeout_ms)
                except LogdError as exc:
                    log.warning("commit on close failed: %s", exc)
            if self._membership is not None:
                self._membership.stop()
            with self._lock:
                self._closed = True
                self._fetcher.close_locked()
            # The transport first: an offset lookup the fetcher is retrying against a
            # broker that is down ends at once (else close() waited for the join).
            self._transport.close()
            self._fetcher.join(5.0)
        finally:
            self._close_done.set()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open_locked(self) -> None:
        if self._closed:
            raise IllegalStateError("the consumer is closed")

    # -- the iterator's records -------------------------------------------------------------
    # ``__next__`` yields one record at a time from a whole poll's records, and that poll
    # already moved each partition's position past all of them. So wherever positions are
    # read or changed, the records not yet yielded count: ``position`` and ``commit`` use
    # the first of them, ``seek`` and the resets drop only the partitions they move,
    # ``assign`` only the partitions it drops, and ``close``/``unsubscribe`` move the
    # positions back to them before the last commit (else a consumer breaking out of its
    # loop committed, and lost, up to ``max_poll_records`` records it never saw).

    def _unread_offsets_locked(self) -> dict[TopicPartition, int]:
        """The offset of the first record not yet yielded, per partition (a poll's records
        are in offset order per partition)."""
        unread: dict[TopicPartition, int] = {}
        for record in self._iter_buffer[self._iter_index:]:
            unread.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        return unread

    def _drop_unread_locked(self, partitions: Iterable[TopicPartition]) -> None:
        dropped = {(tp.topic, tp.partition) for tp in partitions}
        if dropped:
            self._iter_buffer = [r for r in self._iter_buffer[self._iter_index:]
                                 if (r.topic, r.partition) not in dropped]
            self._iter_index = 0

    def _give_back_unread_locked(self) -> None:
        """Move each partition's position back to its first record not yet yielded and
        forget the iterator's records."""
        for tp, offset in self._unread_offsets_locked().items():
            state = self._subs.assignment.get(tp)
            if state is not None:
                state.seek(offset)
        self._iter_buffer = []
        self._iter_index = 0
