"""Test helpers: a fake clock and simulated members that follow the heartbeat protocol.

A :class:`SimMember` behaves as the SDK consumer must: it sends its subscription and
owned partitions, takes every partition of the answer, releases partitions missing from
the answer (at once, or later when ``release_now`` is False, as a slow ``on_revoke``
would), rejoins after a fencing error, and drops everything once it has had no
successful heartbeat for a whole session (it has probably been evicted).
"""

from __future__ import annotations

import itertools

from logd.groups import FencedMemberError, GroupMetadataManager, TopicPartition, UnknownMemberError

SESSION_TIMEOUT_MS = 1000


class FakeClock:
    def __init__(self, now_ms: int = 1_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        self.now_ms += ms
        return self.now_ms


def sequential_ids(prefix: str = "m"):
    """A deterministic member id factory: m0001, m0002, ..."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):04d}"


def tps(topic: str, *partitions: int) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in partitions}


class SimMember:
    """One consumer following the protocol against a :class:`GroupMetadataManager`."""

    def __init__(self, manager: GroupMetadataManager, group_id: str, topics, *, instance_id: str = "",
                 session_timeout_ms: int = SESSION_TIMEOUT_MS, records: list | None = None) -> None:
        self.manager = manager
        self.group_id = group_id
        self.topics = list(topics)
        self.instance_id = instance_id
        self.session_timeout_ms = session_timeout_ms
        self.member_id = ""
        self.epoch = 0
        self.owned: set[TopicPartition] = set()
        self.to_release: set[TopicPartition] = set()
        self.last_ok_ms: int | None = None
        self.records = records if records is not None else []
        self.interval_ms = 0

    def heartbeat(self, now_ms: int, *, release_now: bool = True, lose_answer: bool = False):
        try:
            records, result = self.manager.heartbeat(
                self.group_id, self.member_id, self.epoch, now_ms=now_ms, instance_id=self.instance_id,
                subscribed_topics=self.topics, owned_partitions=sorted(self.owned),
                session_timeout_ms=self.session_timeout_ms,
            )
        except FencedMemberError as exc:
            self.records.extend(self.manager.take_records())
            self.drop_all()
            if isinstance(exc, UnknownMemberError):
                self.member_id = ""
            self.epoch = 0
            return exc
        self.records.extend(records)
        if lose_answer:
            return result
        self.last_ok_ms = now_ms
        self.member_id, self.epoch = result.member_id, result.member_epoch
        self.interval_ms = result.heartbeat_interval_ms
        assignment = set(result.assignment)
        self.owned |= assignment
        self.to_release = self.owned - assignment
        if release_now:
            self.release()
        return result

    def release(self) -> None:
        self.owned -= self.to_release
        self.to_release = set()

    def drop_all(self) -> None:
        self.owned = set()
        self.to_release = set()

    def check_session(self, now_ms: int) -> None:
        """Drop everything after a session without a successful heartbeat."""
        if self.last_ok_ms is not None and now_ms >= self.last_ok_ms + self.session_timeout_ms:
            self.drop_all()
            self.last_ok_ms = None

    def leave(self, now_ms: int, epoch: int = -1):
        records, result = self.manager.heartbeat(self.group_id, self.member_id, epoch, now_ms=now_ms,
                                                 instance_id=self.instance_id)
        self.records.extend(records)
        self.drop_all()
        return result

    def commit(self, offsets: dict, now_ms: int) -> None:
        from logd.groups import OffsetAndMetadata

        records, _ = self.manager.commit_offsets(
            self.group_id, self.member_id, self.epoch,
            {tp: OffsetAndMetadata(offset) for tp, offset in offsets.items()}, now_ms=now_ms)
        self.records.extend(records)


def assert_disjoint(members) -> None:
    """No partition is owned by two members (the protocol's safety invariant)."""
    seen: dict[TopicPartition, int] = {}
    for index, member in enumerate(members):
        for tp in member.owned:
            assert tp not in seen, f"{tp} owned by members {seen[tp]} and {index}"
            seen[tp] = index
