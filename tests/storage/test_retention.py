"""Retention: the pure decisions, and deleting segments while readers read."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from logd_sdk import codec
from logd.storage import (
    HandleCache,
    LogConfig,
    OffsetOutOfRangeError,
    PartitionLog,
    enforce_retention,
    plan_retention,
)
from logd.storage.config import SegmentInfo
from logd.storage.files import FileSystem
from logd.storage.retention import should_roll

from .helpers import make_batch, read_all, records_of

CONFIG = LogConfig(segment_bytes=1024, index_interval_bytes=128, flush_policy="never")
NOW_MS = 1_700_000_000_000
HOUR_MS = 3_600_000


def info(base: int, size: int, max_timestamp_ms: int, next_offset: int, active: bool = False,
         created_ms: int = 0) -> SegmentInfo:
    return SegmentInfo(base, size, max_timestamp_ms, next_offset, Path(f"{base}.log"), active, created_ms)


# -- decisions -------------------------------------------------------------------------


def test_plan_by_time_deletes_the_expired_prefix_only():
    """Segments older than retention.ms go from the oldest, stopping at the first young one."""
    segments = [info(0, 100, NOW_MS - 5 * HOUR_MS, 10), info(10, 100, NOW_MS - 4 * HOUR_MS, 20),
                info(20, 100, NOW_MS - 1_000, 30), info(30, 100, NOW_MS - 5 * HOUR_MS, 40),
                info(40, 50, NOW_MS, 45, active=True)]
    decision = plan_retention(segments, now_ms=NOW_MS, retention_ms=HOUR_MS, retention_bytes=-1, high_watermark=45)
    assert (decision.delete_count, decision.roll_active, decision.reason, decision.bytes) == \
        (2, False, "retention.ms", 200)
    assert plan_retention(segments, now_ms=NOW_MS, retention_ms=-1, retention_bytes=-1,
                          high_watermark=45).delete_count == 0


def test_plan_by_bytes_keeps_at_least_retention_bytes():
    """The oldest segments go while the rest still holds retention.bytes."""
    segments = [info(0, 300, NOW_MS, 10), info(10, 300, NOW_MS, 20), info(20, 300, NOW_MS, 30),
                info(30, 100, NOW_MS, 35, active=True)]
    plan = lambda limit: plan_retention(segments, now_ms=NOW_MS, retention_ms=-1, retention_bytes=limit,
                                        high_watermark=35)
    assert plan(1000).delete_count == 0
    assert plan(700).delete_count == 1
    assert (plan(400).delete_count, plan(400).reason) == (2, "retention.bytes")
    assert plan(100).delete_count == 3
    zero = plan(0)
    assert (zero.delete_count, zero.roll_active) == (4, True)


def test_plan_never_deletes_above_the_high_watermark_nor_an_empty_active_segment():
    """A segment not wholly visible stays; so does an empty active segment."""
    segments = [info(0, 100, 1, 10), info(10, 100, 1, 20, active=True)]
    decision = plan_retention(segments, now_ms=NOW_MS, retention_ms=1, retention_bytes=-1, high_watermark=15)
    assert decision.delete_count == 1
    empty_active = [info(0, 100, 1, 10), info(10, 0, -1, 10, active=True)]
    assert plan_retention(empty_active, now_ms=NOW_MS, retention_ms=1, retention_bytes=0,
                          high_watermark=10).delete_count == 1


def test_should_roll_only_a_non_empty_active_segment_older_than_segment_ms():
    assert should_roll(info(0, 10, 1, 5, active=True, created_ms=NOW_MS - 1000), NOW_MS, 1000)
    assert not should_roll(info(0, 10, 1, 5, active=True, created_ms=NOW_MS - 999), NOW_MS, 1000)
    assert not should_roll(info(0, 0, -1, 0, active=True, created_ms=0), NOW_MS, 1000)


# -- on a real log ---------------------------------------------------------------------


def open_log(directory: Path, clock=None, fs: FileSystem | None = None) -> PartitionLog:
    kwargs = {"clock_ms": clock} if clock else {}
    if fs is not None:
        kwargs["fs"] = fs
    return PartitionLog.open(directory, CONFIG, handle_cache=HandleCache(), **kwargs)


def fill(log: PartitionLog, batches: int, timestamp_ms: int) -> None:
    for _ in range(batches):
        log.append(make_batch(log.log_end_offset, 3, timestamp_ms=timestamp_ms, size=40))


class ReaderThread(threading.Thread):
    """Reads from the log start to the high watermark again and again; records problems:
    a record whose value does not name its offset, or any error but OffsetOutOfRange."""

    def __init__(self, log: PartitionLog) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.records_read = 0
        self.scans = 0
        self._scanned = threading.Condition()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for record in read_all(self.log, max_bytes=200):
                    self.records_read += 1
                    if not record.value.startswith(b"v%d-" % record.offset):
                        self.problems.append(f"offset {record.offset}: {record.value!r}")
            except OffsetOutOfRangeError:
                pass  # retention moved the start under us: start again from the new one
            except Exception as exc:  # noqa: BLE001 - anything else is a failure
                self.problems.append(repr(exc))
            with self._scanned:
                self.scans += 1
                self._scanned.notify_all()

    def wait_scans(self, more: int, timeout_s: float = 10) -> None:
        """Block until ``more`` further scans of the log have finished."""
        with self._scanned:
            target = self.scans + more
            assert self._scanned.wait_for(lambda: self.scans >= target, timeout_s)

    def finish(self) -> list[str]:
        self.stop.set()
        self.join(10)
        return self.problems


def test_retention_by_time_with_a_reader_throughout(tmp_path):
    """Old segments go, the log start offset moves to the first one kept, and a reader
    reading all along only ever sees valid records."""
    now = [NOW_MS]
    log = open_log(tmp_path / "p", clock=lambda: now[0])
    fill(log, 60, NOW_MS - 2 * HOUR_MS)
    old_end = log.log_end_offset
    log.roll()
    fill(log, 30, NOW_MS - 1_000)
    reader = ReaderThread(log)
    reader.start()
    try:
        reader.wait_scans(1)
        result = enforce_retention(log, now_ms=now[0], retention_ms=HOUR_MS, retention_bytes=-1)
        assert result.segments_deleted > 1 and result.reason == "retention.ms"
        assert result.log_start_offset == log.log_start_offset == old_end
        assert result.bytes_reclaimed > 0
        with pytest.raises(OffsetOutOfRangeError):
            log.read(0, 100)
        assert enforce_retention(log, now_ms=now[0], retention_ms=HOUR_MS, retention_bytes=-1).segments_deleted == 0
        # Once the new data is old too, an idle partition is rolled and emptied.
        now[0] += 2 * HOUR_MS
        emptied = enforce_retention(log, now_ms=now[0], retention_ms=HOUR_MS, retention_bytes=-1)
        assert emptied.rolled and log.log_start_offset == log.log_end_offset == log.high_watermark
        reader.wait_scans(2)
    finally:
        problems = reader.finish()
    assert problems == [] and reader.records_read > 0
    assert read_all(log) == []
    log.close()
    reopened = open_log(tmp_path / "p")
    assert reopened.log_start_offset == reopened.log_end_offset
    reopened.close()


def test_retention_by_bytes_with_a_reader_throughout(tmp_path):
    """The partition shrinks to at most retention.bytes plus one segment; offsets stay."""
    log = open_log(tmp_path / "p")
    reader = ReaderThread(log)
    reader.start()
    try:
        for _ in range(5):
            fill(log, 40, NOW_MS)
            reader.wait_scans(1)
            enforce_retention(log, now_ms=NOW_MS, retention_ms=-1, retention_bytes=3000)
            assert 3000 <= log.size_bytes <= 3000 + CONFIG.segment_bytes + 200
    finally:
        problems = reader.finish()
    assert problems == [] and reader.records_read > 0
    records = read_all(log)
    assert records[0].offset == log.log_start_offset > 0
    assert [r.offset for r in records] == list(range(log.log_start_offset, log.log_end_offset))
    log.close()


def test_delete_records_with_a_reader_throughout(tmp_path):
    """delete_records_before moves the log start offset (mid-segment too); readers see
    valid data or OffsetOutOfRange, never anything else."""
    log = open_log(tmp_path / "p")
    fill(log, 100, NOW_MS)
    reader = ReaderThread(log)
    reader.start()
    try:
        for target in range(7, log.high_watermark, 23):
            reader.wait_scans(1)
            assert log.delete_records_before(target) == target
    finally:
        problems = reader.finish()
    assert problems == []
    assert read_all(log)[0].offset >= log.log_start_offset
    assert log.segments()[0].base_offset <= log.log_start_offset < log.segments()[0].next_offset
    log.close()


class PausingFileSystem(FileSystem):
    """Blocks the first pread of a ``.log`` file after ``arm()`` until ``release`` is set
    (a read in flight)."""

    def __init__(self) -> None:
        self.armed = False
        self.paused = threading.Event()
        self.release = threading.Event()

    def arm(self) -> None:
        self.armed = True

    def pread(self, fd: int, size: int, position: int) -> bytes:
        if self.armed and os.readlink(f"/proc/self/fd/{fd}").endswith(".log"):
            self.armed = False
            self.paused.set()
            assert self.release.wait(10)
        return super().pread(fd, size, position)


def test_a_read_in_flight_on_a_deleted_segment_returns_its_data(tmp_path):
    """A read that pinned a segment before retention deleted it still returns that
    segment's valid batches (it reads through its open handle), not garbage."""
    fs = PausingFileSystem()
    log = open_log(tmp_path / "p", fs=fs)
    fill(log, 40, NOW_MS - 2 * HOUR_MS)
    log.roll()
    fill(log, 5, NOW_MS)
    first = log.segments()[0]
    result: list[bytes] = []
    fs.arm()
    reader = threading.Thread(target=lambda: result.append(log.read(0, 400)))
    reader.start()
    assert fs.paused.wait(10)
    deleted = enforce_retention(log, now_ms=NOW_MS, retention_ms=HOUR_MS, retention_bytes=-1)
    assert deleted.segments_deleted >= 1 and not first.path.exists()
    fs.release.set()
    reader.join(10)
    records = records_of(result[0])
    assert records and records[0].offset == 0
    assert all(r.value.startswith(b"v%d-" % r.offset) for r in records)
    log.close()


