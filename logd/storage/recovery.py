"""Loading a partition directory at open: clean-up, recovery, and the active segment.

The algorithm (Kafka's ``LogLoader``, reduced):

1. Create the directory if missing. Finish or roll back a segment swap of the log
   cleaner that a crash interrupted (see :mod:`logd.storage.swap`). Delete ``*.tmp``
   files (an interrupted atomic write) and index files whose ``.log`` is gone (an
   interrupted deletion).
2. Read the checkpoint (see :mod:`logd.storage.checkpoint`). Without one, the whole log is
   recovered and the log start offset is the first segment's base offset.
3. Delete segments that lie wholly below the log start offset (a crash during
   ``delete_records_before``).
4. Segments before the recovery segment were fsynced when they rolled: trust them, only
   check that their index files look sane (rebuild them by walking the headers if not).
5. From the recovery point on, CRC-check every batch (the part of the recovery segment
   below the recovery position only has its headers walked to rebuild the index). At the
   first torn or corrupt batch:
   - in the last segment: truncate the file there and log how many bytes were dropped
     (those bytes were never acknowledged as durable);
   - in an older segment with data in a later segment: raise :class:`CorruptLogError`
     naming the file and position (rolled segments were fsynced, so this is real
     corruption, and dropping the later data silently would lose acknowledged records);
     if every later segment is empty, they are removed and the segment is truncated as
     the last one (a crash between the steps of a roll leaves exactly that).
6. fsync what was verified, then open the last segment for appends (creating segment 0,
   or one at the log start offset, for an empty log).

Read-only (``read_only=True``, the data directory is on a read-only file system): the
same walk without a single write. Nothing is deleted, truncated, renamed or rewritten:
what would be removed is only left out of the segment list (a torn tail is cut in
memory: the segment's size is its valid end), rebuilt indexes stay in memory, and the
last segment is opened read-only. A committed but unfinished cleaner swap, a missing
directory or one without segments cannot be served without writing: they raise
:class:`~logd.storage.errors.StorageError`.

Thread-safety: runs inside ``PartitionLog.open`` before the log is shared.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from logd.storage.checkpoint import CHECKPOINT_FILE, Checkpoint, read_checkpoint
from logd.storage.config import LogConfig
from logd.storage.errors import CorruptLogError, StorageError
from logd.storage.files import FileSystem, unlink_if_exists
from logd.storage.swap import CLEANER_CHECKPOINT_FILE, SWAP_SUFFIX, finish_interrupted_swaps
from logd.storage.segment import LOG_SUFFIX, InvalidBatchAt, Segment

logger = logging.getLogger("logd.storage")

# The broker keeps its idempotent-producer snapshot next to the segments; recovery must
# leave it alone without knowing what it holds.
PRODUCER_STATE_FILE = "producer-state.snapshot"
_SEGMENT_FILE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex)$")


@dataclass
class LoadedLog:
    segments: list[Segment]
    log_start_offset: int
    clean_shutdown: bool


def load_log(fs: FileSystem, directory: Path, config: LogConfig, clock_ms: Callable[[], int],
             read_only: bool = False) -> LoadedLog:
    """Recover the partition in ``directory`` (steps in the module docstring)."""
    if read_only:
        _check_servable_read_only(directory)
    else:
        created = not directory.exists()
        fs.mkdir(directory)
        if created:
            fs.fsync_dir(directory.parent)
        finish_interrupted_swaps(fs, directory)
    bases = _clean_directory(fs, directory, read_only)
    checkpoint = read_checkpoint(fs, directory)
    now = clock_ms()
    segments = [Segment(fs, directory, base, config.index_interval_bytes, now) for base in bases]
    if not segments:
        if read_only:
            raise StorageError(f"{directory}: no segment, and the file system is read-only")
        start = checkpoint.log_start_offset if checkpoint else 0
        return LoadedLog([_create_active(fs, directory, start, config, now)], start, True)
    log_start_offset = segments[0].base_offset
    if checkpoint is not None:
        log_start_offset = max(log_start_offset, checkpoint.log_start_offset)
    else:
        logger.warning("%s: no valid checkpoint; verifying the whole log", directory)
        checkpoint = Checkpoint(log_start_offset, segments[0].base_offset, segments[0].base_offset, 0, False)
    segments = _delete_below(fs, directory, segments, log_start_offset, read_only)
    segments = _recover(fs, directory, segments, checkpoint, read_only)
    last = segments[-1]
    if log_start_offset > last.next_offset:
        if read_only:
            raise StorageError(f"{directory}: the log must be emptied, and the file system is read-only")
        # Unflushed data below the log start offset was lost: start afresh there.
        logger.warning("%s: log end %d is below the log start offset %d; emptying the log",
                       directory, last.next_offset, log_start_offset)
        for segment in segments:
            segment.delete_files_locked()
        fs.fsync_dir(directory)
        return LoadedLog([_create_active(fs, directory, log_start_offset, config, now)],
                         log_start_offset, False)
    if not checkpoint.clean_shutdown:
        logger.info("%s: recovered after an unclean shutdown; log end offset %d", directory, last.next_offset)
    return LoadedLog(segments, log_start_offset, checkpoint.clean_shutdown)


def _create_active(fs: FileSystem, directory: Path, base_offset: int, config: LogConfig, now: int) -> Segment:
    segment = Segment(fs, directory, base_offset, config.index_interval_bytes, now)
    segment.open_for_append_locked(create=True)
    fs.fsync_dir(directory)
    return segment


def _check_servable_read_only(directory: Path) -> None:
    if not directory.is_dir():
        raise StorageError(f"{directory} does not exist, and the file system is read-only")
    if any(name.endswith(SWAP_SUFFIX) for name in os.listdir(directory)):
        raise StorageError(f"{directory}: a cleaner swap must be finished, and the file system is read-only")


def _clean_directory(fs: FileSystem, directory: Path, read_only: bool = False) -> list[int]:
    """Delete leftovers (read-only: leave them); return the segments' base offsets (sorted)."""
    logs: set[int] = set()
    indexes: list[tuple[int, Path]] = []
    removed = False
    for name in os.listdir(directory):
        path = directory / name
        if name.endswith(".tmp"):
            if not read_only:
                removed |= unlink_if_exists(fs, path)
            continue
        match = _SEGMENT_FILE.match(name)
        if match is None:
            if name not in (CHECKPOINT_FILE, CLEANER_CHECKPOINT_FILE, PRODUCER_STATE_FILE):
                logger.warning("%s: ignoring unexpected file", path)
            continue
        base = int(match.group(1))
        if match.group(2) == LOG_SUFFIX:
            logs.add(base)
        else:
            indexes.append((base, path))
    for base, path in indexes:
        if base not in logs and not read_only:
            removed |= unlink_if_exists(fs, path)
    if removed:
        fs.fsync_dir(directory)
    return sorted(logs)


