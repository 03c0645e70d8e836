"""Bounded resources and visibility: file descriptors, the high watermark, checkpoints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest

import logd.storage
from logd_sdk import codec
from logd.storage import HandleCache, LogConfig, OffsetOutOfRangeError, PartitionLog
from logd.storage.files import FileSystem

from .helpers import TINY, make_batch, read_all


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_open_files_stay_bounded_with_many_partitions(tmp_path):
    """Many partitions with many segments keep one open file each plus a bounded cache,
    however much of their history is read."""
    cache = HandleCache(capacity=8)
    before = open_fds()
    logs = [PartitionLog.open(tmp_path / f"t-{p}", LogConfig(**TINY), handle_cache=cache) for p in range(40)]
    for log in logs:
        for _ in range(30):
            log.append(make_batch(0, 2))
        assert len(log.segments()) > 3
    for log in logs:
        assert len(read_all(log)) == 60
    assert open_fds() - before <= len(logs) + cache.capacity
    for log in logs:
        log.close()
    assert open_fds() - before <= cache.capacity


def test_concurrent_segment_deletion_never_yields_garbage(tmp_path):
    """Reads racing with the deletion of the segments they read return whole valid
    batches or an out-of-range error, never bytes of another file."""
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(**TINY), handle_cache=HandleCache(capacity=2))
    for _ in range(200):
        log.append(make_batch(0, 2))
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                start = log.log_start_offset
                for offset in range(start, min(start + 60, log.high_watermark), 3):
                    try:
                        data = log.read(offset, 500)
                    except OffsetOutOfRangeError:
                        continue
                    batches = list(codec.iter_batches(data))  # CRC-checked
                    assert batches and batches[0][1].base_offset <= offset <= batches[0][1].last_offset
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for target in range(10, 400, 10):
        log.delete_records_before(target)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    log.close()


class BlockingFsync(FileSystem):
    """fsync blocks until released (to look at the log while an fsync is in flight)."""

    def __init__(self) -> None:
        self.block = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def fsync(self, fd: int) -> None:
        if self.block:
            self.entered.set()
            assert self.release.wait(30)
        super().fsync(fd)


def test_readers_never_see_data_that_is_not_durable(tmp_path):
    """With group commit, written but not yet fsynced data stays invisible to readers."""
    fs = BlockingFsync()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=1 << 20), fs=fs)
    log.append(make_batch(0, 2))
    fs.block = True
    appender = threading.Thread(target=log.append, args=(make_batch(2, 3),))
    appender.start()
    assert fs.entered.wait(30)
    assert log.log_end_offset == 5 and log.high_watermark == 2
    assert log.read(2, 1 << 20) == b""
    assert [r.offset for r in read_all(log)] == [0, 1]
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    assert log.wait_for_data(2, 0.01) is False
    fs.block = False
    fs.release.set()
    appender.join(timeout=30)
    assert log.high_watermark == 5 and log.wait_for_data(2, 1)
    log.close()


def test_never_policy_makes_writes_visible_at_once(tmp_path):
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=1 << 20, flush_policy="never"))
    log.append(make_batch(0, 2))
    assert log.high_watermark == log.log_end_offset == 2
    log.close()


def test_periodic_checkpoint_bounds_recovery(tmp_path, monkeypatch):
    """Commits persist the recovery point once per interval, so recovery after a crash
    verifies only the batches written since."""
    now = [0]
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, LogConfig(segment_bytes=1 << 20), clock_ms=lambda: now[0],
                            recovery_checkpoint_interval_ms=1_000)
    for i in range(30):
        log.append(make_batch(0, 1))
    now[0] = 5_000
    log.append(make_batch(0, 1))  # this commit also moves the recovery point
    for i in range(3):
        log.append(make_batch(0, 1))
    crashed = tmp_path / "crashed"
    shutil.copytree(path, crashed)
    log.close()
    calls = []
    original = codec.validate
    monkeypatch.setattr(codec, "validate", lambda *a, **k: calls.append(1) or original(*a, **k))
    recovered = PartitionLog.open(crashed, LogConfig(segment_bytes=1 << 20))
    assert recovered.log_end_offset == 34
    assert len(calls) == 3
    recovered.close()


def test_reads_of_the_active_segment_work_under_python_optimize(tmp_path):
    """``python -O`` strips asserts: a read must still take its reference to the active
    segment's file (taken inside an assert, it was not, and the reader's release closed
    the writer's file: the next append failed with EBADF)."""
    script = (
        "import sys; from pathlib import Path; from logd_sdk import codec;"
        "from logd.storage import LogConfig, PartitionLog;"
        "log = PartitionLog.open(Path(sys.argv[1]), LogConfig());"
        "batch = codec.encode_batch([(1, None, b'v', None)]);"
        "log.append(batch); read = log.read(0, 1 << 20); log.append(batch);"
        "print('ok', len(read) > 0, log.log_end_offset); log.close()"
    )
    result = subprocess.run([sys.executable, "-O", "-c", script, str(tmp_path / "t-0")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "True", "2"]


def test_engine_names_are_exported():
    """The engine's public names stay exported (the cleaner adds its own next to them)."""
    engine = {
        "AppendInfo", "CorruptLogError", "FileSystem", "HandleCache", "LogClosedError", "LogConfig",
        "LogFailedError", "OS_FILE_SYSTEM", "OffsetOutOfRangeError", "PartitionLog", "SegmentInfo",
        "StorageError", "raise_open_file_limit",
    }
    assert engine <= set(logd.storage.__all__)
    assert all(hasattr(logd.storage, name) for name in logd.storage.__all__)


def test_log_config_rejects_bad_values():
    for bad in (dict(segment_bytes=0), dict(segment_bytes=1 << 32), dict(segment_ms=0),
                dict(index_interval_bytes=0), dict(flush_policy="sometimes")):
        with pytest.raises(ValueError):
            LogConfig(**bad)
