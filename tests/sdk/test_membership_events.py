"""The member's callback events against scripted heartbeat answers (GroupMembership's
state machine driven directly, no broker): what the application hears must match what
the consumer owns, whatever order assignments, revocations and losses come in."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from logd_sdk._membership import GroupMembership
from logd_sdk._subscription import SubscriptionState
from logd_sdk._types import TopicPartition
from logd_sdk.protocol import common_pb2, groups_pb2

pytestmark = pytest.mark.timeout(30)


class Member:
    """A GroupMembership whose heartbeat answers the test writes; ``heard`` is what its
    callbacks saw: ("assign" | "revoke", [partition numbers])."""

    def __init__(self) -> None:
        self.lock = threading.Condition(threading.Lock())
        self.subs = SubscriptionState("earliest", use_committed=True)
        self.heard: list[tuple[str, list[int]]] = []
        self.during_revoke = None  # called inside on_revoke, once
        self.membership = GroupMembership(
            SimpleNamespace(groups=None, target="scripted"), "g", self.subs, self.lock, lambda: None,
            lambda offsets, timeout_ms: None, auto_commit=True, session_timeout_ms=10_000, group_instance_id=None,
            request_timeout_ms=1000, retry_backoff_ms=100)
        self.membership._on_assign = lambda tps: self.heard.append(("assign", [tp.partition for tp in tps]))
        self.membership._on_revoke = self._on_revoke
        self.membership._active = True

    def _on_revoke(self, tps) -> None:
        self.heard.append(("revoke", [tp.partition for tp in tps]))
        hook, self.during_revoke = self.during_revoke, None
        if hook is not None:
            hook()

    def answer(self, request_epoch: int, epoch: int, partitions: list[int]) -> None:
        request = groups_pb2.HeartbeatRequest(member_epoch=request_epoch)
        response = groups_pb2.HeartbeatResponse(
            member_id=self.membership.member_id, member_epoch=epoch, heartbeat_interval_ms=50,
            assignment=[common_pb2.TopicPartition(topic="t", partition=p) for p in partitions])
        with self.lock:
            self.membership._apply_locked(request, response, 0.0)

    def lose(self) -> None:
        with self.lock:
            self.membership._lose_locked("fenced")

    def owned(self) -> list[int]:
        return sorted(tp.partition for tp in self.subs.owned())


def test_a_partition_given_back_during_its_on_revoke_is_assigned_again():
    member = Member()
    member.answer(0, 1, [0, 1])
    member.membership.run_events()
    member.answer(1, 2, [0])  # partition 1 moves away...
    member.during_revoke = lambda: member.answer(2, 3, [0, 1])  # ...and comes back while on_revoke runs
    member.membership.run_events()
    assert member.heard == [("assign", [0, 1]), ("revoke", [1]), ("assign", [1])]
    assert member.owned() == [0, 1]


def test_a_revocation_still_queued_when_the_partition_is_lost_does_not_run_later():
    member = Member()
    member.answer(0, 1, [0])
    member.membership.run_events()
    member.answer(1, 2, [])  # revoked; the application has not polled yet
    member.lose()  # fenced: partition 0 is lost, the member rejoins
    member.answer(0, 3, [0])  # the rejoin gets it back...
    member.answer(3, 4, [])  # ...and it is revoked again
    member.membership.run_events()
    assert member.heard == [("assign", [0]), ("revoke", [0]), ("assign", [0]), ("revoke", [0])]
    assert member.owned() == []
