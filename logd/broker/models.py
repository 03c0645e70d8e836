"""The plain values the broker's methods take and return (no protobuf past the server).

Per-partition results carry ``error``: None on success, else the exception that the
partition failed with (a ``BrokerError``, a storage error or ``CorruptBatchError``);
the server turns it into an ``Error`` field with ``logd/server/errors.py``'s table.
"""

from __future__ import annotations

from typing import NamedTuple

# DescribeTopic's result is the contract's shape itself (config: every key, defaults
# included), so the broker returns the SDK's classes; the SDK never imports the server.
from logd_sdk import PartitionInfo, TopicDescription

__all__ = [
    "EARLIEST_TIMESTAMP", "LATEST_TIMESTAMP", "DeleteRecordsResult", "DeleteRecordsTarget", "FetchResult",
    "FetchTarget", "OffsetQuery", "OffsetResult", "PartitionInfo", "ProduceResult", "ProduceTarget",
    "TopicDescription",
]


class ProduceTarget(NamedTuple):
    topic: str
    partition: int
    batches: bytes  # one or more concatenated record batches (codec format)


class ProduceResult(NamedTuple):
    topic: str
    partition: int
    error: Exception | None = None
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1


class FetchTarget(NamedTuple):
    topic: str
    partition: int
    offset: int
    max_bytes: int  # this partition's budget (soft for its first batch, see Broker.fetch)


class FetchResult(NamedTuple):
    topic: str
    partition: int
    error: Exception | None = None
    high_watermark: int = -1
    log_start_offset: int = -1
    batches: bytes = b""


class OffsetQuery(NamedTuple):
    topic: str
    partition: int
    timestamp_ms: int  # EARLIEST_TIMESTAMP, LATEST_TIMESTAMP or a time in ms


class OffsetResult(NamedTuple):
    topic: str
    partition: int
    error: Exception | None = None
    offset: int = -1
    timestamp_ms: int = -1


class DeleteRecordsTarget(NamedTuple):
    topic: str
    partition: int
    offset: int  # the new log start offset; -1 = the log end offset


class DeleteRecordsResult(NamedTuple):
    topic: str
    partition: int
    error: Exception | None = None
    log_start_offset: int = -1


#: ListOffsets query values (Kafka's): the log start offset and the log end offset.
EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
