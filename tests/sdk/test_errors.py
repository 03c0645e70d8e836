"""Error mapping: gRPC status + "logd-error" trailing metadata -> typed errors, and retries."""

import grpc
import pytest

import logd_sdk as sdk
from logd_sdk import _transport
from logd_sdk._transport import Transport, error_from_proto, error_from_rpc, parse_bootstrap
from logd_sdk.protocol import common_pb2, log_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, status, details="", code_name=None):
        self._status, self._details = status, details
        self._metadata = (("logd-error", code_name),) if code_name else ()

    def code(self):
        return self._status

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._metadata


@pytest.mark.parametrize("status,name,expected", [
    (grpc.StatusCode.NOT_FOUND, "TOPIC_NOT_FOUND", sdk.TopicNotFoundError),
    (grpc.StatusCode.NOT_FOUND, "PARTITION_NOT_FOUND", sdk.PartitionNotFoundError),
    (grpc.StatusCode.ALREADY_EXISTS, "TOPIC_ALREADY_EXISTS", sdk.TopicAlreadyExistsError),
    (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TOPIC", sdk.InvalidTopicError),
    (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CONFIG", sdk.InvalidConfigError),
    (grpc.StatusCode.INVALID_ARGUMENT, "RECORD_TOO_LARGE", sdk.RecordTooLargeError),
    (grpc.StatusCode.OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE", sdk.OffsetOutOfRangeError),
    (grpc.StatusCode.FAILED_PRECONDITION, "FENCED_MEMBER", sdk.FencedMemberError),
    (grpc.StatusCode.FAILED_PRECONDITION, "NOT_ASSIGNED", sdk.NotAssignedError),
    (grpc.StatusCode.FAILED_PRECONDITION, "GROUP_NOT_EMPTY", sdk.GroupNotEmptyError),
    (grpc.StatusCode.UNAVAILABLE, "STORAGE_ERROR", sdk.StorageError),
    (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", sdk.BrokerUnavailableError),
    (grpc.StatusCode.INTERNAL, "UNKNOWN", sdk.UnknownServerError),
    # No logd-error: the status code decides.
    (grpc.StatusCode.UNAVAILABLE, None, sdk.BrokerUnavailableError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, None, sdk.LogdTimeoutError),
    (grpc.StatusCode.UNIMPLEMENTED, None, sdk.UnsupportedVersionError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, None, sdk.RecordTooLargeError),
    (grpc.StatusCode.DATA_LOSS, None, sdk.UnknownServerError),
])
def test_rpc_errors_map_to_typed_errors(status, name, expected):
    """Each ErrorCode name (or, without one, the status code) picks its error class."""
    error = error_from_rpc(FakeRpcError(status, "what happened", name), "h:1")
    assert type(error) is expected
    assert isinstance(error, sdk.LogdError) and str(error)


def test_messages_keep_the_broker_details():
    """The broker's message reaches the user; connection failures name the address."""
    error = error_from_rpc(FakeRpcError(grpc.StatusCode.NOT_FOUND, "topic 'x' does not exist", "TOPIC_NOT_FOUND"))
    assert str(error) == "topic 'x' does not exist"
    error = error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"), "10.0.0.1:7070")
    assert "10.0.0.1:7070" in str(error) and "connection refused" in str(error)


def test_per_partition_errors_map_by_code():
    """common.Error messages inside responses map like the status metadata does."""
    assert error_from_proto(common_pb2.Error()) is None
    error = error_from_proto(common_pb2.Error(code=common_pb2.OFFSET_OUT_OF_RANGE, message="too far"), "t-0")
    assert isinstance(error, sdk.OffsetOutOfRangeError) and "t-0" in str(error) and "too far" in str(error)
    for code_name in common_pb2.ErrorCode.keys():
        if code_name != "NONE":
            assert isinstance(error_from_proto(common_pb2.Error(code=common_pb2.ErrorCode.Value(code_name))),
                              sdk.LogdError)


@pytest.mark.parametrize("bad", ["", "localhost", "h:", ":1", "h:x", "h:0", "h:70000"])
def test_bad_bootstrap_is_a_value_error(bad):
    """A malformed address fails at once rather than timing out later."""
    with pytest.raises(ValueError):
        parse_bootstrap(bad)


def test_good_bootstrap():
    assert parse_bootstrap("127.0.0.1:7070") == "127.0.0.1:7070"
    assert parse_bootstrap("a:1, b:2") == "a:1"


def test_transport_retries_unavailable_then_succeeds(monkeypatch):
    """UNAVAILABLE without a logd code is retried with backoff until the call succeeds."""
    monkeypatch.setattr(_transport.time, "sleep", lambda s: None)
    transport = Transport("127.0.0.1:1", api_timeout_ms=5000, retry_backoff_ms=1)
    calls = []

    def method(request, timeout):
        calls.append(timeout)
        if len(calls) < 3:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")
        return "ok"

    try:
        assert transport.call(method, object()) == "ok"
        assert len(calls) == 3
    finally:
        transport.close()


def test_a_busy_broker_is_retried_but_a_too_large_message_is_not():
    """gRPC's refusal over maximum_concurrent_rpcs is a retriable busy broker; its
    refusal of an oversized message (same status, no logd code) is RecordTooLargeError."""
    busy = FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
    too_large = FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (9 vs. 8)")
    assert isinstance(error_from_rpc(busy), sdk.BrokerUnavailableError) and error_from_rpc(busy).retriable
    assert _transport.is_retriable_rpc_error(busy, idempotent=False)
    assert isinstance(error_from_rpc(too_large), sdk.RecordTooLargeError)
    assert not _transport.is_retriable_rpc_error(too_large, idempotent=True)


def test_transport_does_not_retry_other_errors_or_storage_errors():
    """A typed refusal (even STORAGE_ERROR's UNAVAILABLE) is raised after one attempt."""
    transport = Transport("127.0.0.1:1", api_timeout_ms=5000)
    for status, name, expected in [(grpc.StatusCode.NOT_FOUND, "TOPIC_NOT_FOUND", sdk.TopicNotFoundError),
                                   (grpc.StatusCode.UNAVAILABLE, "STORAGE_ERROR", sdk.StorageError)]:
        calls = []

        def method(request, timeout):
            calls.append(1)
            raise FakeRpcError(status, "no", name)

        with pytest.raises(expected):
            transport.call(method, object())
        assert len(calls) == 1
    transport.close()


def test_transport_gives_up_when_the_budget_is_spent():
    """A broker that stays unavailable ends in BrokerUnavailableError within the budget."""
    transport = Transport("127.0.0.1:1", api_timeout_ms=300, retry_backoff_ms=20)

    def method(request, timeout):
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")

    with pytest.raises(sdk.BrokerUnavailableError):
        transport.call(method, object())
    transport.close()


def test_a_cancellation_by_a_broker_shutting_down_is_retried_for_idempotent_calls(monkeypatch):
    """A broker cancels calls as it stops (CANCELLED, no logd code): their outcome is
    unknown, so they are retried like a deadline. It used to fail the call (a producer's
    records) with IllegalStateError on the unary paths."""
    monkeypatch.setattr(_transport.time, "sleep", lambda s: None)
    cancelled = FakeRpcError(grpc.StatusCode.CANCELLED, "Cancelled")
    assert _transport.is_retriable_rpc_error(cancelled, idempotent=True)
    assert not _transport.is_retriable_rpc_error(cancelled, idempotent=False)
    assert not _transport.is_retriable_rpc_error(FakeRpcError(grpc.StatusCode.CANCELLED, "x", "UNKNOWN"),
                                                 idempotent=True)
    transport = Transport("127.0.0.1:1", api_timeout_ms=5000, retry_backoff_ms=1)
    calls = []

    def method(request, timeout):
        calls.append(1)
        if len(calls) == 1:
            raise cancelled
        return "ok"

    try:
        assert transport.call(method, object()) == "ok" and len(calls) == 2
    finally:
        transport.close()


def test_a_closed_transport_stops_retrying():
    """close() from another thread ends a call's retries at once (a consumer's fetcher
    used to keep retrying a lookup after close(), then log the closed channel's
    ValueError as a failure)."""
    transport = Transport("127.0.0.1:1", api_timeout_ms=60_000, retry_backoff_ms=1)
    calls = []

    def method(request, timeout):
        calls.append(1)
        transport.close()  # as close() would, while this attempt is in flight
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")

    with pytest.raises(sdk.BrokerUnavailableError):
        transport.call(method, object())
    assert len(calls) == 1
    with pytest.raises(sdk.IllegalStateError):
        transport.call(transport.log.ListOffsets, log_pb2.ListOffsetsRequest())
