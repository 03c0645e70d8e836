"""The broker: topics and partitions, offset assignment, waiting for new data.

``Broker`` (broker.py) is the one object the server layer talks to; ``TopicManager``
(topics.py) keeps the topics of a data directory; ``config``, ``names``, ``metadata``,
``producer_ids`` and ``partition`` are its parts. No gRPC or protobuf in here.
"""

from .broker import Broker
from .config import CONFIG_KEYS, TopicConfig
from .errors import (
    BrokerError, BrokerUnavailableError, InvalidConfigError, InvalidRequestError, InvalidTopicError,
    PartitionNotFoundError, RecordTooLargeError, TopicAlreadyExistsError, TopicNotFoundError,
)
from .models import (
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, DeleteRecordsResult, DeleteRecordsTarget, FetchResult, FetchTarget,
    OffsetQuery, OffsetResult, PartitionInfo, ProduceResult, ProduceTarget, TopicDescription,
)

__all__ = [
    "Broker", "CONFIG_KEYS", "TopicConfig",
    "BrokerError", "BrokerUnavailableError", "InvalidConfigError", "InvalidRequestError", "InvalidTopicError",
    "PartitionNotFoundError", "RecordTooLargeError", "TopicAlreadyExistsError", "TopicNotFoundError",
    "EARLIEST_TIMESTAMP", "LATEST_TIMESTAMP", "DeleteRecordsResult", "DeleteRecordsTarget", "FetchResult",
    "FetchTarget", "OffsetQuery", "OffsetResult", "PartitionInfo", "ProduceResult", "ProduceTarget",
    "TopicDescription",
]