def test_enforce_retention_is_a_no_op_without_limits(tmp_path):
    log = open_log(tmp_path / "p")
    fill(log, 30, 0)
    assert enforce_retention(log, now_ms=NOW_MS, retention_ms=-1, retention_bytes=-1).segments_deleted == 0
    assert log.log_start_offset == 0
    log.close()


def test_records_from_the_future_are_kept():
    """A segment whose newest record is stamped in the future is not expired."""
    segments = [info(0, 100, NOW_MS + HOUR_MS, 10), info(10, 0, -1, 10, active=True)]
    assert plan_retention(segments, now_ms=NOW_MS, retention_ms=1, retention_bytes=-1,
                          high_watermark=10).delete_count == 0


def test_batch_helper_values_name_offsets():
    # Guards the reader's check above: make_batch's values start with "v<offset>-".
    records = records_of(codec.with_base_offset(make_batch(5, 2), 5))
    assert [r.value[:3] for r in records] == [b"v5-", b"v6-"]


def test_records_without_timestamps_age_by_the_segment_files_modification_time(tmp_path):
    """Records stamped -1 (a raw gRPC client may send them) used to make their segments
    expire at the first check, active one included; they now age by the file's mtime."""
    log = open_log(tmp_path / "p")
    for _ in range(30):
        log.append(codec.encode_batch([(-1, None, b"v" * 40, None)] * 3))
    assert len(log.segments()) > 2 and all(s.max_timestamp_ms == -1 for s in log.segments())
    now_ms = time.time_ns() // 1_000_000
    kept = enforce_retention(log, now_ms=now_ms, retention_ms=HOUR_MS, retention_bytes=-1)
    assert (kept.segments_deleted, log.log_start_offset) == (0, 0)
    first, second = log.segments()[:2]
    for segment in (first, second):  # written two hours ago, as far as the file system knows
        os.utime(segment.path, ns=(time.time_ns() - 2 * HOUR_MS * 1_000_000,) * 2)
    expired = enforce_retention(log, now_ms=now_ms, retention_ms=HOUR_MS, retention_bytes=-1)
    assert (expired.segments_deleted, log.log_start_offset) == (2, second.next_offset)
    log.close()
