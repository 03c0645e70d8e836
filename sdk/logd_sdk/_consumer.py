"""Consumer: reads records of assigned partitions, prefetching in the background.

The consumer keeps every partition's position in a :class:`SubscriptionState` and owns a
:class:`Fetcher` thread that fills a bounded buffer; ``poll`` decodes from that buffer.
This issue provides manual ``assign``; ``subscribe`` (group membership, KIP-848
heartbeats) plugs in later by driving ``SubscriptionState.assign``.

Thread safety: every public method may be called from any thread; one condition
(``self._lock``) guards the subscription state and the fetch buffer, and no RPC runs
while it is held. ``close`` wakes a ``poll`` blocked in another thread (it returns []).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, Iterator, Mapping

from logd_sdk._errors import IllegalStateError, InvalidGroupIdError, LogdError, NotAssignedError
from logd_sdk._fetcher import EARLIEST, LATEST, Fetcher, fetch_committed, list_offsets
from logd_sdk._subscription import SubscriptionState
from logd_sdk._transport import Transport
from logd_sdk._types import Record, TopicPartition
from logd_sdk.protocol import groups_pb2, topics_pb2

log = logging.getLogger("logd_sdk.consumer")


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
    raises OffsetOutOfRangeError). ``group_id`` enables ``commit``/``committed`` and makes
    assigned partitions start from the group's committed offsets. Fetch sizes are bytes.
    """

    def __init__(self, bootstrap: str = "127.0.0.1:7070", group_id: str | None = None, *,
                 auto_offset_reset: str = "latest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000, max_poll_records: int = 500,
                 session_timeout_ms: int = 45000, heartbeat_interval_ms: int = 3000,
                 group_instance_id: str | None = None, fetch_min_bytes: int = 1, fetch_max_wait_ms: int = 500,
                 fetch_max_bytes: int = 8 * 1024 * 1024, max_partition_fetch_bytes: int = 4 * 1024 * 1024,
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
        self._max_poll_records = max_poll_records
        self._lock = threading.Condition(threading.Lock())
        self._closed = False
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
        """Read exactly these partitions (replacing any previous assignment)."""
        partitions = _flatten((list(partitions),))
        with self._lock:
            self._check_open_locked()
            self._subs.assign(partitions)
            self._fetcher.wakeup_locked()

    def assignment(self) -> set[TopicPartition]:
        """The partitions currently assigned."""
        with self._lock:
            return set(self._subs.assignment)

    def subscribe(self, topics: Iterable[str], on_assign: Callable[[list[TopicPartition]], object] | None = None,
                  on_revoke: Callable[[list[TopicPartition]], object] | None = None) -> None:
        """Join ``group_id`` and consume the partitions the group assigns (not yet available)."""
        raise NotImplementedError("consumer groups (subscribe) are not available yet; use assign()")

    def unsubscribe(self) -> None:
        """Drop every partition."""
        self.assign([])

    def partitions_for_topic(self, topic: str) -> set[int]:
        """The partition numbers of a topic (TopicNotFoundError if it does not exist)."""
        response = self._transport.call(self._transport.topics.DescribeTopic, topics_pb2.DescribeTopicRequest(name=topic))
        return {p.partition for p in response.partitions}

    # -- reading --------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> list[Record]:
        """Records from the assigned partitions, waiting up to ``timeout_ms`` for the first.

        Returns at most ``max_records`` (default ``max_poll_records``), in offset order per
        partition; [] when nothing arrived in time. Raises a partition's sticky error
        (OffsetOutOfRangeError, TopicNotFoundError, CorruptRecordError, ...) until it is
        seeked or unassigned, and NotAssignedError when nothing is assigned.
        """
        limit = self._max_poll_records if max_records is None else max_records
        if limit < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
        with self._lock:
            self._check_open_locked()
            if not self._subs.assignment:
                raise NotAssignedError("no partitions are assigned: call assign() first")
            while True:
                failed = self._subs.first_error()
                if failed is not None:
                    raise failed[1].with_traceback(None)
                records = self._fetcher.drain_locked(limit)
                if records:
                    return records
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return []
                self._lock.wait(remaining)

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        """The next record, polling as long as it takes; StopIteration once closed."""
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
            self._drop_iter_buffer_locked()
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
            for tp in self._subs.partitions_or_all(partitions):
                self._subs.state(tp).request_reset(strategy)
            self._drop_iter_buffer_locked()
            self._fetcher.wakeup_locked()

    def position(self, partition: TopicPartition) -> int:
        """The offset of the next record ``poll`` returns for ``partition``."""
        deadline = time.monotonic() + self._transport.api_timeout_ms / 1000.0
        while True:
            with self._lock:
                self._check_open_locked()
                state = self._subs.state(partition)
                if state.error is not None:
                    raise state.error.with_traceback(None)
                if state.position is not None and state.reset_to is None:
                    return state.position
                pending = {partition: (state.reset_to, state.epoch)}
            if time.monotonic() > deadline:
                raise IllegalStateError(f"no position for {partition.topic}-{partition.partition}")
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
        """Commit the next offsets to read (default: the current positions) for the group."""
        group_id = self._require_group("commit")
        if offsets is None:
            with self._lock:
                offsets = {tp: s.position for tp, s in self._subs.assignment.items() if s.position is not None}
        entries = []
        for tp, offset in offsets.items():
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset for {tp} must be an int >= 0, got {offset!r}")
            entries.append(groups_pb2.CommitOffsetsRequest.Offset(topic=tp.topic, partition=tp.partition, offset=offset))
        if entries:
            request = groups_pb2.CommitOffsetsRequest(group_id=group_id, member_id="", member_epoch=-1, offsets=entries)
            self._transport.call(self._transport.groups.CommitOffsets, request)

    def _require_group(self, what: str) -> str:
        if self.group_id is None:
            raise InvalidGroupIdError(f"{what}() needs a Consumer created with a group_id")
        return self.group_id

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop fetching and close the channel (committing first with auto-commit). Idempotent."""
        with self._lock:
            if self._closed:
                return
        if self.group_id is not None and self._enable_auto_commit:
            try:
                self.commit()
            except LogdError as exc:
                log.warning("commit on close failed: %s", exc)
        with self._lock:
            self._closed = True
            self._fetcher.close_locked()
        self._fetcher.join(5.0)
        self._transport.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open_locked(self) -> None:
        if self._closed:
            raise IllegalStateError("the consumer is closed")

    def _drop_iter_buffer_locked(self) -> None:
        self._iter_buffer = []
        self._iter_index = 0
