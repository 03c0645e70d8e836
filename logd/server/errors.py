"""The one table from domain errors to gRPC status codes and logd.v1 ErrorCode names.

A request that fails as a whole aborts with the status and the trailing metadata
``("logd-error", NAME)``; a per-partition failure becomes an ``Error`` message with the
same code. The table is looked up along the exception's MRO, so a subclass inherits its
base's entry; anything not in it is a broker bug: INTERNAL / UNKNOWN, logged with its
traceback.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, NoReturn, TypeVar

import grpc

from logd.broker import errors as broker_errors
from logd.broker import producer_state
from logd.groups import errors as group_errors
from logd.storage import errors as storage_errors
from logd_sdk import codec
from logd_sdk.protocol import common_pb2

log = logging.getLogger(__name__)

ERROR_METADATA_KEY = "logd-error"

Code = grpc.StatusCode

ERRORS: dict[type[BaseException], tuple[grpc.StatusCode, str]] = {
    broker_errors.TopicNotFoundError: (Code.NOT_FOUND, "TOPIC_NOT_FOUND"),
    broker_errors.TopicAlreadyExistsError: (Code.ALREADY_EXISTS, "TOPIC_ALREADY_EXISTS"),
    broker_errors.InvalidTopicError: (Code.INVALID_ARGUMENT, "INVALID_TOPIC"),
    broker_errors.InvalidConfigError: (Code.INVALID_ARGUMENT, "INVALID_CONFIG"),
    broker_errors.PartitionNotFoundError: (Code.NOT_FOUND, "PARTITION_NOT_FOUND"),
    broker_errors.RecordTooLargeError: (Code.INVALID_ARGUMENT, "RECORD_TOO_LARGE"),
    broker_errors.InvalidRequestError: (Code.INVALID_ARGUMENT, "INVALID_REQUEST"),
    broker_errors.BrokerUnavailableError: (Code.UNAVAILABLE, "UNAVAILABLE"),
    producer_state.OutOfOrderSequenceError: (Code.FAILED_PRECONDITION, "OUT_OF_ORDER_SEQUENCE"),
    producer_state.InvalidProducerEpochError: (Code.FAILED_PRECONDITION, "INVALID_PRODUCER_EPOCH"),
    producer_state.UnknownProducerIdError: (Code.FAILED_PRECONDITION, "UNKNOWN_PRODUCER_ID"),
    codec.CorruptBatchError: (Code.INVALID_ARGUMENT, "CORRUPT_BATCH"),
    storage_errors.OffsetOutOfRangeError: (Code.OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE"),
    storage_errors.LogClosedError: (Code.UNAVAILABLE, "UNAVAILABLE"),
    storage_errors.StorageError: (Code.UNAVAILABLE, "STORAGE_ERROR"),
    OSError: (Code.UNAVAILABLE, "STORAGE_ERROR"),
    group_errors.UnknownMemberError: (Code.NOT_FOUND, "UNKNOWN_MEMBER"),
    group_errors.FencedMemberError: (Code.FAILED_PRECONDITION, "FENCED_MEMBER"),
    group_errors.GroupNotEmptyError: (Code.FAILED_PRECONDITION, "GROUP_NOT_EMPTY"),
    group_errors.GroupNotFoundError: (Code.NOT_FOUND, "GROUP_NOT_FOUND"),
    group_errors.InvalidGroupRequestError: (Code.INVALID_ARGUMENT, "INVALID_REQUEST"),
    group_errors.UnknownTopicError: (Code.NOT_FOUND, "TOPIC_NOT_FOUND"),
    group_errors.UnknownPartitionError: (Code.NOT_FOUND, "PARTITION_NOT_FOUND"),
    group_errors.CoordinatorNotAvailableError: (Code.UNAVAILABLE, "STORAGE_ERROR"),
    group_errors.CoordinatorLoadingError: (Code.UNAVAILABLE, "UNAVAILABLE"),
}
_UNKNOWN = (Code.INTERNAL, "UNKNOWN")

assert all(name in common_pb2.ErrorCode.keys() for _, name in ERRORS.values())


def classify(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """``(status code, ErrorCode name, message)`` for an exception; logs unknown ones."""
    for cls in type(exc).__mro__:
        entry = ERRORS.get(cls)
        if entry is not None:
            return entry[0], entry[1], str(exc) or type(exc).__name__
    log.error("internal error", exc_info=exc)
    return _UNKNOWN[0], _UNKNOWN[1], f"internal broker error: {type(exc).__name__}: {exc}"


def error_message(exc: BaseException | None) -> common_pb2.Error | None:
    """The per-partition ``Error`` for ``exc`` (None when there is no error)."""
    if exc is None:
        return None
    _, name, message = classify(exc)
    return common_pb2.Error(code=common_pb2.ErrorCode.Value(name), message=message)


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status for ``exc`` and the ``logd-error`` trailing metadata."""
    code, name, message = classify(exc)
    context.set_trailing_metadata(((ERROR_METADATA_KEY, name),))
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


Method = TypeVar("Method", bound=Callable)


def translate_errors(method: Method) -> Method:
    """Decorate a servicer method so that any exception aborts the RPC per the table."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:
            abort(context, exc)
    return wrapper  # type: ignore[return-value]
