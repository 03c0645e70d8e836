"""Concurrent appenders and readers, group commit, and the sticky failure state."""

from __future__ import annotations

import threading
import time

import pytest

from logd_sdk import codec
from logd.storage import LogConfig, LogFailedError, PartitionLog

from .fakes import FaultyFileSystem
from .helpers import TINY, make_batch, read_all


@pytest.mark.parametrize("policy", ["group", "always", "never"])
def test_concurrent_appenders_and_readers(tmp_path, policy):
    """Offsets are unique and gap-free under concurrent appends, and concurrent readers
    only ever see whole valid batches below the high watermark."""
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(**{**TINY, "segment_bytes": 4096}, flush_policy=policy))
    writers, per_writer = 6, 40
    results: dict[int, list[tuple[int, int]]] = {w: [] for w in range(writers)}
    errors: list[BaseException] = []
    done = threading.Event()

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                count = 1 + (w + i) % 3
                batch = codec.encode_batch(
                    [(1_000, b"w%d" % w, b"%d:%d:%d" % (w, i, j), None) for j in range(count)],
                    codec=codec.CODEC_ZSTD if i % 2 else codec.CODEC_NONE)
                info = log.append(batch)
                results[w].append((info.base_offset, info.last_offset))
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    def read() -> None:
        try:
            offset = 0
            while not done.is_set() or offset < log.high_watermark:
                high_watermark = log.high_watermark
                if offset >= high_watermark:
                    log.wait_for_data(offset, 0.05)
                    continue
                data = log.read(offset, 700)
                batches = list(codec.iter_batches(data))  # validates every CRC
                assert batches, "a read below the high watermark returned nothing"
                assert sum(h.size for _, h in batches) == len(data), "half a batch was returned"
                for position, header in batches:
                    assert header.base_offset <= offset or header.base_offset == offset
                    codec.decode_batch(data, position)
                    offset = header.next_offset
                assert offset <= log.high_watermark
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads + readers:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    for thread in readers:
        thread.join(timeout=60)
    assert not errors, errors
    ranges = sorted(r for rs in results.values() for r in rs)
    assert ranges[0][0] == 0
    for (_, last), (base, _) in zip(ranges, ranges[1:]):
        assert base == last + 1
    assert ranges[-1][1] + 1 == log.log_end_offset == log.high_watermark
    records = read_all(log)
    assert [r.offset for r in records] == list(range(log.log_end_offset))
    # Each writer's records are in its own order.
    for w in range(writers):
        mine = [r.value for r in records if r.key == b"w%d" % w]
        assert mine == sorted(mine, key=lambda v: tuple(map(int, v.split(b":"))))
    log.close()


def test_group_commit_shares_fsyncs(tmp_path):
    """With many concurrent appenders, group commit uses fewer fsyncs than appends."""
    fs = FaultyFileSystem()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=1 << 20), fs=fs)
    start = fs.fsync_calls
    appends = 8 * 25

    def write() -> None:
        for _ in range(25):
            log.append(make_batch(0, 1))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert log.log_end_offset == appends
    assert fs.fsync_calls - start < appends
    log.close()


@pytest.mark.parametrize("policy", ["group", "always"])
def test_failed_fsync_is_sticky_and_never_acked(tmp_path, policy):
    """After a failed fsync the append is not acknowledged, the HW does not move, and the
    log refuses appends until reopened; reopening recovers the acknowledged data."""
    fs = FaultyFileSystem()
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, LogConfig(segment_bytes=1 << 20, flush_policy=policy), fs=fs)
    log.append(make_batch(0, 2))
    fs.fail_fsync_after(0)
    with pytest.raises(LogFailedError):
        log.append(make_batch(2, 2))
    assert log.failed and log.high_watermark == 2
    fs.fail_fsync_after(10**9)  # the disk "recovers": the log must still refuse
    with pytest.raises(LogFailedError):
        log.append(make_batch(2, 2))
    with pytest.raises(LogFailedError):
        log.flush()
    assert [r.offset for r in read_all(log)] == [0, 1]
    log.close()
    log = PartitionLog.open(path, LogConfig(segment_bytes=1 << 20, flush_policy=policy))
    assert not log.failed and log.high_watermark >= 2
    assert log.append(make_batch(0, 1)).base_offset == log.log_end_offset - 1
    log.close()


def test_waiters_of_a_failed_group_fsync_all_fail(tmp_path):
    """Appenders waiting for a group fsync that fails all raise; none is acknowledged."""
    fs = FaultyFileSystem()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=1 << 20), fs=fs)
    fs.fail_fsync_after(0)
    outcomes: list[object] = []

    def write() -> None:
        try:
            outcomes.append(log.append(make_batch(0, 1)))
        except LogFailedError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == 6 and all(isinstance(o, LogFailedError) for o in outcomes)
    assert log.high_watermark == 0
    log.close()


def test_torn_write_fails_the_log_and_recovers(tmp_path):
    """A write that fails half-way fails the log; reopening drops the torn bytes."""
    fs = FaultyFileSystem()
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, LogConfig(segment_bytes=1 << 20), fs=fs)
    log.append(make_batch(0, 2))
    fs.tear_next_write(30)
    with pytest.raises(LogFailedError):
        log.append(make_batch(2, 2))
    log.close()
    log = PartitionLog.open(path, LogConfig(segment_bytes=1 << 20))
    assert [r.offset for r in read_all(log)] == [0, 1]
    assert log.append(make_batch(2, 1)).base_offset == 2
    log.close()


def test_wait_for_data_wakes_on_append(tmp_path):
    """A long-poll waiter wakes when another thread's append raises the high watermark."""
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(**TINY))
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(log.wait_for_data(0, 30)))
    waiter.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and log.high_watermark == 0:
        log.append(make_batch(0))
    waiter.join(timeout=5)  # woken by the append, not at its 30 s timeout
    assert not waiter.is_alive() and woke == [True]
    log.close()



class PausingReads(FaultyFileSystem):
    """After ``arm()``, the next pread blocks until ``release`` is set (a read in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.paused = threading.Event()
        self.release = threading.Event()

    def pread(self, fd: int, size: int, position: int) -> bytes:
        if self.armed:
            self.armed = False
            self.paused.set()
            assert self.release.wait(30)
        return super().pread(fd, size, position)


def test_a_read_racing_a_truncation_is_retried(tmp_path):
    """A read whose file positions were computed before a truncation and re-appends moved
    the batches does not return misaligned bytes: it reads again."""
    fs = PausingReads()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=1 << 20, index_interval_bytes=1), fs=fs)
    for _ in range(10):
        log.append(make_batch(0, 2, size=10))
    result: list[bytes] = []
    fs.armed = True
    reader = threading.Thread(target=lambda: result.append(log.read(10, 1 << 20)))
    reader.start()
    assert fs.paused.wait(30)
    log.truncate_to(2)
    while log.log_end_offset <= 12:
        log.append(make_batch(0, 3, size=37))
    fs.release.set()
    reader.join(timeout=30)
    batches = list(codec.iter_batches(result[0]))  # raises on misaligned bytes
    assert sum(h.size for _, h in batches) == len(result[0])
    assert batches[0][1].base_offset <= 10 <= batches[0][1].last_offset
    assert [r.offset for r in read_all(log)] == list(range(log.log_end_offset))
    log.close()
