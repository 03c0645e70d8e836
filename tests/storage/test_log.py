"""PartitionLog basics: append, read, roll, time lookup, truncate, delete, reopen."""

from __future__ import annotations

import pytest

from logd_sdk import codec
from logd.storage import LogClosedError, LogConfig, OffsetOutOfRangeError, PartitionLog, StorageError

from .helpers import TINY, make_batch, read_all, records_of, values_by_offset


@pytest.fixture(params=["group", "always", "never"])
def policy(request) -> str:
    return request.param


def open_log(path, **overrides) -> PartitionLog:
    return PartitionLog.open(path, LogConfig(**{**TINY, **overrides}))


def test_append_assigns_consecutive_offsets_and_reads_back(tmp_path, policy):
    """Offsets are gap-free across calls and segments, and every record reads back intact."""
    log = open_log(tmp_path / "t-0", flush_policy=policy)
    expected = {}
    for i in range(60):
        count = 1 + i % 3
        info = log.append(make_batch(0, count, codec_id=i % 2))
        assert info.last_offset - info.base_offset == count - 1
        assert info.base_offset == log.log_end_offset - count
        for j in range(count):
            expected[info.base_offset + j] = (b"v%d-" % j).ljust(10, b".")
    assert log.high_watermark == log.log_end_offset == len(expected)
    assert len(log.segments()) > 3, "tiny segments must roll"
    assert values_by_offset(log) == expected
    log.close()


def test_multi_batch_append_is_one_call(tmp_path):
    """Several concatenated batches get consecutive offsets written at once."""
    log = open_log(tmp_path / "t-0")
    info = log.append(make_batch(0, 2) + make_batch(2, 3))
    assert (info.base_offset, info.last_offset) == (0, 4)
    data = log.read(0, 1 << 20)
    headers = [h for _, h in codec.iter_batches(data)]
    assert [(h.base_offset, h.last_offset) for h in headers] == [(0, 1), (2, 4)]
    log.close()


def test_bad_batch_writes_nothing(tmp_path):
    """A corrupt batch anywhere in a call rejects the whole call."""
    log = open_log(tmp_path / "t-0")
    good = make_batch(0, 2)
    bad = bytearray(make_batch(2, 2))
    bad[-1] ^= 0xFF
    with pytest.raises(codec.CorruptBatchError):
        log.append(good + bytes(bad))
    with pytest.raises(codec.CorruptBatchError):
        log.append(good + b"\x00" * 5)
    with pytest.raises(codec.CorruptBatchError):
        log.append(b"")
    assert log.log_end_offset == 0 and log.size_bytes == 0
    log.close()


def test_read_semantics(tmp_path):
    """read returns whole batches within max_bytes, at least one, b'' at the HW, errors outside."""
    log = open_log(tmp_path / "t-0", segment_bytes=1 << 20)
    batch = make_batch(0, 3, size=50)
    for _ in range(10):
        log.append(batch)
    size = len(batch)
    assert len(log.read(0, 1)) == size  # at least one whole batch
    assert len(log.read(0, 2 * size + 10)) == 2 * size
    assert len(log.read(4, 2 * size)) == 2 * size  # starts with the batch holding offset 4
    assert codec.read_header(log.read(4, 1)).base_offset == 3
    assert log.read(30, 100) == b""
    with pytest.raises(OffsetOutOfRangeError):
        log.read(31, 100)
    log.delete_records_before(5)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(4, 100)
    assert codec.read_header(log.read(5, 1)).base_offset == 3
    log.close()


def test_read_spans_segments(tmp_path):
    """A large budget returns whole batches from several segments in order."""
    log = open_log(tmp_path / "t-0")
    for i in range(40):
        log.append(make_batch(0, 2))
    data = log.read(0, 1 << 20)
    assert [r.offset for r in records_of(data)] == list(range(80))
    log.close()


