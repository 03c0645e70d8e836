"""``GroupService`` servicer: protobuf <-> :class:`logd.groups.GroupCoordinator`.

Thin, as Liftbridge's handlers: translate the request, make one coordinator call,
translate the answer. Domain errors become a gRPC status with the trailing metadata
``("logd-error", NAME)`` through the server's one error table (logd/server/errors.py).

:class:`ExpiryTicker` evicts silent members in the background: a daemon thread calling
``coordinator.expire()`` every ``interval_ms`` (requests also evict lazily, so the
ticker only bounds how late an eviction is noticed when the group is otherwise idle).
Thread safety: the servicer holds no state but the coordinator, which is thread-safe.

Wiring (``BrokerServer``): the coordinator can only replay ``__consumer_offsets`` once the
broker is open, so register the servicer first and attach the coordinator later::

    servicer = add_to_server(server)                      # answers UNAVAILABLE until attached
    extension = GroupServiceExtension(servicer, lambda: coordinator_for_broker(broker))
    # extension.start() once the broker is open; extension.stop() before it closes
"""

from __future__ import annotations

import logging
import threading

import grpc

from logd.groups import (
    OFFSETS_TOPIC,
    GroupCoordinator,
    OffsetAndMetadata,
    PartitionOffsetsLog,
    TopicPartition,
)
from logd.groups import errors as group_errors
from logd.server import errors as server_errors
from logd_sdk.protocol import common_pb2, groups_pb2, groups_pb2_grpc

log = logging.getLogger(__name__)

def _tp(message) -> TopicPartition:
    return TopicPartition(message.topic, message.partition)


def _tp_messages(partitions) -> list[common_pb2.TopicPartition]:
    return [common_pb2.TopicPartition(topic=tp.topic, partition=tp.partition) for tp in partitions]


class GroupServicer(groups_pb2_grpc.GroupServiceServicer):
    """The ``logd.v1.GroupService`` implementation over a :class:`GroupCoordinator`."""

    def __init__(self, coordinator: GroupCoordinator | None = None) -> None:
        self._coordinator_or_none = coordinator

    def attach(self, coordinator: GroupCoordinator) -> None:
        """Start answering with ``coordinator`` (once the broker has recovered)."""
        self._coordinator_or_none = coordinator

    @property
    def _coordinator(self) -> GroupCoordinator:
        coordinator = self._coordinator_or_none
        if coordinator is None:
            raise group_errors.CoordinatorLoadingError("the group coordinator is still loading; retry shortly")
        return coordinator

    @server_errors.translate_errors
    def Heartbeat(self, request, context):
        result = self._coordinator.heartbeat(
            request.group_id, request.member_id, request.member_epoch,
            instance_id=request.group_instance_id,
            subscribed_topics=list(request.subscribed_topics),
            owned_partitions=[_tp(p) for p in request.owned_partitions],
            session_timeout_ms=request.session_timeout_ms,
        )
        if request.member_epoch in (0, -1, -2):  # membership changes; plain heartbeats stay quiet
            what = "joined" if request.member_epoch == 0 else "left"
            log.info("member %s %s group %s (epoch %d, %d partitions assigned)", result.member_id, what,
                     request.group_id, result.member_epoch, len(result.assignment))
        return groups_pb2.HeartbeatResponse(
            member_id=result.member_id, member_epoch=result.member_epoch,
            heartbeat_interval_ms=result.heartbeat_interval_ms, assignment=_tp_messages(result.assignment),
        )

    @server_errors.translate_errors
    def CommitOffsets(self, request, context):
        offsets = {
            TopicPartition(o.topic, o.partition): OffsetAndMetadata(o.offset, o.metadata) for o in request.offsets
        }
        self._coordinator.commit_offsets(request.group_id, request.member_id, request.member_epoch, offsets)
        return groups_pb2.CommitOffsetsResponse()

    @server_errors.translate_errors
    def FetchCommittedOffsets(self, request, context):
        committed = self._coordinator.fetch_committed_offsets(
            request.group_id, [_tp(p) for p in request.partitions] or None
        )
        Committed = groups_pb2.FetchCommittedOffsetsResponse.Committed
        return groups_pb2.FetchCommittedOffsetsResponse(offsets=[
            Committed(topic=tp.topic, partition=tp.partition, offset=offset) for tp, offset in committed.items()
        ])

    @server_errors.translate_errors
    def ListGroups(self, request, context):
        return groups_pb2.ListGroupsResponse(group_ids=self._coordinator.list_groups())

    @server_errors.translate_errors
    def DescribeGroup(self, request, context):
        description = self._coordinator.describe_group(request.group_id)
        Response = groups_pb2.DescribeGroupResponse
        return Response(
            group_id=description.group_id,
            state=description.state,
            members=[
                Response.Member(member_id=m.member_id, group_instance_id=m.group_instance_id,
                                assignment=_tp_messages(m.assignment))
                for m in description.members
            ],
            offsets=[
                Response.PartitionOffsets(topic=o.topic, partition=o.partition, committed_offset=o.committed_offset,
                                          log_end_offset=o.log_end_offset, lag=o.lag)
                for o in description.offsets
            ],
        )

    @server_errors.translate_errors
    def ResetOffsets(self, request, context):
        offsets = {TopicPartition(o.topic, o.partition): o.offset for o in request.offsets}
        self._coordinator.reset_offsets(request.group_id, offsets)
        log.info("reset offsets of group %s: %s", request.group_id,
                 ", ".join(f"{tp.topic}-{tp.partition}={offset}" for tp, offset in sorted(offsets.items())))
        return groups_pb2.ResetOffsetsResponse()

    @server_errors.translate_errors
    def DeleteGroup(self, request, context):
        self._coordinator.delete_group(request.group_id)
        log.info("deleted group %s", request.group_id)
        return groups_pb2.DeleteGroupResponse()


