"""PartitionOffsetsLog: records stored as batches in a partition log and read back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from logd.groups import GroupCoordinator, OffsetAndMetadata, PartitionOffsetsLog, TopicPartition
from logd.storage import LogConfig, PartitionLog
from logd_sdk import codec

from .sim import FakeClock, sequential_ids


class FakePartitionLog:
    """In-memory batches with the PartitionLog API; ``compact``/``delete_before`` make gaps."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []
        self.log_start_offset = 0
        self.high_watermark = 0

    def append(self, batches: bytes) -> None:
        for position, header in list(codec.iter_batches(batches)):
            batch = codec.with_base_offset(batches[position : position + header.size], self.high_watermark)
            self.batches.append(batch)
            self.high_watermark += header.records_count

    def read(self, offset: int, max_bytes: int) -> bytes:
        out, size = [], 0
        for batch in self.batches:
            header = codec.read_header(batch)
            if header.next_offset <= offset:
                continue
            if out and size + len(batch) > max_bytes:
                break
            out.append(batch)
            size += len(batch)
        return b"".join(out)

    def drop_batch(self, index: int) -> None:
        """Remove one batch, leaving an offset gap (as the compaction cleaner does)."""
        del self.batches[index]

    def delete_before(self, offset: int) -> None:
        self.batches = [b for b in self.batches if codec.read_header(b).next_offset > offset]
        self.log_start_offset = offset


records = st.lists(
    st.tuples(st.binary(min_size=1, max_size=30), st.one_of(st.none(), st.binary(max_size=60))),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(appends=st.lists(records, max_size=6))
def test_round_trip_through_batches(appends):
    """Whatever is appended (tombstones included) is read back in order."""
    partition = FakePartitionLog()
    offsets_log = PartitionOffsetsLog(partition, clock_ms=lambda: 1234)
    for chunk in appends:
        offsets_log.append(chunk)
    assert list(offsets_log.read_all()) == [record for chunk in appends for record in chunk]


def test_large_appends_are_split_and_large_batches_read(monkeypatch):
    """An append of many records becomes several batches; a batch larger than the read chunk is still read."""
    import logd.groups.offsets_log as module

    monkeypatch.setattr(module, "READ_CHUNK_BYTES", 64)
    partition = FakePartitionLog()
    offsets_log = PartitionOffsetsLog(partition)
    written = [(b"k%d" % i, b"v" * 50) for i in range(1200)]
    offsets_log.append(written)
    assert len(partition.batches) == 3
    assert list(offsets_log.read_all()) == written


def test_reads_from_log_start_and_across_gaps():
    """Reading starts at the log start offset and skips the holes compaction leaves."""
    partition = FakePartitionLog()
    offsets_log = PartitionOffsetsLog(partition)
    for i in range(5):
        offsets_log.append([(b"k%d" % i, b"%d" % i)])
    partition.drop_batch(2)
    partition.delete_before(1)
    assert list(offsets_log.read_all()) == [(b"k1", b"1"), (b"k3", b"3"), (b"k4", b"4")]


def test_committed_offsets_survive_a_restart_on_real_storage(tmp_path):
    """Offsets committed through a coordinator on a real PartitionLog are there after close and reopen."""
    config = LogConfig(segment_bytes=1024, index_interval_bytes=128)
    clock = FakeClock()
    counts = {"t": 4, "x": 1}
    expected = {}

    def coordinator_on(log):
        return GroupCoordinator(PartitionOffsetsLog(log), lambda t: counts.get(t, 0), lambda t, p: 0,
                                clock_ms=clock, member_id_factory=sequential_ids())

    log = PartitionLog.open(tmp_path / "__consumer_offsets-0", config)
    coordinator = coordinator_on(log)
    member = coordinator.heartbeat("g", "", 0, subscribed_topics=["t"])
    for round_number in range(40):  # enough records to roll several 1 KiB segments
        offsets = {tp: round_number * 10 + tp.partition for tp in member.assignment}
        coordinator.commit_offsets("g", member.member_id, member.member_epoch,
                                   {tp: OffsetAndMetadata(o) for tp, o in offsets.items()})
        expected.update(offsets)
    coordinator.commit_offsets("manual", "", -1, {TopicPartition("x", 0): OffsetAndMetadata(3)})
    assert len(log.segments()) > 2
    log.close()

    log = PartitionLog.open(tmp_path / "__consumer_offsets-0", config)
    try:
        restarted = coordinator_on(log)
        assert restarted.fetch_committed_offsets("g") == dict(sorted(expected.items()))
        assert restarted.fetch_committed_offsets("manual") == {TopicPartition("x", 0): 3}
        again = restarted.heartbeat("g", member.member_id, member.member_epoch, subscribed_topics=["t"],
                                    owned_partitions=member.assignment)
        assert again.assignment == member.assignment
    finally:
        log.close()
