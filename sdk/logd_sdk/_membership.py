"""Group membership: the consumer's side of KIP-848 heartbeats, in a background thread.

The broker computes assignments (``proto/logd/v1/groups.proto``); this component keeps
the member alive and makes the consumer own exactly what the broker grants.

Heartbeats. One at a time, each with the full subscription and every owned partition
(assigned or still being revoked), then ``heartbeat_interval_ms`` of the answer before
the next one (the broker says 500 ms when the member is stable, 50 ms while it
reconciles); sooner when a revocation was released. The first heartbeat joins with epoch
0 and the member's own UUID as ``member_id`` (KIP-1082), so a lost answer is simply
retried: the broker recognises the id. A heartbeat whose answer was lost is repeated with
the same epoch, which the broker accepts as the previous one.

Reconciliation of an answer's assignment ``A`` against what the consumer owns:

* every partition of ``A`` is taken (new ones start at the committed offset, else at
  ``auto_offset_reset``) and queued for ``on_assign``;
* every assigned partition missing from ``A`` starts revoking at once: the fetcher stops,
  buffered data is dropped and ``poll`` returns none of its records from then on. The
  application thread then (inside ``poll``, :meth:`GroupMembership.run_events`) commits
  its position (with auto-commit; the broker accepts commits until the release is
  reported), calls ``on_revoke``, and releases it: the next heartbeat, sent at once,
  reports it as no longer owned and the broker hands it to its next owner.

Callbacks and revocation commits run in the thread that calls ``poll`` (as in Kafka):
the records ``poll`` returned before are then processed, so the commit covers only done
work. A consumer that stops polling therefore holds its revoked partitions; its
heartbeats, which are independent of ``poll``, keep it in the group.

Losing everything (Kafka's ``on_partitions_lost``; reported through ``on_revoke``): on
FENCED_MEMBER or UNKNOWN_MEMBER, or once ``session_timeout_ms`` passed since the last
successful heartbeat was *sent* (the broker has evicted the member by then; ``poll`` and
``commit`` check this too, so a process resumed after SIGSTOP returns no stale records),
every partition is dropped without a commit and the member rejoins with epoch 0. A
static member (``group_instance_id``) told UNKNOWN_MEMBER first asks whether another
process took its instance id; if so it stops for good (Kafka's FENCED_INSTANCE_ID).

Leaving (``close``/``unsubscribe``): pending events run, every owned partition is
committed (auto-commit) and passed to ``on_revoke``, then a heartbeat with epoch -1
(-2 for a static member, which keeps its partitions for ``session_timeout_ms``).

Thread safety: the state is guarded by the consumer's lock (a Condition, shared with the
fetcher); no RPC or callback runs while it is held. One thread at a time runs events
(``_events_lock``, re-entrant so that a callback may call ``poll``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Callable, Iterable

import grpc

from logd_sdk._errors import FencedMemberError, LogdError, UnknownMemberError
from logd_sdk._subscription import SubscriptionState
from logd_sdk._transport import Transport, backoff_s, error_from_rpc
from logd_sdk._types import TopicPartition
from logd_sdk.protocol import common_pb2, groups_pb2

log = logging.getLogger("logd_sdk.consumer")

JOIN_EPOCH = 0
LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2
DEFAULT_SESSION_TIMEOUT_MS = 10_000  # what the broker uses for 0
MIN_RPC_TIMEOUT_S = 0.2

Callback = Callable[[list[TopicPartition]], object]
CommitFn = Callable[[dict[TopicPartition, int], "int | None"], None]  # (offsets, timeout_ms)


class GroupMembership:
    """One consumer's membership of ``group_id`` (see the module docstring).

    ``commit(offsets)`` commits synchronously with this member's identity (raising typed
    errors); ``wake_consumer_locked()`` tells the fetcher and a waiting ``poll`` that the
    assignment changed (called with ``lock`` held).
    """

    def __init__(self, transport: Transport, group_id: str, subscriptions: SubscriptionState,
                 lock: threading.Condition, wake_consumer_locked: Callable[[], None], commit: CommitFn, *,
                 auto_commit: bool, session_timeout_ms: int, group_instance_id: str | None,
                 request_timeout_ms: int, retry_backoff_ms: int) -> None:
        self._transport = transport
        self._group_id = group_id
        self._subs = subscriptions
        self._lock = lock
        self._wake_consumer_locked = wake_consumer_locked
        self._commit = commit
        self._auto_commit = auto_commit
        self._session_timeout_ms = session_timeout_ms or DEFAULT_SESSION_TIMEOUT_MS
        self._instance_id = group_instance_id or ""
        self._request_timeout_s = request_timeout_ms / 1000.0
        self._retry_backoff_ms = retry_backoff_ms
        self._wakeup = threading.Event()
        self._events_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        # Guarded by lock:
        self.member_id = str(uuid.uuid4())
        self.epoch = JOIN_EPOCH
        self._active = False  # subscribed: heartbeats flow
        self._stopped = False
        self._generation = 0  # bumped when the state an in-flight answer refers to is gone
        self._next_heartbeat_at = 0.0
        self._last_success_sent_at: float | None = None
        self._in_flight: grpc.Future | None = None
        self._events: deque[tuple[str, list[TopicPartition]]] = deque()
        self._in_callback: set[TopicPartition] = set()
        # Positions of partitions lost (evicted) before their "lost" callback ran: a
        # commit() in between must fail rather than quietly commit nothing.
        self._lost_positions: dict[TopicPartition, int] = {}
        self._on_assign: Callback | None = None
        self._on_revoke: Callback | None = None
        self._error: LogdError | None = None  # raised once by poll
        self._fatal: LogdError | None = None  # raised by every poll: the member stopped for good

    # -- called by the consumer -----------------------------------------------------------

    def subscribe_locked(self, topics: Iterable[str], on_assign: Callback | None, on_revoke: Callback | None) -> None:
        """Set the subscription and callbacks; the next heartbeat (sent now) carries them."""
        self._subs.topics = tuple(sorted(set(topics)))
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._active = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="logd-consumer-heartbeat", daemon=True)
            self._thread.start()
        self._wake_locked()

    def check_locked(self) -> None:
        """Raise a stopped member's error, or a heartbeat's error once; drop everything if
        the session has surely ended (called by ``poll`` and ``commit``)."""
        if self._fatal is not None:
            raise self._fatal
        error, self._error = self._error, None
        if error is not None:
            raise error
        self._check_session_locked(time.monotonic())

    def check_session_locked(self) -> None:
        """Drop everything if the session has surely ended (``commit`` calls this)."""
        self._check_session_locked(time.monotonic())

    def has_events_locked(self) -> bool:
        return bool(self._events)

    def take_lost_positions_locked(self) -> dict[TopicPartition, int]:
        """Positions of partitions lost since the application last heard of a loss (its
        ``on_revoke``); returned once."""
        lost, self._lost_positions = self._lost_positions, {}
        return lost

    def identity_locked(self) -> tuple[str, int, int]:
        """``(member_id, member_epoch, generation)`` for a commit; the generation changes
        when the member leaves or loses its partitions (an epoch bump does not)."""
        return self.member_id, self.epoch, self._generation

    def commit_fenced(self) -> None:
        """A commit was fenced: heartbeat now to learn the new state sooner."""
        with self._lock:
            self._wake_locked()

    def run_events(self, commit_timeout_ms: int | None = None) -> None:
        """Run queued callbacks and revocations, in order; in the application's thread,
        without the lock. Re-raises the first exception a callback raised, afterwards.
        ``commit_timeout_ms``: the budget of a revocation's auto-commit (default: the API
        timeout)."""
        failure: BaseException | None = None
        with self._events_lock:
            while True:
                with self._lock:
                    if not self._events:
                        break
                    kind, partitions = self._events.popleft()
                    offsets: dict[TopicPartition, int] = {}
                    if kind == "revoke":
                        partitions = [tp for tp in partitions if tp in self._subs.revoking]
                        offsets = self._subs.positions(partitions)
                        self._in_callback.update(partitions)
                    elif kind == "lost":
                        for tp in partitions:
                            self._lost_positions.pop(tp, None)
                if not partitions:
                    continue
                try:
                    if kind == "revoke":
                        self._finish_revoke(partitions, offsets, commit_timeout_ms)
                    else:  # "assign" or "lost"
                        self._call(self._on_assign if kind == "assign" else self._on_revoke, partitions)
                except Exception as exc:  # the callback's: surface it from poll once all ran
                    failure = failure or exc
        if failure is not None:
            raise failure

    def leave(self, commit_timeout_ms: int | None = None) -> None:
        """Leave the group (see the module docstring); the member may subscribe again.
        Re-raises the first exception a callback raised, once the member has left.
        ``commit_timeout_ms``: the auto-commit's budget (default: the API timeout)."""
        failure: BaseException | None = None
        while True:
            try:
                self.run_events(commit_timeout_ms)
            except Exception as exc:
                failure = failure or exc
            with self._lock:
                if self._events:
                    continue  # the snapshot below must follow the last callback run
                active = self._active
                owned = sorted(self._subs.owned())
                offsets = self._subs.positions()
                self._in_callback.update(owned)
                break
        if not active:
            if failure is not None:
                raise failure
            return
        try:
            self._commit_quietly(offsets, "before leaving the group", commit_timeout_ms)
            if owned:
                self._call(self._on_revoke, owned)
        finally:
            with self._lock:
                self._active = False
                self._generation += 1
                in_flight = self._in_flight
                self._subs.drop_all()
                self._subs.topics = ()
                self._events.clear()
                self._lost_positions.clear()
                self._in_callback.clear()
                member_id = self.member_id
                self.epoch = JOIN_EPOCH
                self._last_success_sent_at = None
                self._wake_consumer_locked()
            if in_flight is not None:
                # Let a heartbeat in flight land first: a join processed after the leave
                # would bring the member back until its session expired.
                try:
                    in_flight.exception(timeout=min(self._request_timeout_s, 2.0))
                except Exception:
                    in_flight.cancel()
            self._send_leave(member_id)
        if failure is not None:
            raise failure

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the heartbeat thread (after :meth:`leave`)."""
        with self._lock:
            self._stopped = True
            self._cancel_in_flight_locked()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- revocation and loss --------------------------------------------------------------

    def _finish_revoke(self, partitions: list[TopicPartition], offsets: dict[TopicPartition, int],
                       commit_timeout_ms: int | None = None) -> None:
        try:
            self._commit_quietly(offsets, "before revoking", commit_timeout_ms)
            self._call(self._on_revoke, partitions)
        finally:
            with self._lock:
                self._in_callback.difference_update(partitions)
                released = [tp for tp in partitions if self._subs.release(tp)]
                if released:
                    log.info("group %s: released %s", self._group_id, _names(released))
                    self._wake_locked()  # report the release at once

    def _commit_quietly(self, offsets: dict[TopicPartition, int], when: str, timeout_ms: int | None = None) -> None:
        if not self._auto_commit or not offsets:
            return
        try:
            self._commit(offsets, timeout_ms)
        except LogdError as exc:
            log.warning("group %s: commit %s failed: %s", self._group_id, when, exc)

    @staticmethod
    def _call(callback: Callback | None, partitions: list[TopicPartition]) -> None:
        if callback is not None:
            callback(list(partitions))

    def _lose_locked(self, reason: str) -> None:
        """Drop every partition without a commit and rejoin with epoch 0."""
        positions = self._subs.positions()
        dropped = self._subs.drop_all()
        lost = [tp for tp in dropped if tp not in self._in_callback]
        if dropped:
            log.warning("group %s: lost %s (%s)", self._group_id, _names(dropped), reason)
        # A revocation still queued is covered by the loss (its partitions are in ``lost``):
        # run later, it would act on whatever state a rejoin gave them by then.
        self._events = deque(event for event in self._events if event[0] != "revoke")
        if lost:
            self._events.append(("lost", lost))
            self._lost_positions.update((tp, positions[tp]) for tp in lost if tp in positions)
        self.epoch = JOIN_EPOCH
        self._last_success_sent_at = None
        self._generation += 1
        self._cancel_in_flight_locked()
        self._wake_consumer_locked()
        self._wake_locked()

    def _check_session_locked(self, now: float) -> None:
        sent_at = self._last_success_sent_at
        if self.epoch > 0 and sent_at is not None and now - sent_at > self._session_timeout_ms / 1000.0:
            self._lose_locked(f"no successful heartbeat for session_timeout_ms={self._session_timeout_ms}")

    # -- the heartbeat thread -------------------------------------------------------------

    def _wake_locked(self) -> None:
        self._next_heartbeat_at = 0.0
        self._wakeup.set()

    def _cancel_in_flight_locked(self) -> None:
        if self._in_flight is not None:
            self._in_flight.cancel()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._lock:
                if self._stopped:
                    return
                delay = self._next_heartbeat_at - time.monotonic() if self._active else None
                if delay is not None and delay <= 0:
                    request, generation, timeout_s = self._request_locked()
                    sent_at = time.monotonic()
                    future = self._transport.groups.Heartbeat.future(request, timeout=timeout_s)
                    self._in_flight = future
            if delay is None or delay > 0:
                self._wakeup.wait(delay)
                self._wakeup.clear()
                continue
            try:
                response, error = future.result(), None
            except grpc.FutureCancelledError:
                response, error = None, None
            except grpc.RpcError as exc:
                response, error = None, error_from_rpc(exc, self._transport.target)
            if isinstance(error, UnknownMemberError) and self._instance_id and self._replaced():
                error = FencedMemberError(
                    f"another consumer joined group {self._group_id} with group_instance_id "
                    f"{self._instance_id!r}: this one stopped consuming")
                with self._lock:
                    self._fatal = error
                    self._active = False
            failures = self._after_heartbeat(request, response, error, generation, sent_at, failures)

    def _request_locked(self) -> tuple[groups_pb2.HeartbeatRequest, int, float]:
        owned = sorted(self._subs.owned())
        request = groups_pb2.HeartbeatRequest(
            group_id=self._group_id, member_id=self.member_id, member_epoch=self.epoch,
            group_instance_id=self._instance_id, subscribed_topics=list(self._subs.topics),
            owned_partitions=[common_pb2.TopicPartition(topic=tp.topic, partition=tp.partition) for tp in owned],
            session_timeout_ms=self._session_timeout_ms)
        timeout_s = self._request_timeout_s
        if self._last_success_sent_at is not None:  # an answer after the session ended is of no use
            session_end = self._last_success_sent_at + self._session_timeout_ms / 1000.0
            timeout_s = min(timeout_s, session_end - time.monotonic())
        return request, self._generation, max(MIN_RPC_TIMEOUT_S, timeout_s)

    def _after_heartbeat(self, request: groups_pb2.HeartbeatRequest, response, error: LogdError | None,
                         generation: int, sent_at: float, failures: int) -> int:
        """Apply a heartbeat's outcome; returns the new count of consecutive failures."""
        with self._lock:
            self._in_flight = None
            now = time.monotonic()
            if self._stopped or not self._active:
                if self._fatal is not None:
                    self._lose_locked(str(self._fatal))
                return 0
            if generation != self._generation:
                return failures  # lost or left meanwhile: the answer describes a dead state
            if response is not None:
                self._apply_locked(request, response, sent_at)
                self._next_heartbeat_at = now + max(1, response.heartbeat_interval_ms) / 1000.0
                return 0
            if error is None:  # cancelled without a reason: try again
                self._next_heartbeat_at = now
                return failures
            if isinstance(error, (FencedMemberError, UnknownMemberError)):
                self._lose_locked(f"{type(error).__name__}: {error}")
                return 0
            self._check_session_locked(now)
            if not error.retriable:
                log.warning("group %s: heartbeat failed: %s", self._group_id, error)
                self._error = error
                self._lock.notify_all()
            self._next_heartbeat_at = now + backoff_s(failures, self._retry_backoff_ms, 1000)
            return failures + 1

    def _apply_locked(self, request: groups_pb2.HeartbeatRequest, response, sent_at: float) -> None:
        """Take the answer's assignment (see the module docstring)."""
        if request.member_epoch == JOIN_EPOCH:
            log.info("group %s: joined as %s (epoch %d)", self._group_id, response.member_id, response.member_epoch)
        self.member_id = response.member_id or self.member_id
        self.epoch = response.member_epoch
        self._last_success_sent_at = sent_at
        target = {TopicPartition(tp.topic, tp.partition) for tp in response.assignment}
        subs = self._subs
        added: list[TopicPartition] = []
        changed = False
        for tp in sorted(target - set(subs.assignment)):
            changed = True
            # New, or given back while its on_revoke runs (the application has been or is
            # being told it is gone): either way it hears on_assign.
            if subs.add(tp) or tp in self._in_callback:
                added.append(tp)
        revoked = sorted(set(subs.assignment) - target)
        for tp in revoked:
            subs.start_revoking(tp)
        if revoked:
            log.info("group %s: revoking %s (epoch %d)", self._group_id, _names(revoked), self.epoch)
            self._events.append(("revoke", revoked))
        if added:
            log.info("group %s: assigned %s (epoch %d)", self._group_id, _names(added), self.epoch)
            self._events.append(("assign", added))
        if changed or revoked:
            self._wake_consumer_locked()

    def _replaced(self) -> bool:
        """Whether another member now holds this static member's instance id."""
        request = groups_pb2.DescribeGroupRequest(group_id=self._group_id)
        try:
            response = self._transport.call(self._transport.groups.DescribeGroup, request,
                                            timeout_ms=int(self._request_timeout_s * 1000))
        except LogdError:
            return False
        return any(m.group_instance_id == self._instance_id and m.member_id != self.member_id
                   for m in response.members)

    def _send_leave(self, member_id: str) -> None:
        epoch = STATIC_LEAVE_EPOCH if self._instance_id else LEAVE_EPOCH
        request = groups_pb2.HeartbeatRequest(group_id=self._group_id, member_id=member_id, member_epoch=epoch,
                                              group_instance_id=self._instance_id,
                                              session_timeout_ms=self._session_timeout_ms)
        try:
            self._transport.call(self._transport.groups.Heartbeat, request,
                                 timeout_ms=int(min(self._request_timeout_s, 5.0) * 1000))
            log.info("group %s: %s left", self._group_id, member_id)
        except LogdError as exc:
            log.warning("group %s: leaving failed (the session will expire instead): %s", self._group_id, exc)


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}-{tp.partition}" for tp in partitions) or "nothing"