def test_offset_for_timestamp(tmp_path):
    """Time lookup finds the first record at or after a timestamp, across segments."""
    log = open_log(tmp_path / "t-0")
    for i in range(50):
        log.append(make_batch(0, 2, timestamp_ms=1_000 + 10 * i))  # records at +0 and +1
    assert log.offset_for_timestamp(0) == (0, 1_000)
    assert log.offset_for_timestamp(1_001) == (1, 1_001)
    assert log.offset_for_timestamp(1_002) == (2, 1_010)
    assert log.offset_for_timestamp(1_255) == (52, 1_260)
    assert log.offset_for_timestamp(1_491) == (99, 1_491)
    assert log.offset_for_timestamp(1_492) is None
    log.close()
    log = open_log(tmp_path / "t-0")
    assert log.offset_for_timestamp(1_255) == (52, 1_260)
    log.delete_records_before(60)
    assert log.offset_for_timestamp(0) == (60, 1_300)
    log.close()


def test_offset_for_timestamp_non_monotonic(tmp_path):
    """With out-of-order create times, the answer is the first offset whose timestamp qualifies."""
    log = open_log(tmp_path / "t-0")
    timestamps = [5_000, 1_000, 3_000, 7_000, 2_000, 9_000, 4_000] * 5
    for ts in timestamps:
        log.append(codec.encode_batch([(ts, None, b"x" * 40, None)], codec=codec.CODEC_NONE))
    for target in (0, 2_500, 5_000, 6_000, 8_500, 9_000, 9_001):
        expected = next(((o, t) for o, t in enumerate(timestamps) if t >= target), None)
        assert log.offset_for_timestamp(target) == expected, target
    log.close()


def test_close_and_reopen_keeps_everything(tmp_path, policy):
    """A clean close and reopen keeps offsets, data, start offset and continues appending."""
    path = tmp_path / "t-0"
    log = open_log(path, flush_policy=policy)
    for i in range(30):
        log.append(make_batch(0, 2))
    log.delete_records_before(7)
    before = values_by_offset(log)
    log.close()
    with pytest.raises(LogClosedError):
        log.append(make_batch(0))
    log = open_log(path, flush_policy=policy)
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (7, 60, 60)
    assert values_by_offset(log) == before
    assert log.append(make_batch(0)).base_offset == 60
    log.close()


def test_truncate_to(tmp_path):
    """truncate_to removes whole batches from the one holding the offset, then appends resume there."""
    path = tmp_path / "t-0"
    log = open_log(path)
    for i in range(40):
        log.append(make_batch(0, 2))
    log.truncate_to(81)  # beyond the end: no-op
    assert log.log_end_offset == 80
    log.truncate_to(51)  # mid-batch: the batch [50, 51] goes
    assert log.log_end_offset == log.high_watermark == 50
    assert [r.offset for r in read_all(log)] == list(range(50))
    assert log.append(make_batch(0, 2)).base_offset == 50
    log.truncate_to(20)
    assert log.log_end_offset == 20
    assert all(s.base_offset <= 20 for s in log.segments())
    assert log.append(make_batch(0, 2)).base_offset == 20
    log.close()
    log = open_log(path)
    assert [r.offset for r in read_all(log)] == list(range(22))
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (0, 0, 0)
    log.close()


def test_a_wait_for_records_truncated_before_they_were_durable_fails(tmp_path):
    """It used to lead fsyncs in a loop that could never reach the offset (thousands a
    second), then acknowledge the records that other appends put at those offsets."""
    log = open_log(tmp_path / "p", flush_policy="group")
    log.append(make_batch(0, 1))
    gone = log.append_unflushed(make_batch(1, 1))
    log.truncate_to(1)
    with pytest.raises(StorageError, match="truncated below offset 2"):
        log.wait_durable(gone.last_offset + 1)
    refill = log.append(make_batch(1, 1))  # the log goes on
    assert (refill.base_offset, log.high_watermark) == (1, 2)
    log.close()


