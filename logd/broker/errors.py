"""Domain errors of the broker: what a request did wrong, in Kafka's words.

The hierarchy (``logd/server/errors.py`` maps each to a gRPC status and ErrorCode)::

    BrokerError
     ├── TopicNotFoundError          no topic by that name
     ├── TopicAlreadyExistsError     create with a name in use
     ├── InvalidTopicError           bad name, or an internal topic a user may not touch
     ├── InvalidConfigError          unknown config key, bad value, bad partition count
     ├── PartitionNotFoundError      the topic has no such partition
     ├── RecordTooLargeError         a batch larger than the topic's max.message.bytes
     ├── InvalidRequestError         any other malformed field
     └── BrokerUnavailableError      starting up (recovering) or shutting down; retriable

Errors raised by the storage engine (``logd.storage.errors``: OffsetOutOfRangeError,
StorageError, ...) and by the codec (``CorruptBatchError``) pass through the broker
unchanged: they already say what went wrong.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of the broker's domain errors; the message is meant for a person."""


class TopicNotFoundError(BrokerError):
    pass


class TopicAlreadyExistsError(BrokerError):
    pass


class InvalidTopicError(BrokerError):
    pass


class InvalidConfigError(BrokerError):
    pass


class PartitionNotFoundError(BrokerError):
    pass


class RecordTooLargeError(BrokerError):
    pass


class InvalidRequestError(BrokerError):
    pass


class BrokerUnavailableError(BrokerError):
    pass
