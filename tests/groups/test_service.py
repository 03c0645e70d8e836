"""The GroupService servicer over gRPC, the expiry ticker, and the wiring over a real Broker."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from logd.broker import Broker
from logd.groups import GroupCoordinator, MemoryOffsetsLog, OffsetAndMetadata, TopicPartition
from logd.server.groups import ExpiryTicker, GroupServiceExtension, add_to_server, coordinator_for_broker
from logd_sdk.protocol import common_pb2, groups_pb2, groups_pb2_grpc

from .sim import sequential_ids

COUNTS = {"t": 4}


def make_coordinator(log=None):
    return GroupCoordinator(log or MemoryOffsetsLog(), lambda t: COUNTS.get(t, 0), lambda t, p: 50,
                            member_id_factory=sequential_ids())


@pytest.fixture
def served():
    """(servicer, stub) on a free loopback port; the servicer starts without a coordinator."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    servicer = add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, groups_pb2_grpc.GroupServiceStub(channel)
    channel.close()
    server.stop(0).wait()


def error_of(call):
    """(status code, logd-error name) of a failing RPC."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    trailers = dict(raised.value.trailing_metadata() or ())
    return raised.value.code(), trailers.get("logd-error")


def join(stub, group="g", member_id=""):
    return stub.Heartbeat(groups_pb2.HeartbeatRequest(group_id=group, member_id=member_id, member_epoch=0,
                                                      subscribed_topics=["t"], session_timeout_ms=10_000))


def test_requests_before_attach_are_unavailable(served):
    """Until the coordinator is attached (broker recovering), requests get UNAVAILABLE."""
    servicer, stub = served
    assert error_of(lambda: stub.ListGroups(groups_pb2.ListGroupsRequest())) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    servicer.attach(make_coordinator())
    assert list(stub.ListGroups(groups_pb2.ListGroupsRequest()).group_ids) == []


def test_heartbeat_commit_fetch_describe_over_grpc(served):
    """A member joins, commits, and the group's offsets and members come back over the wire."""
    servicer, stub = served
    servicer.attach(make_coordinator())
    joined = join(stub)
    assert joined.member_id and joined.member_epoch >= 1 and joined.heartbeat_interval_ms > 0
    assert {(p.topic, p.partition) for p in joined.assignment} == {("t", i) for i in range(4)}
    Offset = groups_pb2.CommitOffsetsRequest.Offset
    stub.CommitOffsets(groups_pb2.CommitOffsetsRequest(
        group_id="g", member_id=joined.member_id, member_epoch=joined.member_epoch,
        offsets=[Offset(topic="t", partition=1, offset=7, metadata="m")]))
    fetched = stub.FetchCommittedOffsets(groups_pb2.FetchCommittedOffsetsRequest(
        group_id="g", partitions=[common_pb2.TopicPartition(topic="t", partition=1),
                                  common_pb2.TopicPartition(topic="t", partition=2)]))
    assert [(c.topic, c.partition, c.offset) for c in fetched.offsets] == [("t", 1, 7), ("t", 2, -1)]
    described = stub.DescribeGroup(groups_pb2.DescribeGroupRequest(group_id="g"))
    assert described.state == "Stable"
    assert [m.member_id for m in described.members] == [joined.member_id]
    row = next(o for o in described.offsets if o.partition == 1)
    assert (row.committed_offset, row.log_end_offset, row.lag) == (7, 50, 43)
    assert list(stub.ListGroups(groups_pb2.ListGroupsRequest()).group_ids) == ["g"]
    left = stub.Heartbeat(groups_pb2.HeartbeatRequest(group_id="g", member_id=joined.member_id, member_epoch=-1))
    assert left.member_epoch == -1
    stub.ResetOffsets(groups_pb2.ResetOffsetsRequest(
        group_id="g", offsets=[groups_pb2.ResetOffsetsRequest.Offset(topic="t", partition=1, offset=0)]))
    stub.DeleteGroup(groups_pb2.DeleteGroupRequest(group_id="g"))
    assert stub.DescribeGroup(groups_pb2.DescribeGroupRequest(group_id="g")).state == "Dead"