def add_to_server(server: grpc.Server, coordinator: GroupCoordinator | None = None) -> GroupServicer:
    """Register ``GroupService`` on ``server``; returns the servicer (attach a
    coordinator later with :meth:`GroupServicer.attach` when ``coordinator`` is None)."""
    servicer = GroupServicer(coordinator)
    groups_pb2_grpc.add_GroupServiceServicer_to_server(servicer, server)
    return servicer


class ExpiryTicker:
    """Calls ``coordinator.expire()`` every ``interval_ms`` on a daemon thread.

    ``start()`` once, ``stop()`` to end it (waits for the thread). Errors are logged,
    never raised: a failed coordinator refuses requests by itself.
    """

    def __init__(self, coordinator: GroupCoordinator, interval_ms: int = 100) -> None:
        assert interval_ms > 0
        self._coordinator = coordinator
        self._interval_s = interval_ms / 1000
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logd-group-expiry", daemon=True)

    def start(self) -> "ExpiryTicker":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        reported = False
        while not self._stopped.wait(self._interval_s):
            try:
                self._coordinator.expire()
            except group_errors.CoordinatorNotAvailableError:
                pass  # already reported when the write failed
            except Exception:
                if not reported:
                    log.exception("group member expiry failed")
                    reported = True


#: Kafka's settings for its offsets topic: compacted, with segments small enough that the
#: cleaner (which never touches the active segment) keeps replay at start-up short.
OFFSETS_TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(100 * 1024 * 1024)}


def coordinator_for_broker(broker) -> GroupCoordinator:
    """A coordinator over an open ``logd.broker.Broker``: offsets in partition 0 of the
    internal compacted topic ``__consumer_offsets`` (created on first use), partition
    counts and end offsets read from the broker's topics."""
    topic = broker.topics.get(OFFSETS_TOPIC)
    if topic is None:
        broker.create_topic(OFFSETS_TOPIC, 1, OFFSETS_TOPIC_CONFIG, internal=True)
        topic = broker.topics.require(OFFSETS_TOPIC)
    offsets_log = PartitionOffsetsLog(topic.partitions[0].log)

    def partition_count(name: str) -> int:
        found = broker.topics.get(name)
        return len(found.partitions) if found is not None else 0

    def log_end_offset(name: str, partition: int) -> int | None:
        found = broker.topics.get(name)
        if found is None or not 0 <= partition < len(found.partitions):
            return None
        return found.partitions[partition].log.high_watermark

    coordinator = GroupCoordinator(offsets_log, partition_count, log_end_offset)
    # A deleted topic's offsets go with it (a topic created again starts at offset 0):
    # those of topics deleted before (a crash in between) at once, the others on deletion.
    coordinator.forget_missing_topics(lambda name: broker.topics.get(name) is not None)
    broker.topic_deleted_listeners.append(coordinator.forget_topic)
    return coordinator


class GroupServiceExtension:
    """``BrokerServer`` extension: ``start()`` (broker open) builds the coordinator,
    attaches it to the servicer and starts the expiry ticker; ``stop()`` stops the ticker."""

    def __init__(self, servicer: GroupServicer, coordinator_factory, expiry_interval_ms: int = 100) -> None:
        self._servicer = servicer
        self._coordinator_factory = coordinator_factory
        self._expiry_interval_ms = expiry_interval_ms
        self._ticker: ExpiryTicker | None = None
        self.coordinator: GroupCoordinator | None = None

    def start(self) -> None:
        self.coordinator = self._coordinator_factory()
        self._servicer.attach(self.coordinator)
        self._ticker = ExpiryTicker(self.coordinator, self._expiry_interval_ms).start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