def test_a_truncation_above_the_awaited_offset_does_not_fail_the_wait(tmp_path):
    """Only a cut below the awaited offset fails a durability wait: one that removed
    later batches only used to fail it as well (about half the time, in a race)."""
    log = open_log(tmp_path / "p", flush_policy="group")
    first = log.append_unflushed(make_batch(0, 1))
    log.append_unflushed(make_batch(1, 3))
    with log._lock:
        waiting_since = log._truncations  # what a wait blocked now has seen
    log.truncate_to(2)  # the batch [1, 3] goes; offset 0 stays
    with log._lock:
        assert not log._truncated_below_locked(waiting_since, first.last_offset + 1)
        assert log._truncated_below_locked(waiting_since, first.last_offset + 2)
    log.wait_durable(first.last_offset + 1)
    assert log.high_watermark == 1
    log.close()


def test_truncate_below_log_start_restarts_there(tmp_path):
    """Truncating below the log start offset empties the log and restarts at the offset."""
    log = open_log(tmp_path / "t-0")
    for i in range(20):
        log.append(make_batch(0, 2))
    log.delete_records_before(30)
    log.truncate_to(10)
    assert (log.log_start_offset, log.log_end_offset) == (10, 10)
    assert log.append(make_batch(0)).base_offset == 10
    log.close()


def test_delete_records_before_deletes_whole_segments(tmp_path):
    """Moving the log start offset deletes the segments below it and survives reopen."""
    path = tmp_path / "t-0"
    log = open_log(path)
    for i in range(40):
        log.append(make_batch(0, 2))
    count = len(log.segments())
    size = log.size_bytes
    assert log.delete_records_before(45) == 45
    assert log.delete_records_before(10) == 45  # never moves back
    segments = log.segments()
    assert len(segments) < count and segments[0].base_offset <= 45 < segments[0].next_offset
    assert log.size_bytes == sum(s.size_bytes for s in segments) < size
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(81)
    log.close()
    assert len(list(path.glob("*.log"))) == len(segments)
    log = open_log(path)
    assert log.log_start_offset == 45
    assert read_all(log)[0].offset <= 45
    log.close()


def test_delete_oldest_segments(tmp_path):
    """Retention deletes the oldest segments matching a predicate, never the active one."""
    log = open_log(tmp_path / "t-0")
    for i in range(40):
        log.append(make_batch(0, 2, timestamp_ms=i))
    assert log.delete_oldest_segments(lambda info: info.max_timestamp_ms < 20) >= 1
    first = log.segments()[0]
    assert log.log_start_offset == first.base_offset
    assert first.max_timestamp_ms >= 20
    older = len(log.segments()) - 1
    assert log.delete_oldest_segments(lambda info: True) == older
    assert len(log.segments()) == 1 and log.segments()[0].is_active
    log.close()


def test_segment_ms_rolls(tmp_path):
    """A segment older than segment_ms rolls on the next append."""
    now = [1_000]
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_ms=100), clock_ms=lambda: now[0])
    log.append(make_batch(0))
    now[0] += 50
    log.append(make_batch(0))
    assert len(log.segments()) == 1
    now[0] += 60
    info = log.append(make_batch(0))
    assert info.log_append_time_ms == now[0]
    assert [s.base_offset for s in log.segments()] == [0, 4]
    log.close()


def test_delete_removes_directory(tmp_path):
    log = open_log(tmp_path / "t-0")
    log.append(make_batch(0))
    log.delete()
    assert not (tmp_path / "t-0").exists()


def test_wait_for_data(tmp_path):
    """wait_for_data times out without data and returns at once when the HW is past the offset."""
    log = open_log(tmp_path / "t-0")
    assert log.wait_for_data(0, 0.01) is False
    log.append(make_batch(0))
    assert log.wait_for_data(0, 5) is True
    log.close()
