"""The wire: channel creation, gRPC status -> typed error mapping, retry with backoff.

Errors. The broker ends a failed call with a gRPC status whose details a person can act
on, and the trailing metadata key ``logd-error`` names the ErrorCode (common.proto). The
code name picks the error class; without it (a proxy, a connection failure, a call the
broker does not implement) the status code does. Per-partition errors inside a response
are ``common_pb2.Error`` messages, mapped by :func:`error_from_proto`.

Retries. Only ``UNAVAILABLE`` (and, for calls marked idempotent, ``DEADLINE_EXCEEDED`` and a
``CANCELLED`` the broker sent without a logd code: it cancels calls as it shuts down, and
their outcome is unknown, as for a deadline) is retried, with exponential backoff and
jitter, until ``api_timeout_ms`` is spent; never once the transport is closed. The
channel's own reconnect backoff is capped at one second, so a restarted broker is found
again quickly.

Thread safety: a :class:`Transport` and its channel are safe to use from many threads.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

import grpc

from logd_sdk import _errors
from logd_sdk._errors import BrokerUnavailableError, LogdError, LogdTimeoutError
from logd_sdk.protocol import (
    common_pb2,
    groups_pb2_grpc,
    log_pb2_grpc,
    topics_pb2_grpc,
)

DEFAULT_BOOTSTRAP = "127.0.0.1:7070"
ERROR_METADATA_KEY = "logd-error"

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30000),
]

# What grpcio's server says when it refuses a call over its maximum_concurrent_rpcs.
_BUSY_DETAILS = "Concurrent RPC limit exceeded"

# Fallback when the broker sent no logd-error code (the status code alone).
_ERRORS_BY_STATUS: dict[grpc.StatusCode, type[LogdError]] = {
    grpc.StatusCode.NOT_FOUND: _errors.TopicNotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: _errors.TopicAlreadyExistsError,
    grpc.StatusCode.INVALID_ARGUMENT: _errors.InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: _errors.OffsetOutOfRangeError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: _errors.RecordTooLargeError,
    grpc.StatusCode.FAILED_PRECONDITION: _errors.InvalidRequestError,
    grpc.StatusCode.UNAVAILABLE: BrokerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: LogdTimeoutError,
    grpc.StatusCode.UNIMPLEMENTED: _errors.UnsupportedVersionError,
    grpc.StatusCode.CANCELLED: _errors.IllegalStateError,
}


def parse_bootstrap(bootstrap: str) -> str:
    """The gRPC target for ``HOST:PORT`` (the first of a comma-separated list).

    Raises ``ValueError`` for anything else: a typo here should fail at once, not time out.
    """
    if not isinstance(bootstrap, str):
        raise TypeError(f"bootstrap must be a str 'HOST:PORT', got {type(bootstrap).__name__}")
    first = bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bootstrap must be HOST:PORT, got {bootstrap!r}")
    return first


def create_channel(target: str) -> grpc.Channel:
    """An insecure channel to ``target`` with unlimited message sizes and fast reconnects."""
    return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)


def error_code_of(exc: grpc.RpcError) -> str | None:
    """The ``logd-error`` trailing metadata value of a failed call, if any."""
    try:
        metadata = exc.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:  # a cancelled future has no metadata
        return None
    for key, value in metadata:
        if key == ERROR_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def error_from_rpc(exc: grpc.RpcError, target: str = "") -> LogdError:
    """The typed error for a failed gRPC call."""
    try:
        status = exc.code()  # type: ignore[attr-defined]
        details = exc.details() or ""  # type: ignore[attr-defined]
    except Exception:
        status, details = grpc.StatusCode.UNKNOWN, str(exc)
    name = error_code_of(exc)
    cls = _errors.ERRORS_BY_CODE.get(name) if name else None
    if cls is None:
        cls = _ERRORS_BY_STATUS.get(status, _errors.UnknownServerError)
    if _refused_as_busy(status, name, details):
        # gRPC's own refusal when the broker already holds its maximum of calls: a busy
        # broker, not a too-large record, so it is retried like UNAVAILABLE.
        cls = BrokerUnavailableError
        details = f"the broker at {target or 'the bootstrap address'} is busy: {details}"
    if name is None and status is grpc.StatusCode.UNAVAILABLE:
        details = f"cannot reach the logd broker at {target or 'the bootstrap address'}: {details}"
    elif name is None and status is grpc.StatusCode.UNIMPLEMENTED:
        details = f"the broker does not support this call yet ({details or 'UNIMPLEMENTED'})"
    elif name is None and status is grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"the broker at {target or 'the bootstrap address'} did not answer in time"
    return cls(details or f"{status.name.lower()}")


def error_from_proto(error: common_pb2.Error | None, context: str = "") -> LogdError | None:
    """The typed error for a per-partition ``Error`` field; None when it is unset or NONE."""
    if error is None or error.code == common_pb2.NONE:
        return None
    name = common_pb2.ErrorCode.Name(error.code) if error.code in common_pb2.ErrorCode.values() else "UNKNOWN"
    cls = _errors.ERRORS_BY_CODE.get(name, _errors.UnknownServerError)
    message = error.message or name.lower().replace("_", " ")
    return cls(f"{context}: {message}" if context and context not in message else message)


def is_retriable_rpc_error(exc: grpc.RpcError, idempotent: bool) -> bool:
    """Whether a failed call may be sent again (see the module docstring)."""
    status = exc.code()  # type: ignore[attr-defined]
    code_name = error_code_of(exc)
    if status is grpc.StatusCode.UNAVAILABLE:
        return code_name in (None, "UNAVAILABLE")
    if _refused_as_busy(status, code_name, exc.details() or ""):  # type: ignore[attr-defined]
        return True  # refused before it ran: safe to send again, idempotent or not
    if status is grpc.StatusCode.CANCELLED:
        return idempotent and code_name is None  # a broker shutting down (see the module docstring)
    return idempotent and status is grpc.StatusCode.DEADLINE_EXCEEDED


def _refused_as_busy(status: grpc.StatusCode, code_name: str | None, details: str) -> bool:
    """gRPC's own refusal of a call over the broker's maximum_concurrent_rpcs."""
    return code_name is None and status is grpc.StatusCode.RESOURCE_EXHAUSTED and _BUSY_DETAILS in details


def backoff_s(attempt: int, backoff_ms: int, backoff_max_ms: int) -> float:
    """Exponential backoff with +-20% jitter, in seconds, for retry number ``attempt`` (0-based)."""
    base = min(backoff_max_ms, backoff_ms * (2 ** min(attempt, 16)))
    return base * random.uniform(0.8, 1.2) / 1000.0


class Transport:
    """One channel to the broker plus the three service stubs.

    ``call`` runs a unary RPC with per-attempt ``request_timeout_ms``, retrying unavailability
    until ``api_timeout_ms`` is spent, and raises typed errors only.
    """

    def __init__(self, bootstrap: str, *, request_timeout_ms: int = 30000, api_timeout_ms: int = 60000,
                 retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1000) -> None:
        self.target = parse_bootstrap(bootstrap)
        self.request_timeout_ms = request_timeout_ms
        self.api_timeout_ms = api_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.closed = False
        self.channel = create_channel(self.target)
        self.topics = topics_pb2_grpc.TopicServiceStub(self.channel)
        self.log = log_pb2_grpc.LogServiceStub(self.channel)
        self.groups = groups_pb2_grpc.GroupServiceStub(self.channel)

    def call(self, method: Callable[..., Any], request: Any, *, timeout_ms: int | None = None,
             idempotent: bool = True) -> Any:
        """Run ``method(request)``, retrying per the module docstring; raise typed errors."""
        budget_ms = self.api_timeout_ms if timeout_ms is None else timeout_ms
        deadline = time.monotonic() + budget_ms / 1000.0
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            per_attempt = max(0.001, min(self.request_timeout_ms / 1000.0, remaining))
            try:
                return method(request, timeout=per_attempt)
            except grpc.RpcError as exc:
                pause = backoff_s(attempt, self.retry_backoff_ms, self.retry_backoff_max_ms)
                retriable = is_retriable_rpc_error(exc, idempotent) and not self.closed
                if not retriable or time.monotonic() + pause >= deadline:
                    raise error_from_rpc(exc, self.target) from None
            except ValueError:  # grpcio: "Cannot invoke RPC on closed channel!"
                if self.closed:
                    raise _errors.IllegalStateError("the client was closed during the call") from None
                raise
            time.sleep(pause)  # backoff between retries, not synchronisation
            attempt += 1

    def close(self) -> None:
        self.closed = True  # before the channel: a retry loop in another thread stops at once
        self.channel.close()
