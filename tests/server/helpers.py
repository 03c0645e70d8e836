"""Helpers for the server tests: raw gRPC stubs to an in-process BrokerServer, batches, errors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from logd.server import BrokerServer
from logd_sdk import codec
from logd_sdk.protocol import log_pb2, log_pb2_grpc, topics_pb2, topics_pb2_grpc

RPC_TIMEOUT_S = 10


@dataclass
class Client:
    """Raw stubs to one server."""

    channel: grpc.Channel
    topics: topics_pb2_grpc.TopicServiceStub
    log: log_pb2_grpc.LogServiceStub

    def create(self, name: str, partitions: int | None = 1, **config: str) -> None:
        request = topics_pb2.CreateTopicRequest(name=name, config={k.replace("_", "."): v for k, v in config.items()})
        if partitions is not None:
            request.partitions = partitions
        self.topics.CreateTopic(request, timeout=RPC_TIMEOUT_S)

    def produce(self, topic: str, partition: int, batches: bytes) -> log_pb2.ProduceResponse.PartitionResult:
        request = log_pb2.ProduceRequest(partitions=[
            log_pb2.ProduceRequest.PartitionData(topic=topic, partition=partition, batches=batches)])
        (result,) = self.log.Produce(request, timeout=RPC_TIMEOUT_S).results
        return result

    def fetch(self, topic: str, partition: int, offset: int, *, max_wait_ms: int = 0, max_bytes: int = 0,
              partition_max_bytes: int = 0, timeout: float = RPC_TIMEOUT_S) -> log_pb2.FetchResponse.PartitionData:
        request = log_pb2.FetchRequest(
            partitions=[log_pb2.FetchRequest.PartitionRequest(
                topic=topic, partition=partition, offset=offset, max_bytes=partition_max_bytes)],
            max_wait_ms=max_wait_ms, max_bytes=max_bytes)
        (data,) = self.log.Fetch(request, timeout=timeout).partitions
        return data

    def list_offset(self, topic: str, partition: int, timestamp_ms: int) -> log_pb2.ListOffsetsResponse.PartitionOffset:
        request = log_pb2.ListOffsetsRequest(partitions=[
            log_pb2.ListOffsetsRequest.PartitionQuery(topic=topic, partition=partition, timestamp_ms=timestamp_ms)])
        (result,) = self.log.ListOffsets(request, timeout=RPC_TIMEOUT_S).partitions
        return result

    def describe(self, name: str) -> topics_pb2.DescribeTopicResponse:
        return self.topics.DescribeTopic(topics_pb2.DescribeTopicRequest(name=name), timeout=RPC_TIMEOUT_S)

    def list_topics(self, include_internal: bool = False) -> list[str]:
        request = topics_pb2.ListTopicsRequest(include_internal=include_internal)
        return list(self.topics.ListTopics(request, timeout=RPC_TIMEOUT_S).names)


def connect(server: BrokerServer) -> Client:
    return connect_address(server.address)


def connect_address(address: str) -> Client:
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
    return Client(channel, topics_pb2_grpc.TopicServiceStub(channel), log_pb2_grpc.LogServiceStub(channel))


def start_server(data_dir: Path, **kwargs) -> BrokerServer:
    return BrokerServer(data_dir, "127.0.0.1:0", **{"grace_s": 2.0, **kwargs}).start()


def batch(*values: bytes, timestamp_ms: int | None = None, keys: list[bytes | None] | None = None,
          codec_id: int = codec.CODEC_ZSTD) -> bytes:
    """One batch of ``values`` (keys optional), all with the same timestamp."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    keys = keys or [None] * len(values)
    return codec.encode_batch([(ts, key, value, None) for key, value in zip(keys, values)], codec=codec_id)


def decode_values(batches: bytes, from_offset: int = 0) -> list[tuple[int, bytes]]:
    """``(offset, value)`` of every record at or after ``from_offset`` in fetched batches."""
    out = []
    for position, _ in codec.iter_batches(batches):
        _, records = codec.decode_batch(batches, position)
        out.extend((r.offset, r.value) for r in records if r.offset >= from_offset)
    return out


def error_of(call) -> tuple[grpc.StatusCode, str | None, str]:
    """Run ``call`` expecting an RpcError; return (status code, logd-error, details)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    trailing = dict(error.trailing_metadata() or ())
    return error.code(), trailing.get("logd-error"), error.details()
