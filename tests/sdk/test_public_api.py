"""The SDK's public surface: the names of the contract, nothing more by accident."""

import dataclasses

import pytest

import logd_sdk
from logd_sdk import LogdError, Record, TopicPartition
from logd_sdk._types import make_record

EXPECTED_ALL = [
    "Admin", "BrokerUnavailableError", "Consumer", "CorruptRecordError", "FencedMemberError",
    "FutureRecordMetadata", "GroupDescription", "GroupNotEmptyError", "GroupNotFoundError",
    "IllegalStateError", "InvalidConfigError", "InvalidGroupIdError", "InvalidRequestError",
    "InvalidTopicError", "LogdError", "LogdTimeoutError", "MemberDescription", "NotAssignedError",
    "OffsetOutOfRangeError", "OutOfOrderSequenceError", "PartitionInfo", "PartitionNotFoundError",
    "PartitionOffsets", "Producer", "ProducerFencedError", "Record", "RecordMetadata",
    "RecordTooLargeError", "StorageError", "TopicAlreadyExistsError", "TopicDescription",
    "TopicNotFoundError", "TopicPartition", "UnknownMemberError", "UnknownProducerIdError",
    "UnknownServerError", "UnsupportedVersionError",
]

CONTRACT_ERRORS = ["TopicNotFoundError", "TopicAlreadyExistsError", "InvalidTopicError", "InvalidConfigError",
                   "RecordTooLargeError", "OffsetOutOfRangeError", "NotAssignedError", "FencedMemberError",
                   "BrokerUnavailableError"]


def test_all_is_pinned():
    """__all__ changes only on purpose: this list is the public API."""
    assert sorted(logd_sdk.__all__) == sorted(EXPECTED_ALL)
    for name in logd_sdk.__all__:
        assert getattr(logd_sdk, name) is not None


def test_every_error_is_a_logd_error():
    """Every exported error class, the contract's included, derives from LogdError."""
    for name in CONTRACT_ERRORS:
        assert name in logd_sdk.__all__
    for name in logd_sdk.__all__:
        obj = getattr(logd_sdk, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, LogdError), name
    assert issubclass(logd_sdk.LogdTimeoutError, TimeoutError)
    assert issubclass(logd_sdk.StorageError, logd_sdk.BrokerUnavailableError)


def test_result_shapes_have_the_contract_fields():
    """The dataclasses carry exactly the contract's field names, in order."""
    shapes = {
        "TopicDescription": ["name", "partitions", "config"],
        "PartitionInfo": ["partition", "log_start_offset", "log_end_offset", "size_bytes"],
        "RecordMetadata": ["topic", "partition", "offset", "timestamp_ms"],
        "Record": ["topic", "partition", "offset", "timestamp_ms", "key", "value", "headers"],
        "GroupDescription": ["group_id", "state", "members", "offsets"],
        "MemberDescription": ["member_id", "group_instance_id", "assignment"],
        "PartitionOffsets": ["committed_offset", "log_end_offset", "lag"],
        "TopicPartition": ["topic", "partition"],
    }
    for name, fields in shapes.items():
        cls = getattr(logd_sdk, name)
        assert [f.name for f in dataclasses.fields(cls)] == fields, name
        assert cls.__dataclass_params__.frozen, name


def test_topic_partition_is_hashable_ordered_and_frozen():
    """TopicPartition works as a dict key, sorts by (topic, partition) and cannot change."""
    a, b = TopicPartition("a", 1), TopicPartition("a", 0)
    assert {a: 1}[TopicPartition("a", 1)] == 1
    assert sorted([a, b]) == [b, a]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.partition = 3  # type: ignore[misc]


def test_fast_record_construction_makes_real_records():
    """make_record's re-classed twin is an ordinary, equal, frozen Record."""
    fast = make_record("t", 1, 2, 3, b"k", b"v", [("h", b"1")])
    slow = Record("t", 1, 2, 3, b"k", b"v", [("h", b"1")])
    assert type(fast) is Record and fast == slow and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.offset = 9  # type: ignore[misc]
