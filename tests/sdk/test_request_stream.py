"""RequestStream (the producer's produce stream, the consumer's fetch stream) against a
scripted LogService: answers, timeouts, refusals, reopening after a failure, and the
Producer's and Consumer's fallback to unary calls against a broker."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from logd_sdk import Admin, Consumer, Producer, TopicPartition
from logd.server.log import STREAM_REFUSED
from logd_sdk import _request_stream
from logd_sdk._request_stream import RequestStream, StreamRefused
from logd_sdk._transport import Transport
from logd_sdk.protocol import log_pb2, log_pb2_grpc
from ops.helpers import scrape, value
from scripted_log import serve_log_service
from server.helpers import start_server

TIMEOUT_S = 10


class ScriptedLog(log_pb2_grpc.LogServiceServicer):
    """Answers each produce request with base offset = the number of requests before it,
    unless ``mode`` says otherwise: "refuse" (UNIMPLEMENTED streams), "full" (streams
    refused as a broker out of stream slots refuses them), "exhausted" (RESOURCE_EXHAUSTED
    for another reason), "hang" (the next stream request is never answered), "fail-once"
    (the first stream dies UNAVAILABLE)."""

    def __init__(self, mode: str = "") -> None:
        self.mode = mode
        self.handled = 0
        self.stream_calls = 0
        self.streams_ended = 0
        self.unary_calls = 0
        self.release = threading.Event()

    def _answer(self, request):
        base = self.handled
        self.handled += 1
        return log_pb2.ProduceResponse(results=[
            log_pb2.ProduceResponse.PartitionResult(topic=p.topic, partition=p.partition, base_offset=base)
            for p in request.partitions])

    def Produce(self, request, context):
        self.unary_calls += 1
        return self._answer(request)

    def ProduceStream(self, request_iterator, context):
        self.stream_calls += 1
        if self.mode == "refuse":
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "no streams here")
        if self.mode == "full":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{STREAM_REFUSED} now; use Produce")
        if self.mode == "exhausted":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "some other limit")
        try:
            for request in request_iterator:
                if self.mode == "hang":
                    self.mode = ""
                    self.release.wait(TIMEOUT_S)
                    return
                if self.mode == "fail-once":
                    self.mode = ""
                    context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
                yield self._answer(request)
        finally:
            self.streams_ended += 1

    def InitProducerId(self, request, context):
        return log_pb2.InitProducerIdResponse(producer_id=1, producer_epoch=0)


@pytest.fixture
def scripted():
    """``start(mode, timeout_s)``: a ScriptedLog server and a RequestStream of produce
    requests to it (``unary``: with Produce as its fallback)."""
    opened = []

    def start(mode: str = "", timeout_s: float = TIMEOUT_S, idle_close_s: float = 60.0, unary: bool = False
              ) -> tuple[ScriptedLog, RequestStream]:
        servicer = ScriptedLog(mode)
        server, address = serve_log_service(servicer)
        transport = Transport(address)
        stream = RequestStream(transport.log.ProduceStream, timeout_s, idle_close_s=idle_close_s,
                               unary=transport.log.Produce if unary else None, what="produce")
        opened.append((server, servicer, transport, stream))
        return servicer, stream

    yield start
    for server, servicer, transport, stream in opened:
        servicer.release.set()
        stream.close()
        transport.channel.close()
        server.stop(0)


def request(topic: str = "t") -> log_pb2.ProduceRequest:
    return log_pb2.ProduceRequest(partitions=[log_pb2.ProduceRequest.PartitionData(topic=topic, partition=0)])


def test_requests_are_answered_in_order_over_one_call(scripted):
    servicer, stream = scripted()
    assert [stream.call(request()).results[0].base_offset for _ in range(5)] == [0, 1, 2, 3, 4]
    assert (servicer.stream_calls, servicer.unary_calls) == (1, 0)


def test_an_unanswered_request_times_out_as_deadline_exceeded(scripted):
    servicer, stream = scripted("hang", timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stream.call(request())
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= time.monotonic() - started < 5
    servicer.release.set()
    assert stream.call(request()).results[0].base_offset == 0  # a new stream
    assert servicer.stream_calls == 2


class _RecordingCondition(threading.Condition):
    """A Condition that records the timeout of every wait (the watchdog's sleeps)."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def wait(self, timeout=None):
        self.timeouts.append(timeout)
        return super().wait(timeout)


def test_a_request_after_an_idle_spell_still_times_out_within_its_timeout(scripted):
    """The watchdog never sleeps longer than the request timeout, idle or not: a request
    that hangs after the stream sat idle fails after about its timeout (it once waited
    until the idle close, a minute by default)."""
    servicer, stream = scripted(timeout_s=0.3, idle_close_s=30.0)
    stream._wakeup = watched = _RecordingCondition()
    assert stream.call(request()).results[0].base_offset == 0
    deadline = time.monotonic() + TIMEOUT_S
    while len(watched.timeouts) < 2:  # the watchdog has looped while the stream sat idle
        assert time.monotonic() < deadline, "the watchdog did not wake"
        time.sleep(0.01)  # polling interval
    servicer.mode = "hang"
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stream.call(request())
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    assert all(timeout is not None and timeout <= 0.3 + 1e-6 for timeout in watched.timeouts)


def test_a_call_cancelled_just_after_its_answer_is_not_reused():
    """The watchdog may cancel a call in the instant between its answer and the end of
    ``call``: that answer stands, and the next request goes over a new stream instead of
    failing on the cancelled one."""
    opened = []

    class AnsweredThenCancelled:
        def __init__(self, requests):
            self.requests, self.cancelled = requests, False
            opened.append(self)

        def __next__(self):
            if self.cancelled:
                raise _CancelledError()
            answer = ("answer", next(self.requests), len(opened))
            if len(opened) == 1:  # the watchdog fires right after the first stream's answer
                stream._timed_out = True
                self.cancel()
            return answer

        def cancel(self):
            self.cancelled = True

    stream = RequestStream(AnsweredThenCancelled, TIMEOUT_S)
    try:
        assert stream.call("r1") == ("answer", "r1", 1)
        assert stream.call("r2") == ("answer", "r2", 2)
    finally:
        stream.close()


class _CancelledError(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.CANCELLED

    def details(self):
        return "cancelled"


def test_a_failed_stream_is_reopened_by_the_next_request(scripted):
    servicer, stream = scripted("fail-once")
    with pytest.raises(grpc.RpcError) as info:
        stream.call(request())
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert stream.call(request()).results[0].base_offset == 0
    assert servicer.stream_calls == 2


def test_an_idle_stream_is_closed_and_reopened_when_needed(scripted):
    servicer, stream = scripted(idle_close_s=0.2)
    assert stream.call(request()).results[0].base_offset == 0
    deadline = time.monotonic() + TIMEOUT_S
    while servicer.streams_ended == 0:  # the broker's handler sees its stream end
        assert time.monotonic() < deadline, "the idle stream stayed open"
        time.sleep(0.01)  # polling interval
    assert stream.call(request()).results[0].base_offset == 1
    assert servicer.stream_calls == 2


def test_a_refused_stream_raises_stream_refused(scripted):
    _, stream = scripted("refuse")
    with pytest.raises(StreamRefused):
        stream.call(request())


@pytest.mark.parametrize("mode", ["refuse", "full"])
def test_a_refused_stream_falls_back_to_the_unary_method_for_a_while(scripted, monkeypatch, mode):
    servicer, stream = scripted(mode, unary=True)
    assert [stream.call(request()).results[0].base_offset for _ in range(3)] == [0, 1, 2]
    assert (servicer.stream_calls, servicer.unary_calls) == (1, 3)  # refused once, then not tried again
    monkeypatch.setattr(_request_stream, "STREAM_RETRY_AFTER_S", 0)  # the window now ends at once
    servicer, stream = scripted(mode, unary=True)
    assert stream.call(request()).results[0].base_offset == 0  # refused: unary
    servicer.mode = ""
    assert stream.call(request()).results[0].base_offset == 1  # the stream is tried again, and served
    assert (servicer.stream_calls, servicer.unary_calls) == (2, 1)


def test_another_resource_exhausted_is_the_requests_own_error(scripted):
    servicer, stream = scripted("exhausted", unary=True)
    with pytest.raises(grpc.RpcError) as info:
        stream.call(request())
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (servicer.stream_calls, servicer.unary_calls) == (1, 0)


@pytest.mark.parametrize("max_workers, refused", [(64, 0), (17, 1)])
def test_the_producer_streams_or_falls_back_to_unary(tmp_path, max_workers, refused):
    """Against a broker: one stream carries every request; a broker with no stream slots
    (17 workers) refuses it and the same records go as unary Produce calls. Either way the
    broker's metrics count three Produce requests, each timed."""
    server = start_server(tmp_path / "data", max_workers=max_workers, metrics_listen="127.0.0.1:0")
    try:
        with Admin(server.address) as admin:
            admin.create_topic("t", partitions=1)
        with Producer(server.address, linger_ms=0) as producer:
            offsets = [producer.send("t", b"v%d" % i).get(timeout=TIMEOUT_S).offset for i in range(3)]
        assert offsets == [0, 1, 2]
        samples = scrape(server.metrics_address)
        stream, produce = "logd.v1.LogService/ProduceStream", "logd.v1.LogService/Produce"
        assert value(samples, "logd_rpc_requests_total", method=stream) == 1
        assert (value(samples, "logd_rpc_errors_total", method=stream, code="RESOURCE_EXHAUSTED") or 0) == refused
        assert value(samples, "logd_rpc_requests_total", method=produce) == 3
        assert value(samples, "logd_rpc_latency_seconds_count", method=produce) == 3
        assert not [key for key in samples if key[0] == "logd_rpc_errors_total" and ("method", produce) in key[1]]
    finally:
        server.stop()


@pytest.mark.parametrize("max_workers, refused", [(64, 0), (17, 1)])
def test_the_consumer_streams_its_fetches_or_falls_back_to_unary(tmp_path, max_workers, refused):
    """Against a broker: the consumer's fetches go over one FetchStream; a broker with no
    stream slots refuses it and the fetches go as unary Fetch calls. Either way every
    record arrives and each fetch counts as a Fetch in the broker's metrics."""
    server = start_server(tmp_path / "data", max_workers=max_workers, metrics_listen="127.0.0.1:0")
    try:
        with Admin(server.address) as admin:
            admin.create_topic("t", partitions=1)
        with Producer(server.address) as producer:
            for i in range(3):
                producer.send("t", b"v%d" % i)
        received = []
        with Consumer(server.address, auto_offset_reset="earliest", enable_auto_commit=False) as consumer:
            consumer.assign([TopicPartition("t", 0)])
            deadline = time.monotonic() + TIMEOUT_S
            while len(received) < 3 and time.monotonic() < deadline:
                received += [record.value for record in consumer.poll(timeout_ms=200)]
        assert received == [b"v0", b"v1", b"v2"]
        samples = scrape(server.metrics_address)
        stream, fetch = "logd.v1.LogService/FetchStream", "logd.v1.LogService/Fetch"
        assert value(samples, "logd_rpc_requests_total", method=stream) == 1
        assert (value(samples, "logd_rpc_errors_total", method=stream, code="RESOURCE_EXHAUSTED") or 0) == refused
        fetches = value(samples, "logd_rpc_requests_total", method=fetch)
        assert fetches >= 1 and value(samples, "logd_rpc_latency_seconds_count", method=fetch) == fetches
    finally:
        server.stop()


def test_a_consumer_whose_fetch_stream_stalls_carries_on_over_a_new_one(tmp_path):
    """A streamed fetch the broker never answers is cancelled by the stream's watchdog
    after the request timeout (plus a wait slice); the consumer retries on a new stream
    and gets its records, and ``poll`` raises nothing meanwhile."""
    server = start_server(tmp_path / "data")
    servicer = server._log_servicer
    served = servicer._streamed_fetch
    stalled = threading.Event()
    release = threading.Event()

    def stall_once(request, context):
        if not stalled.is_set():
            stalled.set()
            release.wait(TIMEOUT_S)  # unanswered until the client gives up on it
        return served(request, context)

    servicer._streamed_fetch = stall_once
    try:
        with Admin(server.address) as admin:
            admin.create_topic("t", partitions=1)
        with Producer(server.address) as producer:
            producer.send("t", b"v").get(timeout=TIMEOUT_S)
        with Consumer(server.address, auto_offset_reset="earliest", enable_auto_commit=False,
                      request_timeout_ms=500) as consumer:
            consumer.assign([TopicPartition("t", 0)])
            started = time.monotonic()
            received = []
            while not received and time.monotonic() - started < TIMEOUT_S:
                received = consumer.poll(timeout_ms=200)
            assert stalled.is_set() and [record.value for record in received] == [b"v"]
            assert time.monotonic() - started >= 0.5  # the first stream was given up, not answered
    finally:
        release.set()
        server.stop()
