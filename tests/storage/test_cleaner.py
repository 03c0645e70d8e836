"""The log cleaner: compaction results, tombstones, lag, dirty ratio, bounded map, crash-safe swap."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logd_sdk import codec
from logd.storage import (
    CleanerConfig,
    CleanerStoppedError,
    CompactionPolicy,
    HandleCache,
    LogCleaner,
    LogConfig,
    LogFailedError,
    OffsetMap,
    PartitionLog,
    StorageError,
)
from logd.storage import swap
from logd.storage.cleaner import (
    CleanerCheckpoint,
    group_segments,
    plan_cleaning,
    read_cleaner_checkpoint,
    write_cleaner_checkpoint,
)
from logd.storage.files import OS_FILE_SYSTEM
from logd.storage.offset_map import key_digest

from .helpers import read_all

CONFIG = LogConfig(segment_bytes=1024, index_interval_bytes=128, flush_policy="never")
FAST = CleanerConfig(duty_cycle=1.0)  # no pauses: tests measure correctness, not latency
NOW_MS = 1_700_000_000_000
EAGER = CompactionPolicy(min_compaction_lag_ms=0, delete_retention_ms=86_400_000, min_cleanable_dirty_ratio=0.0)


def open_log(directory: Path, clock=None) -> PartitionLog:
    kwargs = {"clock_ms": clock} if clock else {}
    return PartitionLog.open(directory, CONFIG, handle_cache=HandleCache(), **kwargs)


def write_versions(log: PartitionLog, rng: random.Random, batches: int, keys: int = 20,
                   tombstone_share: float = 0.1, timestamp_ms: int = NOW_MS - 3_600_000,
                   codec_id: int | None = None) -> None:
    """Append ``batches`` batches of 1-4 keyed records; values name their offset."""
    for _ in range(batches):
        offset = log.log_end_offset
        records = []
        for i in range(rng.randint(1, 4)):
            key = b"key-%d" % rng.randrange(keys)
            value = None if rng.random() < tombstone_share else b"value-%d" % (offset + i)
            records.append((timestamp_ms + i, key, value, [("h", b"%d" % (offset + i))]))
        chosen = codec_id if codec_id is not None else rng.choice([codec.CODEC_NONE, codec.CODEC_ZSTD])
        log.append(codec.encode_batch(records, codec=chosen))


def latest_by_key(records) -> dict[bytes, bytes | None]:
    latest: dict[bytes, bytes | None] = {}
    for record in records:
        latest[record.key] = record.value
    return latest


def live(latest: dict) -> dict:
    return {key: value for key, value in latest.items() if value is not None}


def as_tuples(records) -> list[tuple]:
    return [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in records]


# -- the offset map --------------------------------------------------------------------


def test_offset_map_keeps_the_latest_offset_and_reports_full():
    """Puts overwrite, gets find, an absent key is -1, and the map is full at its capacity."""
    offset_map = OffsetMap(24 * 16)
    assert offset_map.slots == 16 and offset_map.capacity == 12
    for i in range(12):
        offset_map.put(key_digest(b"k%d" % i), i)
    assert offset_map.full
    offset_map.put(key_digest(b"k3"), 100)  # an existing key still fits
    assert offset_map.get(key_digest(b"k3")) == 100
    assert offset_map.get(key_digest(b"k4")) == 4
    assert offset_map.get(key_digest(b"absent")) == -1
    assert offset_map.latest_offset == 100
    offset_map.clear()
    assert len(offset_map) == 0 and offset_map.get(key_digest(b"k3")) == -1


# -- compaction ------------------------------------------------------------------------


def test_compaction_keeps_the_latest_record_per_key(tmp_path):
    """Many versions per key: afterwards the closed segments hold only each key's latest
    record, byte-identical in content and offset to the original, and the log is smaller."""
    log = open_log(tmp_path / "p")
    write_versions(log, random.Random(1), 300)
    before = read_all(log)
    size_before = log.size_bytes
    active_base = log.segments()[-1].base_offset
    result = LogCleaner(FAST).clean(log, EAGER, NOW_MS)
    after = read_all(log)
    assert result.passes == 1 and result.records_removed == len(before) - len(after) > 0
    assert log.size_bytes == size_before - result.bytes_reclaimed < size_before
    assert log.size_bytes == sum(s.size_bytes for s in log.segments())
    original = {r.offset: r for r in before}
    assert all(as_tuples([r]) == as_tuples([original[r.offset]]) for r in after)
    assert [r.offset for r in after] == sorted({r.offset for r in after})
    assert latest_by_key(after) == latest_by_key(before)
    # Below the active segment each key appears once; the active segment is untouched.
    cleaned_keys = [r.key for r in after if r.offset < active_base]
    assert len(cleaned_keys) == len(set(cleaned_keys))
    assert as_tuples(r for r in after if r.offset >= active_base) == \
        as_tuples(r for r in before if r.offset >= active_base)
    log.close()
    reopened = open_log(tmp_path / "p")
    assert as_tuples(read_all(reopened)) == as_tuples(after)
    reopened.close()


def test_a_batch_whose_records_all_go_disappears(tmp_path):
    """A batch all of whose records are superseded is dropped; the others stay whole."""
    log = open_log(tmp_path / "p")
    log.append(codec.encode_batch([(NOW_MS, b"a", b"a0", None), (NOW_MS, b"b", b"b1", None),
                                   (NOW_MS, b"a", b"a2", None)]))
    log.append(codec.encode_batch([(NOW_MS, b"b", b"b3", None)], codec=codec.CODEC_NONE))
    log.append(codec.encode_batch([(NOW_MS, b"c", b"c4", None), (NOW_MS, b"a", b"a5", None)]))
    log.roll()
    LogCleaner(FAST).clean(log, EAGER, NOW_MS)
    data = log.read(0, 1 << 20)
    headers = [header for _, header in codec.iter_batches(data, verify=True)]
    assert [(h.base_offset, h.next_offset, h.records_count) for h in headers] == [(3, 4, 1), (4, 6, 2)]
    log.close()


def test_rebuilt_batch_keeps_producer_fields(tmp_path):
    """The first batch keeps one of its three records: same producer id/epoch/base sequence,
    same codec and last offset delta, the record at its old offset; the CRC is valid."""
    log = open_log(tmp_path / "p")
    log.append(codec.encode_batch([(NOW_MS, b"a", b"a0", None), (NOW_MS + 1, b"b", b"b1", None),
                                   (NOW_MS + 2, b"a", b"a2", None)], codec=codec.CODEC_ZSTD,
                                  producer_id=7, producer_epoch=3, base_sequence=40))
    log.append(codec.encode_batch([(NOW_MS, b"a", b"a3", None)], codec=codec.CODEC_NONE))
    log.roll()
    LogCleaner(FAST).clean(log, EAGER, NOW_MS)
    data = log.read(0, 1 << 20)
    (position, first), (_, second) = list(codec.iter_batches(data, verify=True))
    assert (first.base_offset, first.last_offset_delta, first.records_count) == (0, 2, 1)
    assert (first.producer_id, first.producer_epoch, first.base_sequence, first.codec) == (7, 3, 40, codec.CODEC_ZSTD)
    assert first.max_timestamp == NOW_MS + 2
    _, records = codec.decode_batch(data, position)
    assert [(r.offset, r.key, r.value, r.timestamp_ms) for r in records] == [(1, b"b", b"b1", NOW_MS + 1)]
    assert (second.base_offset, second.codec) == (3, codec.CODEC_NONE)
    log.close()


def test_records_without_key_are_kept(tmp_path):
    """Compaction never drops a record without a key (documented choice)."""
    log = open_log(tmp_path / "p")
    for i in range(60):
        log.append(codec.encode_batch([(NOW_MS, None, b"nokey-%d" % i, None), (NOW_MS, b"k", b"%d" % i, None)]))
    log.roll()
    LogCleaner(FAST).clean(log, EAGER, NOW_MS)
    after = read_all(log)
    assert [r.value for r in after if r.key is None] == [b"nokey-%d" % i for i in range(60)]
    assert [r.value for r in after if r.key == b"k"] == [b"59"]
    log.close()


def test_tombstones_stay_for_delete_retention_ms_then_go(tmp_path):
    """A tombstone survives cleaning until delete.retention.ms after the pass that first
    cleaned it; then a cleaning triggered by it alone (no new writes) removes it."""
    now = [NOW_MS]
    log = open_log(tmp_path / "p", clock=lambda: now[0])
    for i in range(40):
        log.append(codec.encode_batch([(NOW_MS, b"gone", b"v%d" % i, None), (NOW_MS, b"stays", b"s%d" % i, None)]))
    log.append(codec.encode_batch([(NOW_MS, b"gone", None, None)]))
    log.append(codec.encode_batch([(NOW_MS, b"stays", b"s40", None)]))
    log.roll()
    policy = CompactionPolicy(0, 60_000, 0.0)
    cleaner = LogCleaner(FAST)
    assert cleaner.clean(log, policy, now[0]).passes == 1
    assert live(latest_by_key(read_all(log))) == {b"stays": b"s40"}
    assert [r.value for r in read_all(log) if r.key == b"gone"] == [None]  # the tombstone is kept
    now[0] += 59_000
    assert cleaner.clean(log, policy, now[0]).passes == 0
    assert [r.value for r in read_all(log) if r.key == b"gone"] == [None]
    now[0] += 1_000
    result = cleaner.clean(log, policy, now[0])
    assert result.passes == 1 and result.tombstones_removed == 1
    assert [r.key for r in read_all(log)] == [b"stays"]
    assert read_cleaner_checkpoint(OS_FILE_SYSTEM, log.directory).first_tombstone_offset == -1
    assert cleaner.clean(log, policy, now[0] + 10**9).passes == 0
    log.close()


def _log_ending_in_an_expired_tombstone(directory: Path) -> tuple[PartitionLog, LogCleaner, CompactionPolicy]:
    """30 versions of 3 keys then a tombstone, cleaned twice (the tombstone is past the
    horizon at the second pass): the log, its cleaner and the policy."""
    log = open_log(directory)
    for i in range(30):
        log.append(codec.encode_batch([(NOW_MS, b"k%d" % (i % 3), b"v%d" % i, None)]))
    log.append(codec.encode_batch([(NOW_MS, b"k0", None, None)]))
    log.roll()
    cleaner = LogCleaner(FAST)
    policy = CompactionPolicy(0, 0, 0.0)
    cleaner.clean(log, policy, NOW_MS)
    cleaner.clean(log, policy, NOW_MS + 1)
    return log, cleaner, policy


def test_a_tombstone_at_the_end_of_the_log_stays_so_reads_never_stall(tmp_path):
    """When the log's last record is an expired tombstone it is kept, so a read at every
    offset below the high watermark returns a batch (no trailing gap)."""
    log, cleaner, policy = _log_ending_in_an_expired_tombstone(tmp_path / "p")  # the tombstone is past the horizon now
    assert [(r.key, r.value) for r in read_all(log)] == [(b"k1", b"v28"), (b"k2", b"v29"), (b"k0", None)]
    for offset in range(log.high_watermark):
        assert log.read(offset, 100), offset
    log.close()


def test_a_tombstone_kept_as_the_last_record_starts_no_pass_until_records_follow_it(tmp_path):
    """An expired tombstone kept only because it is the log's last record is not one to
    come back for: later checks start no pass (each used to re-read the whole partition
    and remove nothing); once records follow it, a dirty pass removes it."""
    log, cleaner, policy = _log_ending_in_an_expired_tombstone(tmp_path / "p")
    assert [cleaner.clean(log, policy, NOW_MS + t).passes for t in range(2, 6)] == [0, 0, 0, 0]
    log.append(codec.encode_batch([(NOW_MS, b"k1", b"later", None)]))
    log.roll()
    cleaner.clean(log, policy, NOW_MS + 10)
    assert [(r.key, r.value) for r in read_all(log)] == [(b"k2", b"v29"), (b"k1", b"later")]
    log.close()


def test_min_compaction_lag_keeps_recent_segments(tmp_path):
    """Segments with a record newer than min.compaction.lag.ms are not cleaned, nor the active one."""
    log = open_log(tmp_path / "p")
    write_versions(log, random.Random(2), 100, timestamp_ms=NOW_MS - 600_000)
    old_end = log.log_end_offset
    log.roll()
    write_versions(log, random.Random(3), 100, timestamp_ms=NOW_MS - 1_000)
    before = read_all(log)
    LogCleaner(FAST).clean(log, CompactionPolicy(60_000, 86_400_000, 0.0), NOW_MS)
    after = read_all(log)
    assert as_tuples(r for r in after if r.offset >= old_end) == as_tuples(r for r in before if r.offset >= old_end)
    old_keys = [r.key for r in after if r.offset < old_end]
    assert len(old_keys) == len(set(old_keys)) < len([r for r in before if r.offset < old_end])
    log.close()


def test_dirty_ratio_decides_when_to_clean(tmp_path):
    """With min.cleanable.dirty.ratio 0.9 a log that is half clean is left alone; with 0.5 it is cleaned."""
    log = open_log(tmp_path / "p")
    write_versions(log, random.Random(4), 100, keys=1000, tombstone_share=0)
    log.roll()
    cleaner = LogCleaner(FAST)
    assert cleaner.clean(log, EAGER, NOW_MS).passes == 1  # all dirty: everything is now clean
    clean_bytes = sum(s.size_bytes for s in log.segments())
    write_versions(log, random.Random(5), 100, keys=1000, tombstone_share=0)
    log.roll()
    segments = log.segments()
    dirty_bytes = sum(s.size_bytes for s in segments) - clean_bytes
    ratio = dirty_bytes / (clean_bytes + dirty_bytes)
    assert 0.3 < ratio < 0.7
    checkpoint = read_cleaner_checkpoint(OS_FILE_SYSTEM, log.directory)
    assert plan_cleaning(segments, 0, checkpoint, CompactionPolicy(0, 1, 0.9), NOW_MS) is None
    assert cleaner.clean(log, CompactionPolicy(0, 1, 0.9), NOW_MS).passes == 0
    plan = plan_cleaning(segments, 0, checkpoint, CompactionPolicy(0, 1, 0.3), NOW_MS)
    assert plan is not None and plan.dirty_ratio == pytest.approx(ratio)
    assert cleaner.clean(log, CompactionPolicy(0, 1, 0.3), NOW_MS).passes == 1
    log.close()


def test_bounded_map_cleans_in_several_passes(tmp_path):
    """With a map far smaller than the number of keys, the cleaner makes several passes and
    the result is the same as with a map that fits everything."""
    rng = random.Random(6)
    log = open_log(tmp_path / "small")
    write_versions(log, rng, 250, keys=60)
    log.roll()
    before = read_all(log)
    shutil.copytree(tmp_path / "small", tmp_path / "big")
    tiny = CleanerConfig(dedupe_buffer_bytes=24 * 20, duty_cycle=1.0)  # 15 keys per pass
    result = LogCleaner(tiny).clean(log, EAGER, NOW_MS)
    assert result.passes >= 4
    small = read_all(log)
    big_log = open_log(tmp_path / "big")
    assert LogCleaner(FAST).clean(big_log, EAGER, NOW_MS).passes == 1
    assert latest_by_key(small) == latest_by_key(before)
    assert as_tuples(small) == as_tuples(read_all(big_log))
    log.close()
    big_log.close()


def test_group_segments_respects_segment_bytes():
    """Groups are consecutive, each at most segment.bytes (or one segment alone)."""
    from logd.storage.config import SegmentInfo
    sizes = [400, 500, 300, 1200, 100, 100]
    infos, base = [], 0
    for size in sizes:
        infos.append(SegmentInfo(base, size, 0, base + 10, Path("x"), False, 0))
        base += 10
    groups = group_segments(infos, 1000)
    assert [[s.size_bytes for s in g] for g in groups] == [[400, 500], [300], [1200], [100, 100]]


def test_cleaner_checkpoint_round_trip_and_invalid_file(tmp_path):
    """The checkpoint survives a round trip; a corrupt one reads as "nothing cleaned"."""
    checkpoint = CleanerCheckpoint(42, 17, ((10, 1000), (42, 2000)))
    write_cleaner_checkpoint(OS_FILE_SYSTEM, tmp_path, checkpoint)
    assert read_cleaner_checkpoint(OS_FILE_SYSTEM, tmp_path) == checkpoint
    assert checkpoint.delete_horizon_offset(2500, 1000) == 10
    assert checkpoint.delete_horizon_offset(3000, 1000) == 42
    (tmp_path / swap.CLEANER_CHECKPOINT_FILE).write_text("logd-cleaner 1 42 17 0 deadbeef\n")
    assert read_cleaner_checkpoint(OS_FILE_SYSTEM, tmp_path) == CleanerCheckpoint()


def test_replace_segments_refuses_a_changed_log(tmp_path):
    """If retention deleted a segment under the pass, the swap is refused and the cleaned
    files are removed; the cleaner reports the pass as given up."""
    log = open_log(tmp_path / "p")
    write_versions(log, random.Random(7), 80)
    log.roll()
    snapshot = log.segments()
    writer = swap.CleanedSegmentWriter(OS_FILE_SYSTEM, log.directory, snapshot[0].base_offset,
                                       snapshot[1].next_offset, 128, 0)
    cleaned = writer.finish()
    log.delete_records_before(snapshot[1].base_offset)
    assert not log.replace_segments(snapshot[:2], cleaned)
    assert not [p for p in log.directory.iterdir() if p.name.endswith(".cleaned")]
    log.close()


def test_stop_gives_up_the_pass_and_leaves_the_log_unchanged(tmp_path):
    """stop() makes clean() raise CleanerStoppedError, with no cleaned files left behind."""
    log = open_log(tmp_path / "p")
    write_versions(log, random.Random(8), 100)
    log.roll()
    before = as_tuples(read_all(log))
    cleaner = LogCleaner(CleanerConfig(duty_cycle=1.0, read_chunk_bytes=256))
    cleaner.stop()
    with pytest.raises(CleanerStoppedError):
        cleaner.clean(log, EAGER, NOW_MS)
    assert as_tuples(read_all(log)) == before
    assert not [p for p in log.directory.iterdir() if ".cleaned" in p.name or ".swap" in p.name]
    log.close()


def test_readers_during_compaction_never_see_garbage(tmp_path):
    """Readers scanning the log while it is compacted get only valid batches whose records
    are the original records at their offsets."""
    log = open_log(tmp_path / "p")
    write_versions(log, random.Random(9), 200)
    log.roll()
    original = {r.offset: (r.key, r.value) for r in read_all(log)}
    stop = threading.Event()
    problems: list[str] = []
    scans = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                for record in read_all(log, max_bytes=200):
                    if original.get(record.offset) != (record.key, record.value):
                        problems.append(f"offset {record.offset}: {record}")
            except Exception as exc:  # noqa: BLE001 - any error is a failure here
                problems.append(repr(exc))
            scans[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        cleaner = LogCleaner(CleanerConfig(dedupe_buffer_bytes=24 * 20, duty_cycle=1.0))
        result = cleaner.clean(log, EAGER, NOW_MS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert result.passes > 1 and scans[0] > 0
    assert problems == []
    log.close()


# -- crash safety of the swap -------------------------------------------------------------


class SimulatedCrash(BaseException):
    """Raised at a crash point; a BaseException so that no clean-up code runs."""


@pytest.mark.parametrize("point", swap.CRASH_POINTS)
def test_crash_at_each_swap_step_leaves_old_or_new_segments(tmp_path, point, monkeypatch):
    """A crash at any step of a segment swap, then reopening the log, leaves the swapped
    range with exactly its old records or exactly its cleaned ones (every key's latest
    value present, nothing else touched); cleaning again then gives the result of an
    uninterrupted cleaning."""
    rng = random.Random(10)
    log = open_log(tmp_path / "crash")
    write_versions(log, rng, 120, keys=15)
    log.roll()
    write_versions(log, rng, 5, keys=15)
    before = as_tuples(read_all(log))
    latest = latest_by_key(read_all(log))
    groups = group_segments(log.segments()[:-1], CONFIG.segment_bytes)
    assert len(groups) > 1
    first_end = groups[0][-1].next_offset  # the crash hits the swap of the first group
    log.close()
    shutil.copytree(tmp_path / "crash", tmp_path / "reference")
    reference = open_log(tmp_path / "reference")
    LogCleaner(FAST).clean(reference, EAGER, NOW_MS)
    after = as_tuples(read_all(reference))
    reference.close()
    # The first group swapped, the others not yet: a valid, partly compacted log.
    first_swapped = [r for r in after if r[0] < first_end] + [r for r in before if r[0] >= first_end]
    assert first_swapped != before

    log = open_log(tmp_path / "crash")
    reached: list[str] = []

    def hook(name: str) -> None:
        reached.append(name)
        if name == point:
            raise SimulatedCrash(name)

    monkeypatch.setattr(swap, "crash_hook", hook)
    with pytest.raises(SimulatedCrash):
        LogCleaner(FAST).clean(log, EAGER, NOW_MS)
    monkeypatch.setattr(swap, "crash_hook", None)
    assert reached.count(point) == 1
    # The crashed instance is abandoned, as a killed process would leave it.
    recovered = open_log(tmp_path / "crash")
    records = as_tuples(read_all(recovered))
    expected = before if point in ("cleaned_partial", "cleaned_written") else first_swapped
    assert records == expected, point
    assert latest_by_key(read_all(recovered)) == latest
    leftovers = [p.name for p in recovered.directory.iterdir() if ".cleaned" in p.name or ".swap" in p.name]
    assert leftovers == []
    LogCleaner(FAST).clean(recovered, EAGER, NOW_MS)
    assert as_tuples(read_all(recovered)) == after
    recovered.close()
    reopened = open_log(tmp_path / "crash")
    assert as_tuples(read_all(reopened)) == after
    reopened.close()


@pytest.mark.parametrize("point", ["old_segment_deleted", "old_segments_deleted", "log_renamed", "swap_done"])
def test_a_failed_swap_fails_the_log(tmp_path, monkeypatch, point):
    """An I/O error after the commit point fails the log (sticky) and refuses reads with a
    retriable StorageError (they failed with FileNotFoundError or returned nothing below
    the high watermark); reopening finishes the swap."""
    log = open_log(tmp_path / "p")
    write_versions(log, random.Random(11), 80)
    log.roll()
    latest = latest_by_key(read_all(log))

    def hook(name: str) -> None:
        if name == point:
            raise OSError(5, "injected")

    monkeypatch.setattr(swap, "crash_hook", hook)
    with pytest.raises(LogFailedError):
        LogCleaner(FAST).clean(log, EAGER, NOW_MS)
    monkeypatch.setattr(swap, "crash_hook", None)
    assert log.failed
    with pytest.raises(LogFailedError):
        log.append(codec.encode_batch([(NOW_MS, b"k", b"v", None)]))
    for offset in (0, log.high_watermark - 1):
        with pytest.raises(StorageError, match="segment swap failed"):
            log.read(offset, 1 << 20)
    recovered = open_log(tmp_path / "p")
    assert latest_by_key(read_all(recovered)) == latest
    recovered.close()


# -- property: compaction against a dict model ------------------------------------------


operation = st.tuples(st.integers(0, 11), st.one_of(st.none(), st.binary(max_size=30)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(operation, min_size=1, max_size=5), min_size=1, max_size=60),
       map_entries=st.integers(1, 40), compressed=st.booleans(), rolls=st.sets(st.integers(0, 59), max_size=6))
def test_compaction_matches_a_dict_model(tmp_path_factory, batches, map_entries, compressed, rolls):
    """After compaction (any map size), every key's latest value equals a dict model's,
    tombstoned keys hold nothing but a tombstone, and offsets only increase."""
    directory = tmp_path_factory.mktemp("model") / "p"
    log = open_log(directory)
    model: dict[bytes, bytes | None] = {}
    for i, batch in enumerate(batches):
        records = [(NOW_MS, b"key-%d" % key, value, None) for key, value in batch]
        log.append(codec.encode_batch(records, codec=codec.CODEC_ZSTD if compressed else codec.CODEC_NONE))
        model.update((b"key-%d" % key, value) for key, value in batch)
        if i in rolls:
            log.roll()
    log.roll()
    before = read_all(log)
    config = CleanerConfig(dedupe_buffer_bytes=24 * max(2, int(map_entries / 0.75) + 1), duty_cycle=1.0)
    LogCleaner(config).clean(log, EAGER, NOW_MS)
    after = read_all(log)
    assert latest_by_key(after) == model
    offsets = [r.offset for r in after]
    assert offsets == sorted(set(offsets))
    assert len(after) == len(model)  # the whole log was cleanable: one record per key
    original = {r.offset: (r.key, r.value) for r in before}
    assert all(original[r.offset] == (r.key, r.value) for r in after)
    log.close()


def test_a_reader_pinned_across_a_swap_reads_the_old_segment_with_its_own_indexes(tmp_path, monkeypatch):
    """A read that pinned the first segment of a group just before the swap replaced it
    reads the old file with the old indexes, even after other reads pushed the old
    segment out of the loaded-index LRU (its indexes used to be dropped and reloaded
    from its base offset's files: the cleaned segment's, so it read garbage or nothing)."""
    from logd.storage.reader import read_batches, read_hints

    log = PartitionLog.open(tmp_path / "p", LogConfig(segment_bytes=1024, index_interval_bytes=64,
                                                      flush_policy="never"), handle_cache=HandleCache())
    while len(log.segments()) == 1:  # segment 0: versions of 8 keys, to be compacted
        i = log.log_end_offset
        log.append(codec.encode_batch([(NOW_MS, b"k%d" % (i % 8), b"v%d" % i + b"x" * (i * 7 % 23), None)],
                                      codec=codec.CODEC_NONE))
    while len(log.segments()) < 9:  # then segments of unique keys
        i = log.log_end_offset
        log.append(codec.encode_batch([(NOW_MS, b"u%d" % i, b"v%d" % i, None)], codec=codec.CODEC_NONE))
    log.roll()
    first = log.segments()[0]
    targets = range(first.base_offset + 1, first.next_offset)
    originals = {offset: log.read(offset, 100) for offset in targets}
    pinned = {}

    def pin_when_cleaned(name: str) -> None:  # the moment between a reader's pin and its read
        if name == "cleaned_written" and not pinned:
            with log._lock:
                pinned["view"] = log._segments.pin_older_locked(0)

    monkeypatch.setattr(swap, "crash_hook", pin_when_cleaned)
    assert LogCleaner(FAST).clean(log, CompactionPolicy(0, 86_400_000, 0.0), NOW_MS).segments_cleaned
    monkeypatch.setattr(swap, "crash_hook", None)
    for segment in log.segments()[1:6]:  # other reads push the old segment out of the LRU
        log.read(segment.base_offset, 100)
    view = pinned["view"]
    try:
        for offset in targets:
            data, _ = read_batches(log._fs, view, offset, 100, read_hints(view, offset, 100), at_least_one=True)
            assert data == originals[offset], offset
    finally:
        view.release()
        log.close()


class _LockThatRunsOnRelease:
    """Stands in for a log's lock: runs ``after_release`` once, right after the next
    release (the moment between two of a caller's lock holds)."""

    def __init__(self, inner) -> None:
        self.inner, self.after_release = inner, None

    def acquire(self, *args, **kwargs) -> bool:
        return self.inner.acquire(*args, **kwargs)

    def release(self) -> None:
        self.inner.release()
        hook, self.after_release = self.after_release, None
        if hook is not None:
            hook()

    __enter__ = acquire

    def __exit__(self, *exc_info) -> None:
        self.release()


def test_a_time_lookup_racing_a_swap_finds_the_record_in_the_cleaned_segment(tmp_path):
    """The lookup used to list its candidate segments once: a swap right after deleted the
    segments it replaced and the cleaned one was not listed, so the lookup skipped to a
    later segment's record (offset 10 here instead of 5)."""
    log = open_log(tmp_path / "p")
    for i in range(10):  # segment [0, 10): k0..k9 at NOW+0..9
        log.append(codec.encode_batch([(NOW_MS + i, b"k%d" % i, b"v%d" % i, None)]))
    log.roll()
    for i in range(5):  # segment [10, 15): new versions of k0..k4
        log.append(codec.encode_batch([(NOW_MS + 100 + i, b"k%d" % i, b"w%d" % i, None)]))
    log.roll()
    log.append(codec.encode_batch([(NOW_MS + 200, b"z", b"z", None)]))
    cleaned = []
    lock = _LockThatRunsOnRelease(log._lock)
    lock.after_release = lambda: cleaned.append(LogCleaner(FAST).clean(log, EAGER, NOW_MS + 1000).segments_cleaned)
    log._lock = lock
    try:
        assert log.offset_for_timestamp(NOW_MS + 5) == (5, NOW_MS + 5)
    finally:
        log._lock = lock.inner
    assert cleaned == [1]  # the swap did happen between the lookup's lock holds
    assert log.offset_for_timestamp(NOW_MS + 5) == (5, NOW_MS + 5)
    log.close()


def test_a_cleaned_segment_keeps_the_replaced_segments_newest_modification_time(tmp_path):
    """Retention ages records without a timestamp by their file's mtime: a rewrite gave
    the cleaned segment a fresh one, so such records never expired while the cleaner kept
    rewriting them. It keeps the replaced files' newest mtime, as Kafka's cleaner does."""
    log = open_log(tmp_path / "p")
    for i in range(40):
        log.append(codec.encode_batch([(-1, b"k%d" % (i % 4), b"v" * 40, None)]))
    two_hours_ago_ns = time.time_ns() - 2 * 3_600_000 * 1_000_000
    for segment in log.segments()[:-1]:
        os.utime(segment.path, ns=(two_hours_ago_ns - segment.base_offset, two_hours_ago_ns - segment.base_offset))
    replaced = log.segments()[:-1]
    assert LogCleaner(FAST).clean(log, EAGER, NOW_MS).segments_cleaned
    newest = max(two_hours_ago_ns - segment.base_offset for segment in replaced)
    for segment in log.segments()[:-1]:
        assert segment.path.stat().st_mtime_ns <= newest
    log.close()
