"""Admin against a real broker: every topic call and every bad input of the contract."""

import pytest

from logd_sdk import (
    InvalidConfigError,
    InvalidTopicError,
    PartitionInfo,
    Producer,
    TopicAlreadyExistsError,
    TopicDescription,
    TopicNotFoundError,
    TopicPartition,
)


def test_create_list_describe_alter_grow_delete(admin, topic):
    """The topic lifecycle of the contract, with its result shapes."""
    admin.create_topic(topic, partitions=3, config={"retention.ms": "86400000"})
    assert topic in admin.list_topics()
    description = admin.describe_topic(topic)
    assert isinstance(description, TopicDescription) and description.name == topic
    assert description.partitions == [PartitionInfo(p, 0, 0, 0) for p in range(3)]
    assert description.config["retention.ms"] == "86400000"
    assert "cleanup.policy" in description.config  # defaults included
    admin.alter_topic_config(topic, {"cleanup.policy": "compact"})
    after = admin.describe_topic(topic).config
    assert after["cleanup.policy"] == "compact" and after["retention.ms"] == "86400000"
    admin.create_partitions(topic, total=6)
    assert len(admin.describe_topic(topic).partitions) == 6
    admin.delete_topic(topic)
    assert topic not in admin.list_topics()


def test_delete_records_moves_the_log_start_offset(admin, broker, topic):
    """delete_records returns and applies the new log start offset."""
    admin.create_topic(topic, partitions=1, config={"segment.bytes": "1024"})
    with Producer(broker.address, linger_ms=0) as producer:
        for i in range(100):
            producer.send(topic, value=b"%03d" % i)
    tp = TopicPartition(topic, 0)
    assert admin.delete_records({tp: 40}) == {tp: 40}
    info = admin.describe_topic(topic).partitions[0]
    assert (info.log_start_offset, info.log_end_offset) == (40, 100)


def test_a_deleted_name_is_reusable_at_once_and_starts_empty(admin, broker, topic):
    """delete_topic then create_topic gives an empty topic at offset 0."""
    admin.create_topic(topic)
    with Producer(broker.address) as producer:
        producer.send(topic, value=b"old").result(timeout=10)
    admin.delete_topic(topic)
    admin.create_topic(topic, partitions=2)
    assert [p.log_end_offset for p in admin.describe_topic(topic).partitions] == [0, 0]
    with Producer(broker.address) as producer:
        assert producer.send(topic, value=b"new", partition=1).result(timeout=10).offset == 0


@pytest.mark.parametrize("name", ["", ".", "..", "has space", "slash/name", "__internal", "x" * 250, "ünï"])
def test_bad_topic_names_are_invalid_topic(admin, name):
    with pytest.raises(InvalidTopicError):
        admin.create_topic(name)


@pytest.mark.parametrize("partitions,config", [
    (-1, None), (3_000_000_000, None), (1, {"no.such.key": "1"}), (1, {"retention.ms": "soon"}), (1, {"cleanup.policy": "shred"}),
    (1, {"segment.bytes": "100"}), (1, {"max.message.bytes": "-5"}),
])
def test_bad_configs_and_partition_counts_are_invalid_config(admin, topic, partitions, config):
    with pytest.raises(InvalidConfigError):
        admin.create_topic(topic, partitions=partitions, config=config)
    assert topic not in admin.list_topics()


def test_refusals_on_existing_and_missing_topics(admin, topic):
    """Existing names, missing topics, shrinking and bad alters raise their typed errors."""
    admin.create_topic(topic, partitions=2)
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topic(topic)
    with pytest.raises(InvalidConfigError):
        admin.create_partitions(topic, total=1)
    with pytest.raises(InvalidConfigError):  # beyond the wire's int32: protobuf's untyped ValueError
        admin.create_partitions(topic, total=1 << 31)
    with pytest.raises(InvalidConfigError):
        admin.alter_topic_config(topic, {"retention.ms": "-7x"})
    for call in (lambda: admin.describe_topic(topic + "-missing"), lambda: admin.delete_topic(topic + "-missing"),
                 lambda: admin.alter_topic_config(topic + "-missing", {"retention.ms": "1"}),
                 lambda: admin.create_partitions(topic + "-missing", total=3)):
        with pytest.raises(TopicNotFoundError):
            call()
    assert admin.describe_topic(topic).name == topic  # the broker keeps serving


def test_type_errors_are_raised_before_any_call(admin):
    """Programmer errors (wrong types, negative offsets) fail locally."""
    with pytest.raises(TypeError):
        admin.create_topic(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        admin.create_topic("t", config={"retention.ms": object()})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        admin.delete_records({TopicPartition("t", 0): -5})
