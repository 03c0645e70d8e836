"""Admin: topic and consumer-group administration (TopicService and GroupService).

Each method is one unary call (retried on unavailability by the transport) that returns
the contract's dataclasses and raises typed errors. Thread-safe: an ``Admin`` holds only
its channel.
"""

from __future__ import annotations

from typing import Mapping

from logd_sdk._errors import InvalidConfigError
from logd_sdk._transport import Transport, error_from_proto
from logd_sdk._types import (
    GroupDescription,
    MemberDescription,
    PartitionInfo,
    PartitionOffsets,
    TopicDescription,
    TopicPartition,
)
from logd_sdk.protocol import groups_pb2, topics_pb2


def config_to_strings(config: Mapping[str, object] | None) -> dict[str, str]:
    """Topic configs as the wire wants them: str keys, str values (ints/floats converted)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of str to str, got {type(config).__name__}")
    out: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise TypeError(f"config keys must be str, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TypeError(f"config value for {key!r} must be a str, got {value!r}")
        out[key] = value if isinstance(value, str) else str(value)
    return out


_INT32_LIMIT = 1 << 31  # the wire's partition counts are int32


def _check_name(name: object, what: str = "topic") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, got {type(name).__name__}")
    return name


def _check_partition_count(count: object, what: str) -> int:
    """A partition count for the wire (int32): bigger ones are refused here, as the
    broker refuses any it does not allow, with InvalidConfigError (protobuf raised a
    ValueError that named no field)."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"{what} must be an int, got {count!r}")
    if not -_INT32_LIMIT <= count < _INT32_LIMIT:  # the broker checks the rest
        raise InvalidConfigError(f"the number of partitions must be between 1 and the broker's limit, got {count}")
    return count


def _check_tp(tp: object) -> TopicPartition:
    if not isinstance(tp, TopicPartition):
        raise TypeError(f"expected a TopicPartition, got {tp!r}")
    return tp


def description_from_proto(response: topics_pb2.DescribeTopicResponse) -> TopicDescription:
    return TopicDescription(
        name=response.name,
        partitions=[PartitionInfo(p.partition, p.log_start_offset, p.log_end_offset, p.size_bytes)
                    for p in sorted(response.partitions, key=lambda p: p.partition)],
        config=dict(sorted(response.config.items())),
    )


