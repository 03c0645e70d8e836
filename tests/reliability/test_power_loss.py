"""Simulated power loss: what survives a cut matches the flush policy's promise."""

from __future__ import annotations

import random

import pytest

from logd.storage import HandleCache, LogConfig, PartitionLog
from logd_sdk import codec

from .powerloss import PowerCut, PowerLossFileSystem
from .state import read_partition

#: Mutating file-system calls a workload makes, roughly: the cut lands anywhere in it.
CALLS_PER_RUN = 260


def _batch(values: list[bytes]) -> bytes:
    return codec.encode_batch([(1_000 + i, None, value, None) for i, value in enumerate(values)],
                              codec=codec.CODEC_NONE)


def _run(root, policy: str, rng: random.Random):
    """A random workload on a log over a power-losing file system, cut at a random call.

    Returns (written, acked, flushed_end, starts, cut_dir): every value written by offset,
    the acknowledged subset, the end offset of the last explicit flush/roll (everything
    below it was fsynced), and the log start offsets the log has had.
    """
    fs = PowerLossFileSystem(root)
    cut_dir = root.parent / f"{root.name}-after-cut"
    fs.cut_at(rng.randint(1, CALLS_PER_RUN), cut_dir, rng)
    config = LogConfig(segment_bytes=1024, index_interval_bytes=128, flush_policy=policy)
    written: dict[int, bytes] = {}
    acked: dict[int, bytes] = {}
    flushed_end = 0
    starts = {0}
    log = None
    try:
        log = PartitionLog.open(root / "p-0", config, fs=fs, handle_cache=HandleCache(8),
                                recovery_checkpoint_interval_ms=rng.choice([0, 50, 60_000]))
        for step in range(400):
            action = rng.random()
            if action < 0.8:
                values = [f"v{step}-{i}-".encode().ljust(rng.randint(8, 120), b"x") for i in range(rng.randint(1, 4))]
                end = log.log_end_offset
                for i, value in enumerate(values):  # in the page cache as soon as pwrite returns
                    written[end + i] = value
                info = log.append(_batch(values))
                assert info.base_offset == end
                for i, value in enumerate(values):
                    acked[info.base_offset + i] = value
            elif action < 0.88:
                log.flush()
                flushed_end = log.log_end_offset
            elif action < 0.94:
                end = log.log_end_offset
                log.roll()
                flushed_end = end
            else:
                target = rng.randint(log.log_start_offset, log.high_watermark)
                starts.add(target)
                log.delete_records_before(target)
        # The workload ended before the cut: cut now, with whatever is unsynced.
        fs.cut_at(1, cut_dir, rng)
        fs.fsync_dir(root)
    except PowerCut:
        pass
    finally:
        if log is not None:
            try:
                log.close()
            except Exception:
                pass
    assert fs.cut
    return written, acked, flushed_end, starts, cut_dir, fs.cut_stats


@pytest.mark.timeout(90)
@pytest.mark.parametrize("policy", ["always", "group", "never"])
def test_power_loss_keeps_the_flush_policys_promise(tmp_path, seed, profile, policy):
    """After a power cut at a random write, tear or rename: with "always"/"group" every
    acknowledged record survives; with "never" what survives is a prefix of what was
    written that holds everything fsynced (flush, roll); no garbage is ever served."""
    totals = {"kept": 0, "dropped": 0}
    for cut in range(profile.power_cuts):
        rng = random.Random(f"{seed}-{policy}-{cut}")
        root = tmp_path / f"run{cut}"
        root.mkdir()
        written, acked, flushed_end, starts, cut_dir, stats = _run(root, policy, rng)
        totals["kept"] += stats["kept"]
        totals["dropped"] += stats["dropped"]
        where = f"cut {cut} (seed {seed})"
        for attempt in range(2):  # recovery twice: the second must find the same log
            log = PartitionLog.open(cut_dir / "p-0", LogConfig(segment_bytes=1024, flush_policy=policy),
                                    handle_cache=HandleCache(8))
            try:
                state = read_partition(log)  # CRC-checks every batch: no garbage served
                end = log.log_end_offset
                # An offset is never reused: the next append goes after everything read.
                assert log.append(_batch([b"after-cut"])).base_offset == end
            finally:
                log.close()
            if attempt == 0:
                first, first_end = state, end
            else:
                assert state.records == first.records + ((first_end, None, b"after-cut"),), where
        start = first.log_start_offset
        assert start in starts or start == first.high_watermark, f"{where}: log start {start} not in {starts}"
        offsets = first.offsets
        assert offsets == list(range(start, first.high_watermark)), f"{where}: not contiguous"
        for offset, _, value in first.records:
            assert written.get(offset) == value, f"{where}: offset {offset} holds {value!r}, wrote {written.get(offset)!r}"
        if policy == "never":
            assert first.high_watermark >= flushed_end, f"{where}: fsynced data below {flushed_end} lost"
        else:
            lost = [offset for offset in acked if offset >= start and offset not in set(offsets)]
            assert not lost, f"{where}: acknowledged offsets lost: {lost[:10]}"
    # The cuts must have dropped unsynced data some of the time, or they tested nothing.
    if policy == "never":
        assert totals["dropped"] > 0, totals
