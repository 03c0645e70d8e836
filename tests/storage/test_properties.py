"""Property tests: the codec round trip, CRC coverage, and the log against a list model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logd_sdk import codec
from logd.storage import LogConfig, OffsetOutOfRangeError, PartitionLog

from .helpers import records_of

maybe_bytes = st.none() | st.binary(max_size=40)
headers = st.lists(st.tuples(st.text(max_size=8), maybe_bytes), max_size=3)
records = st.lists(
    st.tuples(st.integers(-(2**31) + 1, 2**31 - 1), maybe_bytes, maybe_bytes, headers),
    min_size=1, max_size=12,
)
codecs = st.sampled_from([codec.CODEC_NONE, codec.CODEC_ZSTD])


@settings(max_examples=150, deadline=None)
@given(records=records, codec_id=codecs, first_timestamp=st.integers(0, 2**40),
       base_offset=st.integers(0, 2**40))
def test_codec_round_trip(records, codec_id, first_timestamp, base_offset):
    """Any keys, values and headers survive encode then decode, with either codec."""
    timestamped = [(first_timestamp + delta, key, value, hs) for delta, key, value, hs in records]
    timestamped[0] = (first_timestamp, *timestamped[0][1:])
    batch = codec.encode_batch(timestamped, codec=codec_id, base_offset=base_offset)
    header, decoded = codec.decode_batch(batch)
    assert header.records_count == len(records) and header.codec == codec_id
    assert header.max_timestamp == max(r[0] for r in timestamped)
    for i, (record, original) in enumerate(zip(decoded, timestamped)):
        assert record.offset == base_offset + i
        assert (record.timestamp_ms, record.key, record.value) == original[:3]
        assert record.headers == [(k, v) for k, v in original[3]]
    moved = codec.with_base_offset(batch, base_offset + 7)
    assert codec.validate(moved).base_offset == base_offset + 7


@settings(max_examples=150, deadline=None)
@given(records=records, codec_id=codecs, data=st.data())
def test_validate_rejects_any_flipped_byte(records, codec_id, data):
    """Flipping any byte of the length, magic, CRC or CRC-covered range is detected."""
    batch = codec.encode_batch([(1_000 + i, k, v, h) for i, (_, k, v, h) in enumerate(records)], codec=codec_id)
    position = data.draw(st.sampled_from([*range(8, 12), *range(16, len(batch))]), label="position")
    flip = data.draw(st.integers(1, 255), label="flip")
    damaged = bytearray(batch)
    damaged[position] ^= flip
    with pytest.raises(codec.CorruptBatchError):
        codec.validate(bytes(damaged))


TIMESTAMP_STEP = 10


def timestamp_of(offset: int) -> int:
    return 1_000 + TIMESTAMP_STEP * offset


class LogMachine(RuleBasedStateMachine):
    """The log against a model: a list of batches (base offset, values) and a start offset."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="logd-sm-"))
        self.config = LogConfig(segment_bytes=600, index_interval_bytes=100)
        self.log = PartitionLog.open(self.root / "t-0", self.config)
        self.batches: list[tuple[int, list[bytes]]] = []
        self.log_start = 0
        self.log_end = 0
        self.serial = 0

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _records(self) -> dict[int, bytes]:
        return {base + i: v for base, values in self.batches for i, v in enumerate(values)
                if base + i >= self.log_start}

    @rule(counts=st.lists(st.integers(1, 4), min_size=1, max_size=3), codec_id=codecs)
    def append(self, counts, codec_id):
        data = []
        offset = self.log_end
        planned = []
        for count in counts:
            values = []
            for _ in range(count):
                self.serial += 1
                values.append(b"value-%d" % self.serial)
            data.append(codec.encode_batch(
                [(timestamp_of(offset + i), None, v, None) for i, v in enumerate(values)], codec=codec_id))
            planned.append((offset, values))
            offset += count
        info = self.log.append(b"".join(data))
        assert (info.base_offset, info.last_offset) == (self.log_end, offset - 1)
        self.batches.extend(planned)
        self.log_end = offset

    @rule(data=st.data(), max_bytes=st.integers(1, 2_000))
    def read(self, data, max_bytes):
        offset = data.draw(st.integers(self.log_start, self.log_end), label="offset")
        result = self.log.read(offset, max_bytes)
        if offset == self.log_end:
            assert result == b""
            return
        headers = [h for _, h in codec.iter_batches(result)]
        assert sum(h.size for h in headers) == len(result)
        assert headers[0].base_offset <= offset <= headers[0].last_offset
        assert len(headers) == 1 or len(result) <= max_bytes
        model = self._records()
        for record in records_of(result):
            if record.offset >= self.log_start:
                assert record.value == model[record.offset]

    @rule(data=st.data())
    def read_out_of_range(self, data):
        offset = data.draw(st.sampled_from([self.log_end + 1, self.log_start - 1]), label="offset")
        if offset < 0:
            return
        with pytest.raises(OffsetOutOfRangeError):
            self.log.read(offset, 100)

    @rule(data=st.data())
    def time_lookup(self, data):
        target = data.draw(st.integers(0, timestamp_of(self.log_end + 1)), label="timestamp")
        first = max(self.log_start, -(-(target - 1_000) // TIMESTAMP_STEP))
        expected = (first, timestamp_of(first)) if first < self.log_end else None
        assert self.log.offset_for_timestamp(target) == expected

    @rule()
    def roll(self):
        self.log.roll()

    @rule()
    def reopen(self):
        self.log.close()
        self.log = PartitionLog.open(self.root / "t-0", self.config)

    @rule()
    def crash_and_reopen(self):
        """Abandon the open log as a dying process would and recover its files."""
        crashed = self.root / f"crash-{self.serial}"
        shutil.copytree(self.root / "t-0", crashed)
        self.log.close()
        shutil.rmtree(self.root / "t-0")
        crashed.rename(self.root / "t-0")
        self.log = PartitionLog.open(self.root / "t-0", self.config)

    @rule(data=st.data())
    def truncate(self, data):
        offset = data.draw(st.integers(0, self.log_end + 2), label="offset")
        self.log.truncate_to(offset)
        if offset >= self.log_end:
            return
        if offset < self.log_start:
            self.batches, self.log_start, self.log_end = [], offset, offset
            return
        # Whole batches go, from the one holding the offset: the log ends at its base.
        kept = [(b, v) for b, v in self.batches if b + len(v) - 1 < offset]
        self.log_end = self.batches[len(kept)][0]
        self.batches = kept
        self.log_start = min(self.log_start, self.log_end)

    @rule(data=st.data())
    def delete_records_before(self, data):
        offset = data.draw(st.integers(self.log_start, self.log_end), label="offset")
        assert self.log.delete_records_before(offset) == max(self.log_start, offset)
        self.log_start = max(self.log_start, offset)

    @invariant()
    def offsets_match(self):
        log = self.log
        assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (
            self.log_start, self.log_end, self.log_end)
        segments = log.segments()
        assert log.size_bytes == sum(s.size_bytes for s in segments)
        assert segments[0].base_offset <= self.log_start  # the log start lies in the first segment
        assert segments[-1].is_active and segments[-1].next_offset == self.log_end


TestLogMachine = LogMachine.TestCase
TestLogMachine.settings = settings(max_examples=80, stateful_step_count=30, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
