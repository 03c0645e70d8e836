"""logd's storage engine: the on-disk log of one topic-partition (no gRPC in here).

Modules, each with one job:

    config.py      LogConfig, AppendInfo, SegmentInfo
    errors.py      the exception hierarchy
    files.py       the file-system seam: every write/fsync/rename/unlink goes through it
    index.py       the sparse offset index and the time index (formats in its docstring)
    segment.py     one .log file with its indexes; walking batches in a file
    handles.py     refcounted file handles and the LRU of read handles of older segments
    checkpoint.py  log start offset, recovery point, clean-shutdown flag
    recovery.py    what ``PartitionLog.open`` does to a directory (algorithm in its docstring)
    batches.py     the check of a producer's batches before an append (framing, CRC, offsets)
    log.py         PartitionLog: append (group commit), read, roll, truncate, delete
    log_segments.py  a log's segment list and the segment-level steps of truncation,
                   deletion and the cleaned-segment swap
    active_segments.py  the process-wide cap on open active-segment files (idle logs park)
    observer.py    the append observer protocol; the header-only walk that rebuilds it
    reader.py      the lock-free I/O of a fetch and a time lookup on a pinned segment
    retention.py   which leading segments retention.ms / retention.bytes delete
    offset_map.py  the cleaner's fixed-memory map of key digests to latest offsets
    swap.py        the crash-safe swap of cleaned segments, and its recovery
    cleaner.py     the log cleaner: compaction (algorithm in its docstring)

Lock order (a thread holding a lock may take only locks further down this list):

    1. PartitionLog._lock  (and its condition ``_changed``; it also guards the log's
       LogSegments and its AppendObserver, which have no lock of their own)
    2. Segment._load_lock  (lazy loading of an older segment's indexes vs. its deletion)
    3. HandleCache._lock
    4. Handle._lock
    5. OpenActiveSegments._lock  (taken with a log's lock held, by ``touch``; it never
       waits for a log's lock: parking another log only tries a non-blocking acquire,
       after releasing this one)

Blocking I/O under ``PartitionLog._lock``: the append's pwrite, roll, truncation, flush,
checkpoint writes and the renames/unlinks/directory fsyncs of a cleaned segment's swap
(the cleaner writes the cleaned segment itself without the lock). Not under it: the
group-commit fsync, and reads of batches (a read pins a segment with a referenced
handle, then reads without the lock).
"""

from logd.storage.cleaner import CleanerConfig, CleanerStoppedError, CleanResult, CompactionPolicy, LogCleaner
from logd.storage.config import AppendInfo, LogConfig, SegmentInfo
from logd.storage.errors import (
    CorruptLogError,
    LogClosedError,
    LogFailedError,
    OffsetOutOfRangeError,
    StorageError,
)
from logd.storage.files import OS_FILE_SYSTEM, FileSystem, raise_open_file_limit
from logd.storage.handles import HandleCache
from logd.storage.log import PartitionLog
from logd.storage.offset_map import OffsetMap
from logd.storage.retention import RetentionDecision, RetentionResult, enforce_retention, plan_retention

__all__ = [
    "AppendInfo",
    "CleanResult",
    "CleanerConfig",
    "CleanerStoppedError",
    "CompactionPolicy",
    "LogCleaner",
    "OffsetMap",
    "RetentionDecision",
    "RetentionResult",
    "enforce_retention",
    "plan_retention",
    "CorruptLogError",
    "FileSystem",
    "HandleCache",
    "LogClosedError",
    "LogConfig",
    "LogFailedError",
    "OS_FILE_SYSTEM",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "SegmentInfo",
    "StorageError",
    "raise_open_file_limit",
]
