"""TopicService over gRPC against a real in-process broker."""

from __future__ import annotations

import grpc
import pytest

from logd_sdk.protocol import common_pb2, topics_pb2

from .helpers import RPC_TIMEOUT_S, batch, error_of

Code = grpc.StatusCode


def test_create_list_describe(client):
    """A created topic is listed and described with its partitions and every config, defaults included."""
    client.create("orders", 3, retention_ms="86400000")
    client.create("a.b_c-1", None)
    assert client.list_topics() == ["a.b_c-1", "orders"]
    description = client.describe("orders")
    assert description.name == "orders"
    assert [(p.partition, p.log_start_offset, p.log_end_offset) for p in description.partitions] == [
        (0, 0, 0), (1, 0, 0), (2, 0, 0)]
    assert description.config["retention.ms"] == "86400000"
    assert description.config["cleanup.policy"] == "delete"
    assert description.config["segment.bytes"] == str(1 << 30)
    assert description.config["max.message.bytes"] == "1048588"
    assert len(description.config) == 9
    assert len(client.describe("a.b_c-1").partitions) == 1  # unset partitions = 1


def test_alter_changes_only_given_keys(client):
    """alter keeps earlier overrides, changes the given keys and normalises values."""
    client.create("t", 1, retention_ms="1000")
    client.topics.AlterTopicConfig(topics_pb2.AlterTopicConfigRequest(
        name="t", config={"cleanup.policy": "delete,compact", "segment.bytes": "2048"}), timeout=RPC_TIMEOUT_S)
    config = client.describe("t").config
    assert (config["retention.ms"], config["cleanup.policy"], config["segment.bytes"]) == ("1000", "compact,delete", "2048")


def test_alter_segment_bytes_takes_effect_without_restart(client, server):
    """After lowering segment.bytes the partition's segments roll at the new size at once."""
    client.create("roll", 1)
    client.topics.AlterTopicConfig(topics_pb2.AlterTopicConfigRequest(
        name="roll", config={"segment.bytes": "1024"}), timeout=RPC_TIMEOUT_S)
    for _ in range(20):
        assert client.produce("roll", 0, batch(bytes(200), codec_id=0)).error.code == common_pb2.NONE
    assert client.describe("roll").partitions[0].log_end_offset == 20
    assert len(list((server.data_dir / "roll-0").glob("*.log"))) >= 4


def test_create_partitions_grows_and_refuses_shrink(client):
    """create_partitions adds empty partitions; a total not above the current count is INVALID_CONFIG."""
    client.create("grow", 2)
    client.topics.CreatePartitions(topics_pb2.CreatePartitionsRequest(name="grow", total=5), timeout=RPC_TIMEOUT_S)
    assert [p.partition for p in client.describe("grow").partitions] == [0, 1, 2, 3, 4]
    assert client.produce("grow", 4, batch(b"x")).base_offset == 0
    for total in (5, 3, 0):
        code, name, _ = error_of(lambda: client.topics.CreatePartitions(
            topics_pb2.CreatePartitionsRequest(name="grow", total=total), timeout=RPC_TIMEOUT_S))
        assert (code, name) == (Code.INVALID_ARGUMENT, "INVALID_CONFIG")


def test_delete_then_reuse_name_starts_empty(client, server):
    """A deleted topic's name is reusable at once and the new topic starts empty at offset 0."""
    client.create("reuse", 2)
    for _ in range(3):
        client.produce("reuse", 0, batch(b"old"))
    client.topics.DeleteTopic(topics_pb2.DeleteTopicRequest(name="reuse"), timeout=RPC_TIMEOUT_S)
    assert client.list_topics() == []
    code, name, _ = error_of(lambda: client.describe("reuse"))
    assert (code, name) == (Code.NOT_FOUND, "TOPIC_NOT_FOUND")
    client.create("reuse", 1)
    assert [(p.log_start_offset, p.log_end_offset) for p in client.describe("reuse").partitions] == [(0, 0)]
    assert client.produce("reuse", 0, batch(b"new")).base_offset == 0
    assert not (server.data_dir / "reuse-1").exists()
    assert not [p for p in server.data_dir.iterdir() if p.name.endswith("-delete")]


def test_create_twice_is_already_exists(client):
    client.create("dup", 1)
    code, name, details = error_of(lambda: client.create("dup", 2))
    assert (code, name) == (Code.ALREADY_EXISTS, "TOPIC_ALREADY_EXISTS")
    assert "dup" in details


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "x" * 250, "__x", "sp ace", "ü"])
def test_bad_topic_names_are_invalid_topic(client, bad):
    """Every illegal or internal name is refused with INVALID_TOPIC and the broker keeps serving."""
    code, name, details = error_of(lambda: client.create(bad, 1))
    assert (code, name) == (Code.INVALID_ARGUMENT, "INVALID_TOPIC"), details
    client.create("fine", 1)
    assert client.list_topics() == ["fine"]


def test_longest_legal_name_works(client, server):
    """A 249-character name is legal and gets its partition directory."""
    client.create("y" * 249, 1)
    assert client.list_topics() == ["y" * 249]


