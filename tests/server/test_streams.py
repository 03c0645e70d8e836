"""LogService.ProduceStream and FetchStream over gRPC: ordered answers, errors end the
stream, bounded streams."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest

from logd.server import BrokerServer
from logd_sdk.protocol import common_pb2, log_pb2

from .helpers import RPC_TIMEOUT_S, batch, connect, error_of, start_server

_END = object()


def request(topic: str, partition: int, data: bytes) -> log_pb2.ProduceRequest:
    return log_pb2.ProduceRequest(partitions=[
        log_pb2.ProduceRequest.PartitionData(topic=topic, partition=partition, batches=data)])


def fetch_request(topic: str, partition: int, offset: int, max_wait_ms: int = 0) -> log_pb2.FetchRequest:
    return log_pb2.FetchRequest(partitions=[
        log_pb2.FetchRequest.PartitionRequest(topic=topic, partition=partition, offset=offset, max_bytes=1 << 20)],
        max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=1 << 20)


class Stream:
    """One open ProduceStream (or FetchStream: ``fetch``) fed request by request."""

    def __init__(self, client, fetch: bool = False) -> None:
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        method = client.log.FetchStream if fetch else client.log.ProduceStream
        self.responses = method(iter(self.requests.get, _END), timeout=RPC_TIMEOUT_S)

    def call(self, message):
        self.requests.put(message)
        return next(self.responses)

    def close(self) -> None:
        self.requests.put(_END)
        self.responses.cancel()


def test_answers_come_in_request_order_and_partition_errors_keep_the_stream(client):
    client.create("s", 1)
    stream = Stream(client)
    try:
        offsets = [stream.call(request("s", 0, batch(b"a", b"b"))).results[0].base_offset for _ in range(3)]
        assert offsets == [0, 2, 4]
        (missing,) = stream.call(request("nope", 0, batch(b"x"))).results
        assert missing.error.code == common_pb2.TOPIC_NOT_FOUND
        assert stream.call(request("s", 0, batch(b"c"))).results[0].base_offset == 6  # still open
    finally:
        stream.close()
    assert client.fetch("s", 0, 0).high_watermark == 7


def test_a_fetch_stream_answers_each_fetch_in_order_including_long_polls(client):
    client.create("s", 1)
    assert client.produce("s", 0, batch(b"a", b"b")).base_offset == 0
    stream = Stream(client, fetch=True)
    try:
        first = stream.call(fetch_request("s", 0, 0)).partitions[0]
        assert (first.error.code, first.high_watermark) == (common_pb2.NONE, 2) and first.batches
        started = time.monotonic()
        empty = stream.call(fetch_request("s", 0, 2, max_wait_ms=50)).partitions[0]
        assert empty.batches == b"" and time.monotonic() - started >= 0.04  # waited out its long poll
        (missing,) = stream.call(fetch_request("nope", 0, 0)).partitions
        assert missing.error.code == common_pb2.TOPIC_NOT_FOUND
        assert client.produce("s", 0, batch(b"c")).base_offset == 2
        assert stream.call(fetch_request("s", 0, 2, max_wait_ms=5_000)).partitions[0].high_watermark == 3
    finally:
        stream.close()


def test_a_streamed_long_poll_leaves_the_waiting_slots_to_unary_fetches(data_dir):
    server = start_server(data_dir, max_workers=20)  # 4 long-call slots: 2 streams, 2 waiting fetches
    client = connect(server)
    stream = Stream(client, fetch=True)
    answers = []
    try:
        client.create("s", 1)
        polls = [threading.Thread(target=lambda: answers.append(
                     stream.call(fetch_request("s", 0, 0, max_wait_ms=20_000)).partitions[0]))]
        polls += [threading.Thread(target=lambda: answers.append(
                      client.fetch("s", 0, 0, max_wait_ms=20_000))) for _ in range(2)]
        for poll in polls:
            poll.start()
        partition = server.broker.topics.get("s").partitions[0]
        deadline = time.monotonic() + 10
        while partition.waiter_count < 3:  # all three wait: the streamed one took no waiting slot
            assert not answers and time.monotonic() < deadline, answers
            time.sleep(0.001)  # polling interval
        assert client.produce("s", 0, batch(b"x")).base_offset == 0
        for poll in polls:
            poll.join(timeout=10)
        assert [answer.high_watermark for answer in answers] == [1, 1, 1]
    finally:
        stream.close()
        client.channel.close()
        server.stop()


def test_fetch_streams_share_the_bound_with_produce_streams(data_dir):
    server = start_server(data_dir, max_workers=20)  # 4 long-call slots: 2 streams
    client = connect(server)
    streams = []  # opened one after another's answer: the broker takes slots in the order calls reach it
    try:
        client.create("s", 1)
        streams.append(Stream(client))
        assert streams[0].call(request("s", 0, batch(b"x"))).results[0].error.code == common_pb2.NONE
        streams.append(Stream(client, fetch=True))
        assert streams[1].call(fetch_request("s", 0, 0)).partitions[0].high_watermark == 1
        streams.append(Stream(client, fetch=True))
        code, logd_error, details = error_of(lambda: streams[2].call(fetch_request("s", 0, 0)))
        assert (code, logd_error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, None) and "use Fetch" in details
    finally:
        for stream in streams:
            stream.close()
        client.channel.close()
        server.stop()


def test_a_request_level_error_ends_the_stream_with_its_status(client):
    client.create("s", 1)
    stream = Stream(client)
    try:
        assert stream.call(request("s", 0, batch(b"a"))).results[0].base_offset == 0
        code, logd_error, _ = error_of(lambda: stream.call(log_pb2.ProduceRequest()))  # no partitions
        assert (code, logd_error) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    finally:
        stream.close()


def test_streams_over_the_bound_are_refused_and_a_closed_one_frees_its_slot(data_dir):
    server = start_server(data_dir, max_workers=20)  # 4 long-call slots: 2 streams, 2 waiting fetches
    client = connect(server)
    streams = []
    try:
        client.create("s", 1)
        for _ in range(2):
            streams.append(Stream(client))
            assert streams[-1].call(request("s", 0, batch(b"x"))).results[0].error.code == common_pb2.NONE
        extra = Stream(client)
        streams.append(extra)
        code, logd_error, details = error_of(lambda: extra.call(request("s", 0, batch(b"y"))))
        assert (code, logd_error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, None) and "Produce" in details
        assert client.produce("s", 0, batch(b"z")).error.code == common_pb2.NONE  # unary still served
        streams.pop(0).close()
        deadline = time.monotonic() + 10
        while True:  # the handler notices the end of its stream on its own thread
            again = Stream(client)
            streams.append(again)
            try:
                assert again.call(request("s", 0, batch(b"w"))).results[0].error.code == common_pb2.NONE
                break
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                time.sleep(0.01)  # polling interval while the slot is released
    finally:
        for stream in streams:
            stream.close()
        client.channel.close()
        server.stop()


def test_a_server_without_stream_slots_refuses_every_stream(data_dir):
    server = start_server(data_dir, max_workers=17)  # 1 long-call slot: no stream
    client = connect(server)
    try:
        client.create("s", 1)
        stream = Stream(client)
        code, logd_error, _ = error_of(lambda: stream.call(request("s", 0, batch(b"x"))))
        assert (code, logd_error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, None)
        stream.close()
    finally:
        client.channel.close()
        server.stop()


def test_shutdown_ends_an_idle_stream_at_once_instead_of_waiting_out_the_grace(data_dir):
    server = BrokerServer(data_dir, "127.0.0.1:0", grace_s=30.0).start()
    client = connect(server)
    stream = Stream(client)
    try:
        client.create("s", 1)
        assert stream.call(request("s", 0, batch(b"x"))).results[0].base_offset == 0
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5  # not the 30 s grace (nor grpc's own 10 s cut)
        with pytest.raises(grpc.RpcError):  # the stream is over
            stream.call(request("s", 0, batch(b"y")))
    finally:
        stream.close()
        client.channel.close()
        server.stop()