def _delete_below(fs: FileSystem, directory: Path, segments: list[Segment], log_start_offset: int,
                  read_only: bool = False) -> list[Segment]:
    keep = 0
    while keep + 1 < len(segments) and segments[keep + 1].base_offset <= log_start_offset:
        if not read_only:
            segments[keep].delete_files_locked()
        keep += 1
    if keep and not read_only:
        fs.fsync_dir(directory)
    return segments[keep:]


def _recovery_index(segments: list[Segment], checkpoint: Checkpoint) -> tuple[int, int]:
    """Index of the segment holding the recovery point and the trusted position in it."""
    index = 0
    for i, segment in enumerate(segments):
        if segment.base_offset <= checkpoint.recovery_offset:
            index = i
    position = checkpoint.recovery_position if segments[index].base_offset == checkpoint.recovery_segment else 0
    if segments[index].base_offset > checkpoint.recovery_offset:
        position = 0
    return index, position


def _recover(fs: FileSystem, directory: Path, segments: list[Segment], checkpoint: Checkpoint,
             read_only: bool = False) -> list[Segment]:
    recovery_index, recovery_position = _recovery_index(segments, checkpoint)
    for i in range(recovery_index):
        _load_trusted(fs, segments[i], segments[i + 1].base_offset, read_only)
    changed_directory = False
    i = recovery_index
    while i < len(segments):
        segment = segments[i]
        is_last = i == len(segments) - 1
        fd = fs.open(segment.log_path, os.O_RDONLY if read_only else os.O_RDWR)
        try:
            file_size = fs.file_size(fd)
            valid_end, error = _verify(fs, fd, segment, recovery_position if i == recovery_index else 0)
            if valid_end < file_size:
                later = segments[i + 1:]
                if any(os.stat(s.log_path).st_size for s in later):
                    reason = error.reason if error else "incomplete batch"
                    raise CorruptLogError(str(segment.log_path), valid_end, reason, segment.next_offset)
                logger.warning("%s: dropped %d bytes after byte %d (%s)%s", segment.log_path,
                               file_size - valid_end, valid_end, error.reason if error else "torn write",
                               " (in memory only: read-only file system)" if read_only else "")
                if not read_only:
                    fs.ftruncate(fd, valid_end)
                    for extra in later:
                        extra.delete_files_locked()
                        changed_directory = True
                del segments[i + 1:]
                is_last = True
            if not is_last and segment.next_offset > segments[i + 1].base_offset:
                raise CorruptLogError(str(segment.log_path), segment.size, "batches overlap the next segment",
                                      segments[i + 1].base_offset)
            if not read_only:
                fs.fsync(fd)
            if not is_last:
                segment.next_offset = segments[i + 1].base_offset
                if not read_only:  # else the rebuilt indexes stay loaded
                    segment.write_indexes_locked(final=True)
                    segment.drop_loaded_indexes()
        finally:
            fs.close(fd)
        i += 1
    if changed_directory:
        fs.fsync_dir(directory)
    last = segments[-1]
    last.open_for_append_locked(create=False, read_only=read_only)
    return segments


def _verify(fs: FileSystem, fd: int, segment: Segment, trusted_position: int) -> tuple[int, InvalidBatchAt | None]:
    """Rebuild/complete the segment's indexes and CRC-check from ``trusted_position``."""
    position = segment.load_indexes_for_recovery_locked(fd, trusted_position) if trusted_position else 0
    if position == 0:
        return segment.rebuild_indexes_locked(fd, verify_from=trusted_position)
    return segment.continue_recovery_locked(fd, position)


def _load_trusted(fs: FileSystem, segment: Segment, next_offset: int, read_only: bool = False) -> None:
    """An older, fsynced segment: read its summary; rebuild its indexes if they look bad."""
    log_size = os.stat(segment.log_path).st_size
    if segment.load_summary_locked(log_size, next_offset):
        return
    logger.warning("%s: missing or invalid index files; rebuilding them", segment.log_path)
    fd = fs.open(segment.log_path, os.O_RDONLY)
    try:
        valid_end, error = segment.rebuild_indexes_locked(fd, verify_from=log_size)
        if valid_end != log_size:
            reason = error.reason if error else "incomplete batch"
            raise CorruptLogError(str(segment.log_path), valid_end, reason, segment.next_offset)
        segment.next_offset = next_offset
        if not read_only:  # else the rebuilt indexes stay loaded
            segment.write_indexes_locked(final=True)
            segment.drop_loaded_indexes()
    finally:
        fs.close(fd)
