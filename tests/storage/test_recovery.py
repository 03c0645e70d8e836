"""Recovery on open: torn tails, flipped bytes, index files, crashes mid-roll, corruption."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from logd_sdk import codec
from logd.storage import CorruptLogError, LogConfig, PartitionLog
from logd.storage.files import FileSystem

from .helpers import TINY, make_batch, read_all

CONFIG = LogConfig(**TINY)


def crash_copy(source: Path, destination: Path) -> Path:
    """The files of a live log as a crash (of the process, not the OS) would leave them."""
    shutil.copytree(source, destination)
    return destination


def build(path: Path, batches: int, *, close: bool) -> tuple[PartitionLog, list[bytes]]:
    log = PartitionLog.open(path, CONFIG)
    written = []
    for i in range(batches):
        batch = make_batch(0, 1 + i % 3, timestamp_ms=1_000 + i, codec_id=i % 2)
        log.append(batch)
        written.append(batch)
    if close:
        log.close()
    return log, written


def segment_files(path: Path, suffix: str = ".log") -> list[Path]:
    return sorted(path.glob(f"*{suffix}"))


def offsets(log: PartitionLog) -> list[int]:
    return [r.offset for r in read_all(log)]


def test_torn_tail_cut_at_every_byte_of_the_last_batch(tmp_path, caplog):
    """Whatever byte the last batch is cut at, recovery drops exactly that batch and the
    log takes appends again at the right offset."""
    live, written = build(tmp_path / "live", 12, close=False)
    crashed = crash_copy(live.directory, tmp_path / "crashed")
    live.close()
    last_file = segment_files(crashed)[-1]
    full = last_file.stat().st_size
    last = written[-1]
    records_before = live.log_end_offset - (codec.read_header(last).last_offset_delta + 1)
    caplog.set_level(logging.WARNING, logger="logd.storage")
    for cut in range(len(last)):
        trial = tmp_path / f"cut-{cut}"
        shutil.copytree(crashed, trial)
        with open(segment_files(trial)[-1], "r+b") as f:
            f.truncate(full - len(last) + cut)
        log = PartitionLog.open(trial, CONFIG)
        assert log.log_end_offset == records_before, cut
        assert offsets(log) == list(range(records_before))
        assert log.append(make_batch(0, 1)).base_offset == records_before
        log.close()
        shutil.rmtree(trial)
    assert "dropped" in caplog.text


@pytest.mark.parametrize("field_start", [8, 16, 17, 21, 30, 61])
def test_flipped_byte_in_the_tail_drops_from_there(tmp_path, field_start):
    """A flipped byte (length, magic, CRC, header, records) in the unflushed tail makes
    recovery drop that batch and everything after it in the last segment."""
    live, written = build(tmp_path / "live", 12, close=False)
    crashed = crash_copy(live.directory, tmp_path / "crashed")
    live.close()
    last_file = segment_files(crashed)[-1]
    data = bytearray(last_file.read_bytes())
    batches = list(codec.iter_batches(bytes(data)))
    assert len(batches) >= 2
    position, header = batches[-2]
    for flip in (0x01, 0x80):
        data2 = bytearray(data)
        data2[position + field_start] ^= flip
        last_file.write_bytes(bytes(data2))
        log = PartitionLog.open(crashed, CONFIG)
        assert log.log_end_offset == header.base_offset
        assert offsets(log) == list(range(header.base_offset))
        log.close()
        last_file.write_bytes(bytes(data))  # restore for the next flip (recovery truncated it)


def test_clean_shutdown_scans_nothing(tmp_path, monkeypatch):
    """After a clean close, reopening verifies no batch CRC at all."""
    build(tmp_path / "t-0", 30, close=True)
    calls = []
    original = codec.validate
    monkeypatch.setattr(codec, "validate", lambda *a, **k: calls.append(1) or original(*a, **k))
    log = PartitionLog.open(tmp_path / "t-0", CONFIG)
    assert calls == []
    assert len(offsets(log)) == log.log_end_offset
    log.close()


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "empty"])
@pytest.mark.parametrize("which", [".index", ".timeindex"])
def test_missing_or_garbage_index_files_are_rebuilt(tmp_path, damage, which):
    """Deleted, garbage, cut or emptied index files of every segment are rebuilt, and
    reads and time lookups still give the right answers."""
    path = tmp_path / "t-0"
    log, _ = build(path, 40, close=True)
    log = PartitionLog.open(path, CONFIG)
    expected_offsets = offsets(log)
    expected_times = {ts: log.offset_for_timestamp(ts) for ts in (0, 1_005, 1_020, 1_039, 1_040)}
    log.close()
    for index_file in segment_files(path, which):
        if damage == "delete":
            index_file.unlink()
        elif damage == "garbage":
            index_file.write_bytes(os.urandom(index_file.stat().st_size or 24))
        elif damage == "truncate":
            index_file.write_bytes(index_file.read_bytes()[:-3])
        else:
            index_file.write_bytes(b"")
    log = PartitionLog.open(path, CONFIG)
    assert offsets(log) == expected_offsets
    assert {ts: log.offset_for_timestamp(ts) for ts in expected_times} == expected_times
    for offset in range(0, log.log_end_offset, 7):
        first = codec.read_header(log.read(offset, 1))
        assert first.base_offset <= offset <= first.last_offset
    log.close()


def test_crash_without_checkpoint_verifies_everything(tmp_path, caplog):
    """Without a checkpoint the whole log is verified and its start offset is the first base."""
    path = tmp_path / "t-0"
    build(path, 30, close=True)
    (path / "checkpoint").unlink()
    caplog.set_level(logging.WARNING, logger="logd.storage")
    log = PartitionLog.open(path, CONFIG)
    assert offsets(log) == list(range(log.log_end_offset))
    assert "no valid checkpoint" in caplog.text
    log.close()


def test_garbage_checkpoint_is_ignored(tmp_path):
    path = tmp_path / "t-0"
    build(path, 30, close=True)
    (path / "checkpoint").write_bytes(b"logd-checkpoint 1 5 5 0 0 1 deadbeef\n")
    log = PartitionLog.open(path, CONFIG)
    assert log.log_start_offset == 0 and offsets(log) == list(range(log.log_end_offset))
    log.close()


def test_mid_segment_corruption_fails_loudly(tmp_path):
    """A corrupt batch in an older segment with data after it raises CorruptLogError naming
    the file and byte position, instead of dropping acknowledged records."""
    path = tmp_path / "t-0"
    build(path, 40, close=True)
    (path / "checkpoint").unlink()  # forces verification of every segment
    first = segment_files(path)[0]
    data = bytearray(first.read_bytes())
    batches = list(codec.iter_batches(bytes(data)))
    position = batches[1][0]
    data[position + 40] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as raised:
        PartitionLog.open(path, CONFIG)
    message = str(raised.value)
    assert str(first) in message and f"byte {position}" in message and "truncate -s" in message
    assert raised.value.position == position
    assert first.read_bytes() == bytes(data), "recovery must not modify the files"


def test_torn_older_segment_with_empty_successors_is_truncated(tmp_path):
    """A torn tail in a segment followed only by empty segments (a crash mid-roll) is
    recovered by truncation, not refused."""
    path = tmp_path / "t-0"
    log, _ = build(path, 10, close=False)
    live = crash_copy(path, tmp_path / "crashed")
    log.close()
    last = segment_files(live)[-1]
    base = int(last.name[:20])
    size = last.stat().st_size
    with open(last, "r+b") as f:
        f.truncate(size - 5)
    (live / "checkpoint").unlink()
    (live / f"{base + 1000:020d}.log").write_bytes(b"")  # an empty successor
    recovered = PartitionLog.open(live, CONFIG)
    assert recovered.segments()[-1].base_offset == base
    assert offsets(recovered) == list(range(recovered.log_end_offset))
    assert not (live / f"{base + 1000:020d}.log").exists()
    recovered.close()


def test_leftover_files_are_cleaned(tmp_path):
    """Temporary files and index files without a log are removed at open."""
    path = tmp_path / "t-0"
    build(path, 10, close=True)
    (path / "checkpoint.tmp").write_bytes(b"half")
    (path / f"{999:020d}.index").write_bytes(b"\0" * 8)
    (path / f"{999:020d}.timeindex").write_bytes(b"\0" * 12)
    log = PartitionLog.open(path, CONFIG)
    assert not (path / "checkpoint.tmp").exists()
    assert not (path / f"{999:020d}.index").exists()
    log.close()


class Crash(BaseException):
    """Stands for the process dying: nothing in the engine catches it."""


class CrashingFileSystem(FileSystem):
    """Raises :class:`Crash` at the Nth mutating file operation (counting from 1)."""

    def __init__(self, crash_at: int | None) -> None:
        self.crash_at = crash_at
        self.operations = 0

    def _step(self) -> None:
        self.operations += 1
        if self.crash_at is not None and self.operations == self.crash_at:
            raise Crash()

    def open(self, path, flags, mode=0o644):
        if flags & os.O_CREAT:
            self._step()
        return super().open(path, flags, mode)

    def pwrite(self, fd, data, position):
        try:
            self._step()
        except Crash:
            # The process dies part-way through the write: half of it reached the file.
            super().pwrite(fd, memoryview(data)[: len(data) // 2], position)
            raise
        return super().pwrite(fd, data, position)

    def fsync(self, fd):
        self._step()
        return super().fsync(fd)

    def ftruncate(self, fd, size):
        self._step()
        return super().ftruncate(fd, size)

    def rename(self, source, destination):
        self._step()
        return super().rename(source, destination)

    def unlink(self, path):
        self._step()
        return super().unlink(path)

    def fsync_dir(self, path):
        self._step()
        return super().fsync_dir(path)


def _workload(log: PartitionLog, acked: dict[int, bytes]) -> None:
    for i in range(14):
        batch = make_batch(0, 2, timestamp_ms=1_000 + i, size=60)
        info = log.append(batch)
        acked[info.base_offset] = codec.decode_batch(batch)[1][0].value
        if i == 9:
            log.delete_records_before(6)


def test_crash_at_every_file_operation(tmp_path):
    """Killing the process at each file operation of appends, rolls and a log start move
    (files left as they are) always recovers every acknowledged record, gap-free."""
    counter = CrashingFileSystem(None)
    log = PartitionLog.open(tmp_path / "count", CONFIG, fs=counter)
    start_ops = counter.operations
    _workload(log, {})
    total = counter.operations - start_ops
    log.close()
    assert total > 30
    for crash_at in range(1, total + 1):
        path = tmp_path / f"crash-{crash_at}"
        fs = CrashingFileSystem(None)
        log = PartitionLog.open(path, CONFIG, fs=fs)
        fs.crash_at = fs.operations + crash_at
        acked: dict[int, bytes] = {}
        with pytest.raises(Crash):
            _workload(log, acked)
        # The process is gone: its files stay as they are; recover them.
        recovered = PartitionLog.open(path, CONFIG)
        records = read_all(recovered)
        seen = {r.offset: r.value for r in records}
        assert [r.offset for r in records] == list(range(recovered.log_start_offset, recovered.log_end_offset))
        for offset, value in acked.items():
            if offset + 1 >= recovered.log_start_offset:
                assert seen.get(offset, seen.get(offset + 1)) is not None, (crash_at, offset)
                if offset >= recovered.log_start_offset:
                    assert seen[offset] == value, (crash_at, offset)
        assert recovered.append(make_batch(0, 1)).base_offset == recovered.log_end_offset - 1
        recovered.close()
        shutil.rmtree(path)
