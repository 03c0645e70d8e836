"""TopicService: topic administration over gRPC (thin: check, one broker call, translate)."""

from __future__ import annotations

from logd.broker import Broker, DeleteRecordsTarget, InvalidRequestError
from logd_sdk.protocol import topics_pb2, topics_pb2_grpc

from .errors import error_message, translate_errors


class TopicServicer(topics_pb2_grpc.TopicServiceServicer):
    """Stateless; thread-safe because the broker is."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    @translate_errors
    def CreateTopic(self, request, context):
        partitions = request.partitions if request.HasField("partitions") else None
        self._broker.create_topic(request.name, partitions, dict(request.config))
        return topics_pb2.CreateTopicResponse()

    @translate_errors
    def ListTopics(self, request, context):
        return topics_pb2.ListTopicsResponse(names=self._broker.list_topics(request.include_internal))

    @translate_errors
    def DescribeTopic(self, request, context):
        description = self._broker.describe_topic(request.name)
        return topics_pb2.DescribeTopicResponse(
            name=description.name,
            partitions=[
                topics_pb2.PartitionInfo(partition=p.partition, log_start_offset=p.log_start_offset,
                                         log_end_offset=p.log_end_offset, size_bytes=p.size_bytes)
                for p in description.partitions
            ],
            config=description.config,
        )

    @translate_errors
    def AlterTopicConfig(self, request, context):
        self._broker.alter_topic_config(request.name, dict(request.config))
        return topics_pb2.AlterTopicConfigResponse()

    @translate_errors
    def CreatePartitions(self, request, context):
        self._broker.create_partitions(request.name, request.total)
        return topics_pb2.CreatePartitionsResponse()

    @translate_errors
    def DeleteTopic(self, request, context):
        self._broker.delete_topic(request.name)
        return topics_pb2.DeleteTopicResponse()

    @translate_errors
    def DeleteRecords(self, request, context):
        if not request.targets:
            raise InvalidRequestError("DeleteRecords needs at least one target")
        results = self._broker.delete_records(
            [DeleteRecordsTarget(t.topic, t.partition, t.offset) for t in request.targets])
        return topics_pb2.DeleteRecordsResponse(results=[
            topics_pb2.DeleteRecordsResponse.Result(
                topic=r.topic, partition=r.partition, log_start_offset=r.log_start_offset,
                error=error_message(r.error))
            for r in results
        ])