class Admin:
    """Administers topics and consumer groups on the broker at ``bootstrap`` (``HOST:PORT``).

    ``request_timeout_ms`` bounds one attempt; ``default_api_timeout_ms`` bounds a call
    with its retries. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, bootstrap: str = "127.0.0.1:7070", *, request_timeout_ms: int = 30000,
                 default_api_timeout_ms: int = 60000, retry_backoff_ms: int = 100) -> None:
        self._transport = Transport(bootstrap, request_timeout_ms=request_timeout_ms,
                                    api_timeout_ms=default_api_timeout_ms, retry_backoff_ms=retry_backoff_ms)

    # -- topics ---------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None) -> None:
        """Create a topic. Raises TopicAlreadyExistsError, InvalidTopicError, InvalidConfigError."""
        _check_name(name)
        _check_partition_count(partitions, "partitions")
        request = topics_pb2.CreateTopicRequest(name=name, partitions=partitions, config=config_to_strings(config))
        # Not idempotent: a timed-out create may have happened; retrying would say "exists".
        self._transport.call(self._transport.topics.CreateTopic, request, idempotent=False)

    def list_topics(self, include_internal: bool = False) -> list[str]:
        """Names of the topics, sorted (internal ``__`` topics only if asked)."""
        request = topics_pb2.ListTopicsRequest(include_internal=include_internal)
        return list(self._transport.call(self._transport.topics.ListTopics, request).names)

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (log start/end offsets, size) and every config of a topic."""
        request = topics_pb2.DescribeTopicRequest(name=_check_name(name))
        return description_from_proto(self._transport.call(self._transport.topics.DescribeTopic, request))

    def alter_topic_config(self, name: str, config: Mapping[str, str]) -> None:
        """Change only the given config keys of a topic; takes effect without a restart."""
        request = topics_pb2.AlterTopicConfigRequest(name=_check_name(name), config=config_to_strings(config))
        self._transport.call(self._transport.topics.AlterTopicConfig, request)

    def create_partitions(self, name: str, total: int) -> None:
        """Grow a topic to ``total`` partitions (shrinking raises InvalidConfigError)."""
        _check_partition_count(total, "total")
        request = topics_pb2.CreatePartitionsRequest(name=_check_name(name), total=total)
        self._transport.call(self._transport.topics.CreatePartitions, request, idempotent=False)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data; the name can be reused as soon as this returns."""
        request = topics_pb2.DeleteTopicRequest(name=_check_name(name))
        self._transport.call(self._transport.topics.DeleteTopic, request, idempotent=False)

    def delete_records(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Move each partition's log start offset forward to the given offset (-1: to the end).

        Returns the new log start offsets; raises the first partition's typed error.
        """
        targets = []
        for tp, offset in offsets.items():
            _check_tp(tp)
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise TypeError(f"offset for {tp} must be an int, got {offset!r}")
            if offset < -1:
                raise ValueError(f"offset for {tp.topic}-{tp.partition} must be >= 0 (or -1 for the end)")
            targets.append(topics_pb2.DeleteRecordsRequest.Target(topic=tp.topic, partition=tp.partition, offset=offset))
        response = self._transport.call(self._transport.topics.DeleteRecords,
                                        topics_pb2.DeleteRecordsRequest(targets=targets))
        result: dict[TopicPartition, int] = {}
        for item in response.results:
            error = error_from_proto(item.error, f"{item.topic}-{item.partition}")
            if error is not None:
                raise error
            result[TopicPartition(item.topic, item.partition)] = item.log_start_offset
        return result

    # -- consumer groups ------------------------------------------------------------------

    def list_groups(self) -> list[str]:
        """Ids of the consumer groups, sorted."""
        response = self._transport.call(self._transport.groups.ListGroups, groups_pb2.ListGroupsRequest())
        return sorted(response.group_ids)

    def describe_group(self, group_id: str) -> GroupDescription:
        """State, members with their assignment, and committed offset / end offset / lag."""
        request = groups_pb2.DescribeGroupRequest(group_id=_check_name(group_id, "group"))
        response = self._transport.call(self._transport.groups.DescribeGroup, request)
        members = [
            MemberDescription(m.member_id, m.group_instance_id or None,
                              [TopicPartition(tp.topic, tp.partition) for tp in m.assignment])
            for m in response.members
        ]
        offsets = {
            TopicPartition(o.topic, o.partition): PartitionOffsets(
                None if o.committed_offset < 0 else o.committed_offset, o.log_end_offset, o.lag)
            for o in sorted(response.offsets, key=lambda o: (o.topic, o.partition))
        }
        return GroupDescription(response.group_id or group_id, response.state, members, offsets)

    def reset_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Set a group's committed offsets; refused (GroupNotEmptyError) while it has members."""
        entries = []
        for tp, offset in offsets.items():
            _check_tp(tp)
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise TypeError(f"offset for {tp} must be an int, got {offset!r}")
            if offset < 0:
                raise ValueError(f"offset for {tp.topic}-{tp.partition} must be >= 0, got {offset}")
            entries.append(groups_pb2.ResetOffsetsRequest.Offset(topic=tp.topic, partition=tp.partition, offset=offset))
        request = groups_pb2.ResetOffsetsRequest(group_id=_check_name(group_id, "group"), offsets=entries)
        self._transport.call(self._transport.groups.ResetOffsets, request)

    def delete_group(self, group_id: str) -> None:
        """Delete a group and its committed offsets; refused while it has live members."""
        request = groups_pb2.DeleteGroupRequest(group_id=_check_name(group_id, "group"))
        self._transport.call(self._transport.groups.DeleteGroup, request, idempotent=False)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; the Admin cannot be used afterwards."""
        self._transport.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


