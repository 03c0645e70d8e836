"""The typed errors of the logd SDK.

Every error the SDK raises for an operating problem is a :class:`LogdError`; a programmer
error (a wrong type, a negative offset passed to ``seek``) raises ``TypeError`` or
``ValueError`` at once instead. The hierarchy::

    LogdError                           .code = the broker's ErrorCode name, .retriable
    ├── TopicNotFoundError              TOPIC_NOT_FOUND: create the topic first
    ├── PartitionNotFoundError          PARTITION_NOT_FOUND: the topic has fewer partitions
    ├── TopicAlreadyExistsError         TOPIC_ALREADY_EXISTS
    ├── InvalidTopicError               INVALID_TOPIC: bad or internal topic name
    ├── InvalidConfigError              INVALID_CONFIG: bad config key or value, partition count
    ├── RecordTooLargeError             RECORD_TOO_LARGE: batch over max.message.bytes
    ├── OffsetOutOfRangeError           OFFSET_OUT_OF_RANGE, or no position and reset "none"
    ├── CorruptRecordError              CORRUPT_BATCH: a CRC or framing check failed
    ├── InvalidRequestError             INVALID_REQUEST: any other malformed field
    ├── NotAssignedError                NOT_ASSIGNED: the partition is not assigned to you
    ├── FencedMemberError               FENCED_MEMBER: stale member epoch or not the owner
    ├── UnknownMemberError              UNKNOWN_MEMBER: evicted or never joined
    ├── GroupNotFoundError              GROUP_NOT_FOUND
    ├── GroupNotEmptyError              GROUP_NOT_EMPTY: the group still has live members
    ├── InvalidGroupIdError             the call needs a consumer with a group_id
    ├── ProducerFencedError             INVALID_PRODUCER_EPOCH
    ├── OutOfOrderSequenceError         OUT_OF_ORDER_SEQUENCE
    ├── UnknownProducerIdError          UNKNOWN_PRODUCER_ID
    ├── UnsupportedVersionError         the broker does not implement this call (yet)
    ├── IllegalStateError               the client was closed
    ├── UnknownServerError              UNKNOWN: a broker bug; the message says more
    ├── LogdTimeoutError (TimeoutError) a deadline passed (max_block_ms, delivery, result)
    └── BrokerUnavailableError          UNAVAILABLE: unreachable, shutting down, recovering
        └── StorageError                STORAGE_ERROR: the broker's disk is full or failed

``retriable`` is True for errors that may go away by themselves (the producer and the
consumer retry those with backoff before giving up).
"""

from __future__ import annotations


class LogdError(Exception):
    """Base of every logd operating error. ``code`` is the broker's ErrorCode name."""

    code: str = "UNKNOWN"
    retriable: bool = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class TopicNotFoundError(LogdError):
    """The topic does not exist (topics are never created implicitly)."""

    code = "TOPIC_NOT_FOUND"


class PartitionNotFoundError(LogdError):
    """The topic has no partition with that number."""

    code = "PARTITION_NOT_FOUND"


class TopicAlreadyExistsError(LogdError):
    """A topic with that name already exists."""

    code = "TOPIC_ALREADY_EXISTS"


class InvalidTopicError(LogdError):
    """The topic name is invalid or internal."""

    code = "INVALID_TOPIC"


class InvalidConfigError(LogdError):
    """A config key or value, or a partition count, is invalid."""

    code = "INVALID_CONFIG"


class RecordTooLargeError(LogdError):
    """The record or batch is larger than the topic's max.message.bytes."""

    code = "RECORD_TOO_LARGE"


class OffsetOutOfRangeError(LogdError):
    """The offset is below the log start offset or past the log end offset."""

    code = "OFFSET_OUT_OF_RANGE"


class CorruptRecordError(LogdError):
    """A record batch failed its CRC or framing check."""

    code = "CORRUPT_BATCH"


class InvalidRequestError(LogdError):
    """The broker rejected a malformed request."""

    code = "INVALID_REQUEST"


class NotAssignedError(LogdError):
    """The partition is not assigned to this consumer."""

    code = "NOT_ASSIGNED"


class FencedMemberError(LogdError):
    """The group member's epoch is stale or it does not own the partition."""

    code = "FENCED_MEMBER"


class UnknownMemberError(LogdError):
    """The group member was evicted or never joined; it must rejoin."""

    code = "UNKNOWN_MEMBER"


class GroupNotFoundError(LogdError):
    """The consumer group does not exist."""

    code = "GROUP_NOT_FOUND"


class GroupNotEmptyError(LogdError):
    """The consumer group still has live members."""

    code = "GROUP_NOT_EMPTY"


class InvalidGroupIdError(LogdError):
    """The call needs a consumer created with a group_id."""

    code = "INVALID_REQUEST"


class ProducerFencedError(LogdError):
    """A newer producer with the same producer id exists."""

    code = "INVALID_PRODUCER_EPOCH"


class OutOfOrderSequenceError(LogdError):
    """The broker saw a gap in the idempotent producer's sequence numbers."""

    code = "OUT_OF_ORDER_SEQUENCE"


class UnknownProducerIdError(LogdError):
    """The broker does not know the idempotent producer's id."""

    code = "UNKNOWN_PRODUCER_ID"


class UnsupportedVersionError(LogdError):
    """The broker does not implement this call."""

    code = "UNKNOWN"


class IllegalStateError(LogdError):
    """The client is closed."""

    code = "UNKNOWN"


class UnknownServerError(LogdError):
    """The broker failed unexpectedly."""

    code = "UNKNOWN"


class LogdTimeoutError(LogdError, TimeoutError):
    """A deadline passed before the operation completed."""

    code = "UNKNOWN"
    retriable = True


class BrokerUnavailableError(LogdError):
    """The broker cannot be reached, or is shutting down or recovering."""

    code = "UNAVAILABLE"
    retriable = True


class StorageError(BrokerUnavailableError):
    """The broker's disk is full or failed; retriable once fixed."""

    code = "STORAGE_ERROR"


#: ErrorCode name (common.proto) -> error class.
ERRORS_BY_CODE: dict[str, type[LogdError]] = {
    "UNKNOWN": UnknownServerError,
    "TOPIC_NOT_FOUND": TopicNotFoundError,
    "TOPIC_ALREADY_EXISTS": TopicAlreadyExistsError,
    "INVALID_TOPIC": InvalidTopicError,
    "INVALID_CONFIG": InvalidConfigError,
    "PARTITION_NOT_FOUND": PartitionNotFoundError,
    "CORRUPT_BATCH": CorruptRecordError,
    "RECORD_TOO_LARGE": RecordTooLargeError,
    "OFFSET_OUT_OF_RANGE": OffsetOutOfRangeError,
    "STORAGE_ERROR": StorageError,
    "INVALID_REQUEST": InvalidRequestError,
    "OUT_OF_ORDER_SEQUENCE": OutOfOrderSequenceError,
    "INVALID_PRODUCER_EPOCH": ProducerFencedError,
    "UNKNOWN_PRODUCER_ID": UnknownProducerIdError,
    "GROUP_NOT_FOUND": GroupNotFoundError,
    "FENCED_MEMBER": FencedMemberError,
    "UNKNOWN_MEMBER": UnknownMemberError,
    "GROUP_NOT_EMPTY": GroupNotEmptyError,
    "NOT_ASSIGNED": NotAssignedError,
    "UNAVAILABLE": BrokerUnavailableError,
}
