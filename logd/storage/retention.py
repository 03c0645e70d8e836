"""Retention: which leading segments of a partition log to delete (pure decisions).

Kafka's rules (``UnifiedLog.deleteRetentionMsBreachedSegments`` and
``deleteRetentionSizeBreachedSegments``), over the segments oldest first:

- ``retention.ms`` (-1: forever): a segment goes when its newest record is older than
  ``retention.ms`` (``now - max_timestamp_ms > retention_ms``; a segment without records
  counts as expired; one whose records all lack a timestamp (-1, which a raw gRPC client
  may send) is aged by its file's modification time, as Kafka does, not deleted at once).
  Deletion stops at the first segment that must stay.
- ``retention.bytes`` (-1: no limit): the oldest segments go while the partition would
  still hold at least ``retention.bytes`` without them.

Only whole segments go, and only the leading ones, so the log start offset moves to the
first remaining segment. A segment is deletable only when all of it is below the high
watermark. The active segment may be deletable too (an idle partition whose data all
expired): the caller then rolls it first (``PartitionLog.roll``) and asks again, because
the storage never deletes the active segment. ``should_roll`` says when an idle active
segment is older than ``segment.ms`` (the storage rolls on append only), so that its
records become deletable or compactable.

Records are timestamped by producers (create time), as in Kafka: a record stamped far in
the past is deleted at the next check, one stamped in the future is kept until then.

``enforce_retention`` applies the decision to a log. Thread-safety: the planning
functions are pure; ``enforce_retention`` may run beside any other use of the log (the
log re-checks each segment under its lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from logd.storage.config import SegmentInfo

if TYPE_CHECKING:
    from logd.storage.log import PartitionLog


@dataclass(frozen=True)
class RetentionDecision:
    """``delete_count`` leading segments to delete (``roll_active``: the active one is among
    them, so roll first) because of ``reason`` ("retention.ms", "retention.bytes" or "")."""

    delete_count: int = 0
    roll_active: bool = False
    reason: str = ""
    bytes: int = 0


def expired_by_time(segment: SegmentInfo, now_ms: int, retention_ms: int) -> bool:
    if retention_ms < 0:
        return False
    newest_ms = segment.max_timestamp_ms if segment.max_timestamp_ms >= 0 else segment.last_modified_ms
    return newest_ms < 0 or now_ms - newest_ms > retention_ms


def plan_retention(segments: Sequence[SegmentInfo], *, now_ms: int, retention_ms: int,
                   retention_bytes: int, high_watermark: int) -> RetentionDecision:
    """The leading segments to delete now (rules in the module docstring)."""
    deletable = 0
    for segment in segments:
        if segment.next_offset > high_watermark or (segment.is_active and segment.size_bytes == 0):
            break
        deletable += 1
    by_time = 0
    while by_time < deletable and expired_by_time(segments[by_time], now_ms, retention_ms):
        by_time += 1
    by_size = 0
    if retention_bytes >= 0:
        excess = sum(segment.size_bytes for segment in segments) - retention_bytes
        while by_size < deletable and excess - segments[by_size].size_bytes >= 0:
            excess -= segments[by_size].size_bytes
            by_size += 1
    count = max(by_time, by_size)
    if count == 0:
        return RetentionDecision()
    reason = "retention.ms" if by_time >= by_size else "retention.bytes"
    return RetentionDecision(count, segments[count - 1].is_active, reason,
                             sum(segment.size_bytes for segment in segments[:count]))


def should_roll(active: SegmentInfo, now_ms: int, segment_ms: int) -> bool:
    """True when the non-empty active segment is older than ``segment.ms``."""
    return active.is_active and active.size_bytes > 0 and now_ms - active.created_ms >= segment_ms


@dataclass(frozen=True)
class RetentionResult:
    """What ``enforce_retention`` did."""

    segments_deleted: int = 0
    bytes_reclaimed: int = 0
    reason: str = ""
    rolled: bool = False
    log_start_offset: int = 0


def enforce_retention(log: "PartitionLog", *, now_ms: int, retention_ms: int, retention_bytes: int
                      ) -> RetentionResult:
    """Delete the leading segments ``plan_retention`` picks (rolling the active segment
    first when it is one of them); the log start offset moves to the first one left."""
    decision = plan_retention(log.segments(), now_ms=now_ms, retention_ms=retention_ms,
                              retention_bytes=retention_bytes, high_watermark=log.high_watermark)
    rolled = decision.roll_active
    if rolled:
        log.roll()
    snapshot = log.segments()
    decision = plan_retention(snapshot, now_ms=now_ms, retention_ms=retention_ms,
                              retention_bytes=retention_bytes, high_watermark=log.high_watermark)
    count = decision.delete_count - int(decision.roll_active)  # the storage keeps the active one
    if count == 0:
        return RetentionResult(rolled=rolled, log_start_offset=log.log_start_offset)
    cutoff = snapshot[count - 1].next_offset
    deleted: list[SegmentInfo] = []

    def doomed(info: SegmentInfo) -> bool:
        if info.next_offset > cutoff:
            return False
        deleted.append(info)
        return True

    log.delete_oldest_segments(doomed)
    return RetentionResult(len(deleted), sum(info.size_bytes for info in deleted), decision.reason, rolled,
                           log.log_start_offset)
