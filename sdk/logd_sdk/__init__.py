"""logd's Python client: Admin, Producer, Consumer and their result types and errors.

    from logd_sdk import Admin, Producer, Consumer, TopicPartition

The implementation lives in private modules (``_admin``, ``_producer``, ``_consumer``,
...); only the names re-exported here are public. ``codec`` (the record batch format)
and ``protocol`` (generated gRPC stubs) are public modules shared with the broker.
"""

from logd_sdk._admin import Admin
from logd_sdk._consumer import Consumer
from logd_sdk._errors import (
    BrokerUnavailableError,
    CorruptRecordError,
    FencedMemberError,
    GroupNotEmptyError,
    GroupNotFoundError,
    IllegalStateError,
    InvalidConfigError,
    InvalidGroupIdError,
    InvalidRequestError,
    InvalidTopicError,
    LogdError,
    LogdTimeoutError,
    NotAssignedError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    PartitionNotFoundError,
    ProducerFencedError,
    RecordTooLargeError,
    StorageError,
    TopicAlreadyExistsError,
    TopicNotFoundError,
    UnknownMemberError,
    UnknownProducerIdError,
    UnknownServerError,
    UnsupportedVersionError,
)
from logd_sdk._future import FutureRecordMetadata
from logd_sdk._producer import Producer
from logd_sdk._types import (
    GroupDescription,
    MemberDescription,
    PartitionInfo,
    PartitionOffsets,
    Record,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "Admin",
    "BrokerUnavailableError",
    "Consumer",
    "CorruptRecordError",
    "FencedMemberError",
    "FutureRecordMetadata",
    "GroupDescription",
    "GroupNotEmptyError",
    "GroupNotFoundError",
    "IllegalStateError",
    "InvalidConfigError",
    "InvalidGroupIdError",
    "InvalidRequestError",
    "InvalidTopicError",
    "LogdError",
    "LogdTimeoutError",
    "MemberDescription",
    "NotAssignedError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "PartitionInfo",
    "PartitionNotFoundError",
    "PartitionOffsets",
    "Producer",
    "ProducerFencedError",
    "Record",
    "RecordMetadata",
    "RecordTooLargeError",
    "StorageError",
    "TopicAlreadyExistsError",
    "TopicDescription",
    "TopicNotFoundError",
    "TopicPartition",
    "UnknownMemberError",
    "UnknownProducerIdError",
    "UnknownServerError",
    "UnsupportedVersionError",
]