def test_domain_errors_carry_status_and_logd_error(served):
    """Each domain error maps to its gRPC status and its ErrorCode name in the trailers."""
    servicer, stub = served
    servicer.attach(make_coordinator())
    joined = join(stub)
    Offset = groups_pb2.CommitOffsetsRequest.Offset
    commit = lambda member_id, epoch: stub.CommitOffsets(groups_pb2.CommitOffsetsRequest(  # noqa: E731
        group_id="g", member_id=member_id, member_epoch=epoch, offsets=[Offset(topic="t", partition=0, offset=1)]))
    assert error_of(lambda: commit(joined.member_id, joined.member_epoch + 5)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "FENCED_MEMBER")
    assert error_of(lambda: commit("ghost", 1)) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MEMBER")
    assert error_of(lambda: stub.DeleteGroup(groups_pb2.DeleteGroupRequest(group_id="g"))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "GROUP_NOT_EMPTY")
    assert error_of(lambda: stub.DeleteGroup(groups_pb2.DeleteGroupRequest(group_id="nope"))) == (
        grpc.StatusCode.NOT_FOUND, "GROUP_NOT_FOUND")
    assert error_of(lambda: join(stub, group="")) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")


def test_storage_failure_maps_through_the_server_table(served):
    """A failed append of __consumer_offsets is UNAVAILABLE/STORAGE_ERROR, then and afterwards."""
    class BrokenLog(MemoryOffsetsLog):
        def append(self, records):
            raise OSError(5, "Input/output error")

    servicer, stub = served
    servicer.attach(make_coordinator(BrokenLog()))
    assert error_of(lambda: join(stub)) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_ERROR")
    assert error_of(lambda: stub.ListGroups(groups_pb2.ListGroupsRequest())) == (
        grpc.StatusCode.UNAVAILABLE, "STORAGE_ERROR")


def test_expiry_ticker_evicts_without_any_request():
    """The ticker evicts a silent member on its own: the member's tombstone reaches the log."""
    log = MemoryOffsetsLog()
    coordinator = make_coordinator(log)
    member = coordinator.heartbeat("g", "", 0, subscribed_topics=["t"], session_timeout_ms=200)
    ticker = ExpiryTicker(coordinator, interval_ms=20).start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(v is None for _, v in log.records):
            time.sleep(0.02)
    finally:
        ticker.stop()
    assert any(value is None for _, value in log.records), "the member was not evicted"
    assert coordinator.describe_group("g").members == ()
    assert member.member_id


def test_extension_over_a_real_broker_keeps_offsets_across_restart(tmp_path):
    """Offsets committed through coordinator_for_broker live in __consumer_offsets and survive a broker restart."""
    broker = Broker(tmp_path / "data")
    broker.open()
    try:
        broker.create_topic("t", 3)
        extension = GroupServiceExtension(add_to_server(grpc.server(ThreadPoolExecutor(1))),
                                          lambda: coordinator_for_broker(broker), expiry_interval_ms=50)
        extension.start()
        coordinator = extension.coordinator
        member = coordinator.heartbeat("g", "", 0, subscribed_topics=["t"])
        assert len(member.assignment) == 3
        coordinator.commit_offsets("g", member.member_id, member.member_epoch,
                                   {tp: OffsetAndMetadata(tp.partition + 1) for tp in member.assignment})
        assert "__consumer_offsets" not in broker.list_topics()
        assert "__consumer_offsets" in broker.list_topics(include_internal=True)
        assert broker.describe_topic("__consumer_offsets").config["cleanup.policy"] == "compact"
        description = coordinator.describe_group("g")
        assert {o.log_end_offset for o in description.offsets} == {0}
        extension.stop()
    finally:
        broker.close()
    broker = Broker(tmp_path / "data")
    broker.open()
    try:
        restarted = coordinator_for_broker(broker)
        assert restarted.fetch_committed_offsets("g") == {TopicPartition("t", p): p + 1 for p in range(3)}
    finally:
        broker.close()
