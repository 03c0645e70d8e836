"""Value types of the storage API: the log's configuration and what its calls return."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

FLUSH_POLICIES = ("group", "always", "never")

# Positions in the offset index are u32; keep every segment (which may overshoot
# segment_bytes by one append) well inside that.
MAX_SEGMENT_BYTES = (1 << 31) - 1


@dataclass(frozen=True)
class LogConfig:
    """Per-partition settings (Kafka's ``segment.bytes``, ``segment.ms``, ...).

    ``flush_policy``: ``"group"`` acknowledges an append after an fsync that started after
    its write, sharing one fsync among the appends that arrive while another runs;
    ``"always"`` fsyncs each append on its own; ``"never"`` leaves data in the page cache
    (segments are still fsynced when they roll and when the log closes).
    """

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    index_interval_bytes: int = 4096
    flush_policy: str = "group"

    def __post_init__(self) -> None:
        if not 0 < self.segment_bytes <= MAX_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be in (0, {MAX_SEGMENT_BYTES}]: {self.segment_bytes}")
        if self.segment_ms <= 0:
            raise ValueError(f"segment_ms must be > 0: {self.segment_ms}")
        if self.index_interval_bytes <= 0:
            raise ValueError(f"index_interval_bytes must be > 0: {self.index_interval_bytes}")
        if self.flush_policy not in FLUSH_POLICIES:
            raise ValueError(f"flush_policy must be one of {FLUSH_POLICIES}: {self.flush_policy!r}")


class AppendInfo(NamedTuple):
    """Offsets assigned to one ``append`` call (inclusive range) and the broker's clock
    (a tuple: made on every append, five times cheaper than a frozen dataclass)."""

    base_offset: int
    last_offset: int
    log_append_time_ms: int


@dataclass(frozen=True)
class SegmentInfo:
    """A snapshot of one segment, for retention and compaction.

    ``next_offset`` is the offset after the segment's last batch (the next segment's base
    offset, or the log end offset for the active one); ``max_timestamp_ms`` is -1 when the
    segment holds no batch or only records without a timestamp (-1). ``last_modified_ms``
    is the log file's modification time when ``max_timestamp_ms`` is -1 but the segment
    holds data (retention then ages it by that, as Kafka does), else -1.
    """

    base_offset: int
    size_bytes: int
    max_timestamp_ms: int
    next_offset: int
    path: Path
    is_active: bool
    created_ms: int
    last_modified_ms: int = -1
