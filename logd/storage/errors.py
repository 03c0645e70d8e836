"""Errors raised by the storage engine.

Hierarchy::

    StorageError                 base of everything below
    ├── OffsetOutOfRangeError    offset < log_start_offset or > high_watermark
    ├── CorruptLogError          recovery found corruption it must not silently repair
    ├── LogFailedError           a write or fsync failed earlier; the log refuses appends
    └── LogClosedError           the log was closed (or deleted)

A bad batch handed to ``append`` raises :class:`logd_sdk.codec.CorruptBatchError`
(the codec's own error), not one of these.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of the storage engine's operating errors."""


class OffsetOutOfRangeError(StorageError):
    """The requested offset lies outside [log_start_offset, high_watermark]."""

    def __init__(self, offset: int, log_start_offset: int, high_watermark: int) -> None:
        super().__init__(
            f"offset {offset} is out of range [{log_start_offset}, {high_watermark}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.high_watermark = high_watermark


class CorruptLogError(StorageError):
    """Recovery found a corrupt batch with data after it that it will not drop silently.

    The message names the file and byte position and says how an operator proceeds.
    """

    def __init__(self, path: str, position: int, reason: str, first_lost_offset: int) -> None:
        super().__init__(
            f"corrupt log: {path} at byte {position}: {reason}; valid data follows it, so "
            f"recovery refuses to drop it silently. To proceed: stop the broker, copy the "
            f"partition directory aside, then either restore it from a backup/replica or "
            f"accept the loss of offsets >= {first_lost_offset} by truncating the file "
            f"(`truncate -s {position} {path}`) and deleting the segment files after it; "
            f"then restart."
        )
        self.path = path
        self.position = position
        self.reason = reason
        self.first_lost_offset = first_lost_offset


class LogFailedError(StorageError):
    """A write or fsync failed; the log stays failed (refuses appends) until reopened."""


class LogClosedError(StorageError):
    """The log is closed."""
