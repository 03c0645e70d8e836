from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[ErrorCode]
    UNKNOWN: _ClassVar[ErrorCode]
    TOPIC_NOT_FOUND: _ClassVar[ErrorCode]
    TOPIC_ALREADY_EXISTS: _ClassVar[ErrorCode]
    INVALID_TOPIC: _ClassVar[ErrorCode]
    INVALID_CONFIG: _ClassVar[ErrorCode]
    PARTITION_NOT_FOUND: _ClassVar[ErrorCode]
    CORRUPT_BATCH: _ClassVar[ErrorCode]
    RECORD_TOO_LARGE: _ClassVar[ErrorCode]
    OFFSET_OUT_OF_RANGE: _ClassVar[ErrorCode]
    STORAGE_ERROR: _ClassVar[ErrorCode]
    INVALID_REQUEST: _ClassVar[ErrorCode]
    OUT_OF_ORDER_SEQUENCE: _ClassVar[ErrorCode]
    INVALID_PRODUCER_EPOCH: _ClassVar[ErrorCode]
    UNKNOWN_PRODUCER_ID: _ClassVar[ErrorCode]
    GROUP_NOT_FOUND: _ClassVar[ErrorCode]
    FENCED_MEMBER: _ClassVar[ErrorCode]
    UNKNOWN_MEMBER: _ClassVar[ErrorCode]
    GROUP_NOT_EMPTY: _ClassVar[ErrorCode]
    NOT_ASSIGNED: _ClassVar[ErrorCode]
    UNAVAILABLE: _ClassVar[ErrorCode]
NONE: ErrorCode
UNKNOWN: ErrorCode
TOPIC_NOT_FOUND: ErrorCode
TOPIC_ALREADY_EXISTS: ErrorCode
INVALID_TOPIC: ErrorCode
INVALID_CONFIG: ErrorCode
PARTITION_NOT_FOUND: ErrorCode
CORRUPT_BATCH: ErrorCode
RECORD_TOO_LARGE: ErrorCode
OFFSET_OUT_OF_RANGE: ErrorCode
STORAGE_ERROR: ErrorCode
INVALID_REQUEST: ErrorCode
OUT_OF_ORDER_SEQUENCE: ErrorCode
INVALID_PRODUCER_EPOCH: ErrorCode
UNKNOWN_PRODUCER_ID: ErrorCode
GROUP_NOT_FOUND: ErrorCode
FENCED_MEMBER: ErrorCode
UNKNOWN_MEMBER: ErrorCode
GROUP_NOT_EMPTY: ErrorCode
NOT_ASSIGNED: ErrorCode
UNAVAILABLE: ErrorCode

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class TopicPartition(_message.Message):
    __slots__ = ("topic", "partition")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ...) -> None: ...