@pytest.mark.parametrize("partitions", [0, -1, 100_000])
def test_bad_partition_counts_are_invalid_config(client, partitions):
    code, name, _ = error_of(lambda: client.create("p", partitions))
    assert (code, name) == (Code.INVALID_ARGUMENT, "INVALID_CONFIG")
    assert client.list_topics() == []


@pytest.mark.parametrize("config", [
    {"no.such.key": "1"}, {"segment.bytes": "1023"}, {"segment.bytes": "abc"}, {"retention.ms": "-2"},
    {"cleanup.policy": "keep"}, {"min.cleanable.dirty.ratio": "1.5"}, {"max.message.bytes": "10"},
])
def test_bad_configs_are_invalid_config(client, config):
    """Unknown keys and bad values are refused on create and on alter, naming the key."""
    code, name, details = error_of(lambda: client.topics.CreateTopic(
        topics_pb2.CreateTopicRequest(name="c", partitions=1, config=config), timeout=RPC_TIMEOUT_S))
    assert (code, name) == (Code.INVALID_ARGUMENT, "INVALID_CONFIG")
    assert next(iter(config)) in details
    client.create("c", 1)
    code, name, _ = error_of(lambda: client.topics.AlterTopicConfig(
        topics_pb2.AlterTopicConfigRequest(name="c", config=config), timeout=RPC_TIMEOUT_S))
    assert (code, name) == (Code.INVALID_ARGUMENT, "INVALID_CONFIG")
    assert client.describe("c").config["segment.bytes"] == str(1 << 30)  # unchanged by the refused alter


def test_unknown_topic_is_not_found_everywhere(client):
    """Describe, alter, grow and delete of a missing topic are NOT_FOUND / TOPIC_NOT_FOUND."""
    calls = [
        lambda: client.describe("ghost"),
        lambda: client.topics.AlterTopicConfig(topics_pb2.AlterTopicConfigRequest(
            name="ghost", config={"retention.ms": "1"}), timeout=RPC_TIMEOUT_S),
        lambda: client.topics.CreatePartitions(topics_pb2.CreatePartitionsRequest(name="ghost", total=2),
                                               timeout=RPC_TIMEOUT_S),
        lambda: client.topics.DeleteTopic(topics_pb2.DeleteTopicRequest(name="ghost"), timeout=RPC_TIMEOUT_S),
    ]
    for call in calls:
        assert error_of(call)[:2] == (Code.NOT_FOUND, "TOPIC_NOT_FOUND")


def test_internal_topics_hidden_and_protected(client, server):
    """A broker-made internal topic is listed only on request and refuses user writes and deletion."""
    server.broker.create_topic("__internal", 2, {"cleanup.policy": "compact"}, internal=True)
    assert client.list_topics() == []
    assert "__internal" in client.list_topics(include_internal=True)
    assert client.produce("__internal", 0, batch(b"x")).error.code == common_pb2.INVALID_TOPIC
    code, name, _ = error_of(lambda: client.topics.DeleteTopic(
        topics_pb2.DeleteTopicRequest(name="__internal"), timeout=RPC_TIMEOUT_S))
    assert (code, name) == (Code.INVALID_ARGUMENT, "INVALID_TOPIC")
    assert client.describe("__internal").config["cleanup.policy"] == "compact"


def test_delete_records_moves_log_start(client):
    """DeleteRecords moves the log start offset; -1 means the end; past the end is OFFSET_OUT_OF_RANGE."""
    client.create("dr", 2, segment_bytes="1024")
    for i in range(10):
        client.produce("dr", 0, batch(bytes(300), codec_id=0))
    request = topics_pb2.DeleteRecordsRequest(targets=[
        topics_pb2.DeleteRecordsRequest.Target(topic="dr", partition=0, offset=4),
        topics_pb2.DeleteRecordsRequest.Target(topic="dr", partition=1, offset=5),
        topics_pb2.DeleteRecordsRequest.Target(topic="dr", partition=7, offset=0),
    ])
    results = client.topics.DeleteRecords(request, timeout=RPC_TIMEOUT_S).results
    assert (results[0].error.code, results[0].log_start_offset) == (common_pb2.NONE, 4)
    assert results[1].error.code == common_pb2.OFFSET_OUT_OF_RANGE
    assert results[2].error.code == common_pb2.PARTITION_NOT_FOUND
    assert client.describe("dr").partitions[0].log_start_offset == 4
    fetched = client.fetch("dr", 0, 2)
    assert fetched.error.code == common_pb2.OFFSET_OUT_OF_RANGE
    assert client.list_offset("dr", 0, -2).offset == 4
    request = topics_pb2.DeleteRecordsRequest(targets=[
        topics_pb2.DeleteRecordsRequest.Target(topic="dr", partition=0, offset=-1)])
    (result,) = client.topics.DeleteRecords(request, timeout=RPC_TIMEOUT_S).results
    assert result.log_start_offset == 10
    assert client.fetch("dr", 0, 10).batches == b""
