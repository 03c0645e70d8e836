"""GroupCoordinator: durability before acknowledgement, sticky failure, restart, threads."""

from __future__ import annotations

import threading
import time

import pytest

from logd.groups import (
    CoordinatorNotAvailableError,
    FencedMemberError,
    GroupCoordinator,
    MemoryOffsetsLog,
    OffsetAndMetadata,
    TopicPartition,
    UnknownMemberError,
)
from logd.groups.records import decode_key

from .sim import FakeClock, sequential_ids

COUNTS = {"t": 4}


class FailingLog(MemoryOffsetsLog):
    """A log whose appends fail once ``fail`` is set (a full or broken disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def append(self, records) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        super().append(records)


def make_coordinator(log, clock):
    return GroupCoordinator(log, lambda t: COUNTS.get(t, 0), lambda t, p: 100, clock_ms=clock,
                            member_id_factory=sequential_ids())


def join_and_settle(coordinator, member_count=1):
    results = [coordinator.heartbeat("g", "", 0, subscribed_topics=["t"], session_timeout_ms=1000)
               for _ in range(member_count)]
    for _ in range(3):
        results = [coordinator.heartbeat("g", r.member_id, r.member_epoch, subscribed_topics=["t"],
                                         owned_partitions=r.assignment, session_timeout_ms=1000) for r in results]
    return results


def test_commit_is_durable_before_it_is_acknowledged():
    """When the offsets log cannot append, the commit fails and the coordinator refuses further requests."""
    log, clock = FailingLog(), FakeClock()
    coordinator = make_coordinator(log, clock)
    (member,) = join_and_settle(coordinator)
    coordinator.commit_offsets("g", member.member_id, member.member_epoch, {TopicPartition("t", 0): OffsetAndMetadata(5)})
    assert coordinator.fetch_committed_offsets("g") == {TopicPartition("t", 0): 5}
    log.fail = True
    with pytest.raises(OSError):
        coordinator.commit_offsets("g", member.member_id, member.member_epoch,
                                   {TopicPartition("t", 0): OffsetAndMetadata(6)})
    log.fail = False
    with pytest.raises(CoordinatorNotAvailableError):
        coordinator.fetch_committed_offsets("g")
    with pytest.raises(CoordinatorNotAvailableError):
        coordinator.expire()
    # What a restart sees: the acknowledged commit, not the failed one.
    assert make_coordinator(log, clock).fetch_committed_offsets("g") == {TopicPartition("t", 0): 5}


def test_restart_replays_offsets_and_membership():
    """A new coordinator over the same log has the offsets and lets members carry on without a rebalance."""
    log, clock = MemoryOffsetsLog(), FakeClock()
    coordinator = make_coordinator(log, clock)
    a, b = join_and_settle(coordinator, 2)
    tp = a.assignment[0]
    coordinator.commit_offsets("g", a.member_id, a.member_epoch, {tp: OffsetAndMetadata(9, "x")})
    restarted = make_coordinator(log, clock)
    assert restarted.fetch_committed_offsets("g", [tp]) == {tp: 9}
    again = restarted.heartbeat("g", a.member_id, a.member_epoch, subscribed_topics=["t"],
                                owned_partitions=a.assignment, session_timeout_ms=1000)
    assert (again.member_epoch, again.assignment) == (a.member_epoch, a.assignment)
    assert restarted.describe_group("g") == coordinator.describe_group("g")


def test_eviction_done_by_a_failing_request_is_still_written():
    """A commit from an evicted member fails, and the eviction it triggered reaches the log anyway."""
    log, clock = MemoryOffsetsLog(), FakeClock()
    coordinator = make_coordinator(log, clock)
    (member,) = join_and_settle(coordinator)
    clock.advance(1000)
    with pytest.raises(UnknownMemberError):
        coordinator.commit_offsets("g", member.member_id, member.member_epoch,
                                   {member.assignment[0]: OffsetAndMetadata(1)})
    tombstones = [decode_key(key) for key, value in log.records if value is None]
    assert [(k.kind, k.member_id) for k in tombstones] == [("member", member.member_id)]


def test_expire_evicts_silent_members_and_reports_records():
    """expire() evicts members past their session and says how many records it wrote."""
    log, clock = MemoryOffsetsLog(), FakeClock()
    coordinator = make_coordinator(log, clock)
    join_and_settle(coordinator, 2)
    assert coordinator.expire() == 0
    clock.advance(999)
    assert coordinator.expire() == 0
    clock.advance(1)
    assert coordinator.expire() >= 2  # two member tombstones and the group's new epoch
    assert coordinator.describe_group("g").state == "Empty"


def test_concurrent_members_never_share_a_partition():
    """Members heartbeating and committing from threads keep the one-owner invariant."""
    log, clock = MemoryOffsetsLog(), FakeClock()
    COUNTS["many"] = 12
    coordinator = make_coordinator(log, clock)
    owned: dict[int, set] = {}
    owned_lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def check_disjoint():
        with owned_lock:
            seen = set()
            for partitions in owned.values():
                assert not (partitions & seen)
                seen |= partitions

    def run(index: int) -> None:
        try:
            result = coordinator.heartbeat("cg", "", 0, subscribed_topics=["many"], session_timeout_ms=60_000)
            step = 0
            while not stop.is_set():
                step += 1
                with owned_lock:
                    mine = owned.get(index, set()) | set(result.assignment)  # take new ones
                    owned[index] = mine
                check_disjoint()
                with owned_lock:
                    owned[index] = mine & set(result.assignment)  # release revoked ones
                if owned[index]:
                    coordinator.commit_offsets("cg", result.member_id, result.member_epoch,
                                               {tp: OffsetAndMetadata(step) for tp in owned[index]})
                result = coordinator.heartbeat("cg", result.member_id, result.member_epoch,
                                               subscribed_topics=["many"], owned_partitions=sorted(owned[index]),
                                               session_timeout_ms=60_000)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not errors:
        with owned_lock:
            sizes = sorted(len(p) for p in owned.values())
        if sizes == [3, 3, 3, 3]:
            break
        time.sleep(0.01)  # polling the condition, not synchronising
    stop.set()
    for thread in threads:
        thread.join(10)
    del COUNTS["many"]
    assert not errors, errors
    assert sizes == [3, 3, 3, 3]


def test_fenced_errors_propagate_unchanged():
    """Domain errors from the state machine reach the caller as they are."""
    coordinator = make_coordinator(MemoryOffsetsLog(), FakeClock())
    join_and_settle(coordinator)
    with pytest.raises(FencedMemberError):
        coordinator.commit_offsets("g", "", -1, {TopicPartition("t", 0): OffsetAndMetadata(1)})


class SlowDiskLog(MemoryOffsetsLog):
    """A pipelined log whose fsync (wait_durable) blocks until ``fsync_done`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fsync_done = threading.Event()
        self.waiting = threading.Event()

    def append_unflushed(self, records) -> int:
        self.append(records)
        return len(self.records)

    def wait_durable(self, token: int) -> None:
        self.waiting.set()
        assert self.fsync_done.wait(10)


def test_pipelined_commit_waits_for_fsync_outside_the_lock():
    """With a pipelined log a commit is acknowledged only after the fsync, and the lock is free
    meanwhile: a second commit appends its record while the first one waits (group commit)."""
    log, clock = SlowDiskLog(), FakeClock()
    log.fsync_done.set()
    coordinator = make_coordinator(log, clock)
    (member,) = join_and_settle(coordinator)
    log.fsync_done.clear()
    acknowledged = [threading.Event(), threading.Event()]

    def commit(partition: int) -> None:
        coordinator.commit_offsets("g", member.member_id, member.member_epoch,
                                   {TopicPartition("t", partition): OffsetAndMetadata(3)})
        acknowledged[partition].set()

    appended_before = len(log.records)
    threads = [threading.Thread(target=commit, args=(p,)) for p in (0, 1)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(log.records) < appended_before + 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(log.records) == appended_before + 2  # both appended while no fsync had finished
    assert not any(event.is_set() for event in acknowledged)
    log.fsync_done.set()
    for thread in threads:
        thread.join(10)
    assert all(event.is_set() for event in acknowledged)
    assert coordinator.fetch_committed_offsets("g") == {TopicPartition("t", 0): 3, TopicPartition("t", 1): 3}
