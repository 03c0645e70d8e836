"""The broker's idempotent-producer checks: duplicates, gaps, epochs, recovery, expiry.

Most tests drive an in-process ``Broker`` (no sockets); the wire codes are checked
through a real server. A "crash" is a copy of the data directory taken while the broker
runs (what ``kill -9`` leaves with the default ``group`` flush policy: every acknowledged
batch is fsynced, nothing is closed cleanly).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from logd.broker import Broker, ProduceTarget
from logd.storage import LogConfig, PartitionLog
from logd.storage.files import FileSystem
from logd.storage.handles import HandleCache
from logd.broker.producer_state import (
    BATCHES_PER_PRODUCER, SEQUENCE_MODULUS, SNAPSHOT_FILE, BatchMetadata, InvalidProducerEpochError,
    OutOfOrderSequenceError, ProducerEntry, ProducerStateManager, has_producer_ids, load_producer_state,
    parse_snapshot,
)
from logd_sdk import codec
from logd_sdk.protocol import common_pb2, log_pb2

from .helpers import RPC_TIMEOUT_S, decode_values

TOPIC = "t"


def batch(producer_id: int, sequence: int, count: int = 2, *, epoch: int = 0, tag: bytes = b"") -> bytes:
    """One batch of ``count`` records, values ``<tag><producer>-<sequence + i>``."""
    values = [tag + b"%d-%d" % (producer_id, (sequence + i) % SEQUENCE_MODULUS) for i in range(count)]
    return codec.encode_batch([(1_700_000_000_000, None, value, None) for value in values],
                              producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence)


class Harness:
    """A broker on a data directory, with produce/read helpers and restarts."""

    def __init__(self, data_dir: Path, **options) -> None:
        self.data_dir = data_dir
        self.options = options
        self.broker = Broker(data_dir, **options).open()

    def create(self, **config: str) -> None:
        self.broker.create_topic(TOPIC, 1, config)

    def produce(self, data: bytes):
        (result,) = self.broker.produce([ProduceTarget(TOPIC, 0, data)])
        return result

    def offset_of(self, data: bytes) -> int:
        result = self.produce(data)
        assert result.error is None, result.error
        return result.base_offset

    def error_of(self, data: bytes) -> Exception:
        result = self.produce(data)
        assert result.error is not None, f"appended at {result.base_offset}"
        return result.error

    @property
    def partition(self):
        return self.broker.topics.require(TOPIC).partitions[0]

    @property
    def end(self) -> int:
        return self.partition.log.log_end_offset

    def state(self) -> ProducerStateManager:
        return self.partition.producer_state(lambda log: pytest.fail("the producer state was not loaded"))

    def values(self) -> list[tuple[int, bytes]]:
        log = self.partition.log
        return decode_values(log.read(log.log_start_offset, 64 << 20)) if log.high_watermark > log.log_start_offset else []

    def restart(self) -> None:
        self.broker.close()
        self.broker = Broker(self.data_dir, **self.options).open()

    def crash_copy(self, target: Path) -> "Harness":
        """A broker on a copy of the running broker's data directory (a kill -9 image)."""
        shutil.copytree(self.data_dir, target)
        return Harness(target, **self.options)

    def close(self) -> None:
        self.broker.close()


@pytest.fixture
def harness(tmp_path):
    harness = Harness(tmp_path / "data")
    harness.create()
    yield harness
    harness.close()


# -- the checks ---------------------------------------------------------------------------

def test_a_retried_batch_gets_its_original_offsets_and_is_not_written_again(harness):
    """Retrying any of a producer's last batches answers the original offsets; the log does not grow."""
    offsets = [harness.offset_of(batch(1, 2 * i)) for i in range(3)]
    other = harness.offset_of(batch(2, 0, 3))  # another producer in between
    assert offsets == [0, 2, 4] and other == 6
    end = harness.end
    for i in (2, 0, 1):
        assert harness.offset_of(batch(1, 2 * i)) == offsets[i]
    assert harness.offset_of(batch(2, 0, 3)) == other
    assert harness.end == end
    assert harness.offset_of(batch(1, 6)) == end  # the numbering goes on after the retries
    assert [v for _, v in harness.values()].count(b"1-0") == 1


def test_duplicates_are_recognised_among_the_last_five_batches_only(harness):
    """The sixth-newest batch is no longer known: its retry is a sequence error, not a duplicate."""
    offsets = [harness.offset_of(batch(1, i, 1)) for i in range(BATCHES_PER_PRODUCER + 1)]
    for i in range(1, BATCHES_PER_PRODUCER + 1):
        assert harness.offset_of(batch(1, i, 1)) == offsets[i]
    assert isinstance(harness.error_of(batch(1, 0, 1)), OutOfOrderSequenceError)


def test_a_sequence_gap_is_refused_and_nothing_is_written(harness):
    """A batch that skips sequences is OUT_OF_ORDER_SEQUENCE; the log and state stay as they were."""
    harness.offset_of(batch(1, 0, 3))
    end = harness.end
    error = harness.error_of(batch(1, 4))
    assert isinstance(error, OutOfOrderSequenceError) and "expected sequence 3, got 4" in str(error)
    assert harness.end == end
    assert harness.offset_of(batch(1, 3)) == end


def test_epochs_fence_older_sessions(harness):
    """A newer epoch must start at sequence 0 and fences batches of older epochs."""
    harness.offset_of(batch(1, 0, epoch=0))
    assert isinstance(harness.error_of(batch(1, 5, epoch=1)), OutOfOrderSequenceError)
    new = harness.offset_of(batch(1, 0, epoch=1))
    assert isinstance(harness.error_of(batch(1, 2, epoch=0)), InvalidProducerEpochError)
    assert isinstance(harness.error_of(batch(1, 0, epoch=0)), InvalidProducerEpochError)  # even its old batch
    assert harness.offset_of(batch(1, 0, epoch=1)) == new


def test_an_unknown_producer_is_accepted_at_any_sequence(harness):
    """KIP-360: a producer whose state is gone (expired, removed) may go on where it was."""
    assert harness.offset_of(batch(9, 1234)) == 0
    assert harness.offset_of(batch(9, 1236)) == 2
    assert isinstance(harness.error_of(batch(9, 1239)), OutOfOrderSequenceError)


def test_sequences_wrap_at_two_to_the_31(harness):
    """A batch may straddle 2^31 - 1 -> 0; the next one starts after the wrap; retries still match."""
    top = SEQUENCE_MODULUS - 2
    first = harness.offset_of(batch(1, top, 4))  # sequences 2^31-2, 2^31-1, 0, 1
    second = harness.offset_of(batch(1, 2, 2))
    assert isinstance(harness.error_of(batch(1, 5, 1)), OutOfOrderSequenceError)
    assert (harness.offset_of(batch(1, top, 4)), harness.offset_of(batch(1, 2, 2))) == (first, second)


def test_a_request_of_several_batches(harness):
    """Batches of one request must follow each other; a request of duplicates answers the
    first original offset; duplicates and new batches may not be mixed."""
    assert harness.offset_of(batch(1, 0) + batch(1, 2) + batch(2, 0)) == 0
    assert harness.offset_of(batch(1, 0) + batch(1, 2) + batch(2, 0)) == 0
    assert harness.offset_of(batch(1, 2) + batch(2, 0)) == 2
    end = harness.end
    assert isinstance(harness.error_of(batch(1, 4) + batch(1, 7)), OutOfOrderSequenceError)
    error = harness.error_of(batch(1, 2) + batch(1, 4))
    assert isinstance(error, OutOfOrderSequenceError) and "mixes" in str(error)
    assert isinstance(harness.error_of(batch(1, 0) + batch(2, 0)), OutOfOrderSequenceError)  # not written together
    assert harness.end == end


def test_batches_without_a_producer_id_are_never_deduplicated(harness):
    """Producer id -1 (idempotence off): every copy is written, and no state is loaded for it."""
    plain = codec.encode_batch([(1, None, b"x", None)])
    assert not has_producer_ids(plain) and has_producer_ids(plain + batch(1, 0))
    assert [harness.offset_of(plain) for _ in range(3)] == [0, 1, 2]
    assert harness.partition._producer_state is None


def test_an_idempotent_batch_needs_an_epoch_and_a_sequence(harness):
    error = harness.error_of(batch(1, 0, epoch=-1))
    assert "needs both >= 0" in str(error)


def test_concurrent_retries_of_one_batch_append_it_once(harness):
    """Threads racing the same batch (as retries on several connections would) get one copy."""
    threads_per_batch = 8
    for sequence in range(0, 40, 2):
        data = batch(1, sequence)
        start = threading.Barrier(threads_per_batch)
        results = []

        def send() -> None:
            start.wait()
            results.append(harness.produce(data))

        threads = [threading.Thread(target=send) for _ in range(threads_per_batch)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert [r.error for r in results] == [None] * threads_per_batch
        assert {r.base_offset for r in results} == {sequence}
    values = [v for _, v in harness.values()]
    assert len(values) == 40 and len(set(values)) == 40


# -- recovery -----------------------------------------------------------------------------

def test_state_is_restored_from_the_snapshot_after_a_clean_restart(harness):
    """Closing writes a snapshot at the log end; after a restart retries are still duplicates."""
    offsets = [harness.offset_of(batch(1, 2 * i)) for i in range(3)]
    end = harness.end
    harness.restart()
    _, entries = parse_snapshot((harness.data_dir / f"{TOPIC}-0" / SNAPSHOT_FILE).read_bytes())
    assert [(e.producer_id, [b.base_offset for b in e.batches]) for e in entries] == [(1, offsets)]
    assert harness.offset_of(batch(1, 4)) == offsets[2]
    state = harness.state()
    assert state.snapshot_offset == end and state.entry(1).last_seq == 5
    assert isinstance(harness.error_of(batch(1, 8)), OutOfOrderSequenceError)


def test_state_is_rebuilt_from_batch_headers_after_a_crash(harness, tmp_path):
    """Without a snapshot (kill -9 before any), the headers of the log rebuild the state:
    a batch retried after the restart gets its original offsets."""
    harness.offset_of(batch(2, 0, 5))
    offsets = [harness.offset_of(batch(1, 2 * i)) for i in range(4)]
    crashed = harness.crash_copy(tmp_path / "crashed")
    try:
        assert not (crashed.data_dir / f"{TOPIC}-0" / SNAPSHOT_FILE).exists()
        end = crashed.end
        assert crashed.offset_of(batch(1, 6)) == offsets[3]
        assert crashed.offset_of(batch(2, 0, 5)) == 0
        assert crashed.end == end
        assert crashed.offset_of(batch(1, 8)) == end
    finally:
        crashed.close()


def test_after_a_crash_the_tail_after_the_last_snapshot_is_replayed(tmp_path):
    """Rolls write snapshots; a crash image replays only what follows the last one, and the
    state is the same as the running broker's."""
    harness = Harness(tmp_path / "data")
    harness.create(**{"segment.bytes": "1024"})
    try:
        for i in range(60):
            harness.offset_of(batch(1 + i % 3, 2 * (i // 3)))
        live = {pid: list(harness.state().entry(pid).batches) for pid in (1, 2, 3)}
        crashed = harness.crash_copy(tmp_path / "crashed")
    finally:
        harness.close()
    try:
        _, entries = parse_snapshot((crashed.data_dir / f"{TOPIC}-0" / SNAPSHOT_FILE).read_bytes())
        assert entries, "a roll wrote a snapshot"
        crashed.offset_of(batch(1, 38))  # a duplicate: loads the state
        state = crashed.state()
        assert 0 < state.snapshot_offset < crashed.end
        assert {pid: list(state.entry(pid).batches) for pid in (1, 2, 3)} == live
    finally:
        crashed.close()


def test_a_corrupt_snapshot_is_ignored_and_the_log_replayed(harness):
    harness.offset_of(batch(1, 0))
    last = harness.offset_of(batch(1, 2))
    harness.broker.close()
    path = harness.data_dir / f"{TOPIC}-0" / SNAPSHOT_FILE
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        parse_snapshot(bytes(data))
    harness.broker = Broker(harness.data_dir).open()
    assert harness.offset_of(batch(1, 2)) == last
    assert harness.state().snapshot_offset == -1


def test_the_snapshot_keeps_producers_whose_batches_retention_deleted(tmp_path):
    """Retention may delete every batch of a producer: the snapshot still knows it, so its
    retry is a duplicate (answered with offsets below the log start). Without the snapshot
    the producer is unknown and the retry is written again: the documented limit."""
    harness = Harness(tmp_path / "data")
    harness.create(**{"segment.bytes": "1024"})
    try:
        last = [harness.offset_of(batch(1, 2 * i)) for i in range(5)][-1]
        for i in range(40):
            harness.offset_of(batch(2, 2 * i))
        log = harness.partition.log
        log.delete_records_before(log.segments()[1].base_offset + 1)
        assert log.log_start_offset > last and log.segments()[0].base_offset > last + 1
        harness.restart()
        assert harness.offset_of(batch(1, 8)) == last
        end = harness.end
        harness.broker.close()
        (harness.data_dir / f"{TOPIC}-0" / SNAPSHOT_FILE).unlink()
        harness.broker = Broker(harness.data_dir).open()
        assert harness.offset_of(batch(1, 8)) == end  # unknown producer: accepted, a second copy
    finally:
        harness.close()


def test_truncation_forgets_the_batches_cut_off(harness):
    """After ``truncate_to`` the state matches the shorter log: a retry of a cut batch is
    written again, a retry of a kept one is still a duplicate."""
    offsets = [harness.offset_of(batch(1, 2 * i)) for i in range(4)]
    harness.partition.log.truncate_to(offsets[2])
    assert harness.offset_of(batch(1, 2)) == offsets[1]
    assert harness.offset_of(batch(1, 4)) == offsets[2]  # written again, at the same offset
    harness.restart()
    assert harness.offset_of(batch(1, 4)) == offsets[2]


def test_idle_producers_expire(tmp_path):
    """A producer idle past producer_id_expiration_ms is forgotten (memory stays bounded)."""
    now = [1_700_000_000_000]
    harness = Harness(tmp_path / "data", clock_ms=lambda: now[0], producer_id_expiration_ms=60_000)
    harness.create()
    try:
        harness.offset_of(batch(1, 0))
        harness.offset_of(batch(2, 0))
        now[0] += 30_000
        harness.offset_of(batch(2, 2))
        now[0] += 11 * 60_000  # past the expiration of both, and past the check interval
        harness.offset_of(batch(3, 0))
        assert harness.state().producer_ids() == [3]
        harness.restart()  # the snapshot holds only what is not expired
        harness.offset_of(batch(3, 2))
        assert harness.state().producer_ids() == [3]
    finally:
        harness.close()


# -- the storage hooks ----------------------------------------------------------------------

def test_batch_headers_walks_every_segment_from_an_offset(tmp_path):
    """``PartitionLog.batch_headers`` yields the header of every batch holding an offset >=
    the one asked, across segments, from the batch that contains it."""
    harness = Harness(tmp_path / "data")
    harness.create(**{"segment.bytes": "1024"})
    try:
        for i in range(30):
            harness.offset_of(batch(i % 4, 3 * (i // 4), 3))
        log = harness.partition.log
        assert len(log.segments()) > 3
        headers = list(log.batch_headers(0))
        assert [h.base_offset for h in headers] == list(range(0, 90, 3))
        assert [(h.producer_id, h.base_sequence) for h in headers[:5]] == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 3)]
        assert [h.base_offset for h in log.batch_headers(40)] == list(range(39, 90, 3))
        assert list(log.batch_headers(90)) == []
    finally:
        harness.close()


# -- snapshots, as data ---------------------------------------------------------------------

entries_strategy = st.lists(st.tuples(
    st.integers(0, 2**63 - 1), st.integers(0, 2**15 - 1), st.integers(0, 2**62),
    st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.integers(0, 2**40),
                       st.integers(0, 2**40)), min_size=1, max_size=BATCHES_PER_PRODUCER)),
    max_size=20, unique_by=lambda entry: entry[0])


@given(entries_strategy)
@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_snapshots_round_trip(tmp_path, raw):
    """What ``write_snapshot`` writes, ``parse_snapshot`` reads back, and any cut or flipped byte is refused."""
    state = ProducerStateManager(tmp_path)
    for producer_id, epoch, last_append_ms, batches in raw:
        entry = state._producers[producer_id] = ProducerEntry(producer_id, epoch, last_append_ms)
        entry.batches.extend(BatchMetadata(*b) for b in batches)
    state.write_snapshot(2**41)
    data = (tmp_path / SNAPSHOT_FILE).read_bytes()
    offset, entries = parse_snapshot(data)
    assert offset == 2**41
    assert [(e.producer_id, e.epoch, e.last_append_ms, list(e.batches)) for e in entries] == \
        [(pid, epoch, ms, [BatchMetadata(*b) for b in batches]) for pid, epoch, ms, batches in raw]
    for bad in (data[:-1], data[:10], data[:5] + bytes([data[5] ^ 1]) + data[6:]):
        with pytest.raises(ValueError):
            parse_snapshot(bad)


# -- a model of producers, retries and restarts ---------------------------------------------

step = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 3), st.integers(1, 4)),
    st.tuples(st.just("retry"), st.integers(1, 3), st.integers(0, BATCHES_PER_PRODUCER - 1)),
    st.tuples(st.just("restart"), st.booleans(), st.just(0)),
)


@given(st.lists(step, min_size=1, max_size=25))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_history_of_sends_retries_and_restarts_matches_the_model(tmp_path_factory, steps):
    """Against a list model: a new batch is appended at the log end, a retry of one of the
    last five is answered with its original offset, across clean restarts and restarts
    without a snapshot, and the log holds each batch exactly once."""
    harness = Harness(tmp_path_factory.mktemp("model") / "data", flush_policy="never")
    harness.create(**{"segment.bytes": "2048"})
    sent: dict[int, list[tuple[bytes, int]]] = {1: [], 2: [], 3: []}  # producer -> (batch, offset)
    next_sequence = {1: 0, 2: 0, 3: 0}
    end = 0
    try:
        for kind, producer, arg in steps:
            if kind == "send":
                data = batch(producer, next_sequence[producer], arg)
                assert harness.offset_of(data) == end
                sent[producer].append((data, end))
                next_sequence[producer] += arg
                end += arg
            elif kind == "retry" and sent[producer]:
                data, offset = sent[producer][-1 - min(arg, len(sent[producer]) - 1)]
                assert harness.offset_of(data) == offset
            elif kind == "restart":
                harness.restart()
                if arg:  # as if the broker died before writing any snapshot
                    harness.broker.close()
                    (harness.data_dir / f"{TOPIC}-0" / SNAPSHOT_FILE).unlink(missing_ok=True)
                    harness.broker = Broker(harness.data_dir, **harness.options).open()
        assert harness.end == end
        values = [v for _, v in harness.values()]
        assert len(values) == len(set(values)) == end
    finally:
        harness.close()


# -- on the wire ----------------------------------------------------------------------------

def produce_raw(client, data: bytes) -> log_pb2.ProduceResponse.PartitionResult:
    return client.produce(TOPIC, 0, data)


def test_wire_codes_of_the_sequence_errors(client):
    """Gaps and fencing come back as per-partition OUT_OF_ORDER_SEQUENCE and INVALID_PRODUCER_EPOCH."""
    client.create(TOPIC, 1)
    producer_id = client.log.InitProducerId(log_pb2.InitProducerIdRequest(), timeout=RPC_TIMEOUT_S).producer_id
    assert produce_raw(client, batch(producer_id, 0, epoch=1)).base_offset == 0
    assert produce_raw(client, batch(producer_id, 0, epoch=1)).base_offset == 0
    gap = produce_raw(client, batch(producer_id, 3, epoch=1))
    assert gap.error.code == common_pb2.OUT_OF_ORDER_SEQUENCE and "expected sequence 2" in gap.error.message
    fenced = produce_raw(client, batch(producer_id, 2, epoch=0))
    assert fenced.error.code == common_pb2.INVALID_PRODUCER_EPOCH
    fetched = client.fetch(TOPIC, 0, 0)
    assert [offset for offset, _ in decode_values(fetched.batches)] == [0, 1]


def test_server_error_table_has_the_sequence_errors():
    from logd.server.errors import classify
    assert classify(OutOfOrderSequenceError("x"))[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_ORDER_SEQUENCE")
    assert classify(InvalidProducerEpochError("x"))[:2] == (grpc.StatusCode.FAILED_PRECONDITION,
                                                            "INVALID_PRODUCER_EPOCH")


class _StallingFsyncs(FileSystem):
    """Holds every fsync while ``release`` is clear; ``stalled`` is set once one waits."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.stalled = threading.Event()

    def fsync(self, fd: int) -> None:
        if not self.release.is_set():
            self.stalled.set()
            self.release.wait(RPC_TIMEOUT_S)
        super().fsync(fd)


@pytest.mark.parametrize("policy", ["group", "always"])
def test_a_retry_answered_from_the_producer_state_waits_until_the_original_is_durable(tmp_path, policy):
    """A many-partition request wrote a batch and waits for its fsync; the producer's retry
    of it alone is a duplicate, answered with the original offsets, but only once they
    are durable (with "always" it was answered at once: an ack for data not on disk)."""
    fs = _StallingFsyncs()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(flush_policy=policy), fs=fs, handle_cache=HandleCache(fs=fs))
    load_producer_state(log, fs=fs)
    original = batch(7, 0)
    fs.release.clear()
    info = log.append_unflushed(original)
    waiter = threading.Thread(target=log.wait_durable, args=(info.last_offset + 1,))
    waiter.start()
    assert fs.stalled.wait(RPC_TIMEOUT_S)
    answered: dict = {}

    def retry() -> None:
        answered["info"] = log.append(original)
        answered["high_watermark"] = log.high_watermark

    retrying = threading.Thread(target=retry)
    retrying.start()
    deadline = time.monotonic() + RPC_TIMEOUT_S
    while "info" not in answered and not log._changed._waiters:  # answered, or waiting for the fsync
        assert time.monotonic() < deadline
        time.sleep(0.005)  # polling interval
    fs.release.set()
    retrying.join(RPC_TIMEOUT_S)
    waiter.join(RPC_TIMEOUT_S)
    assert (answered["info"].base_offset, answered["info"].last_offset) == (info.base_offset, info.last_offset)
    assert answered["high_watermark"] > info.last_offset  # answered only once durable
    log.close()


def keyed(key: bytes, value: bytes | None, **producer: int) -> bytes:
    """One keyed record (a tombstone with value None); ``producer``: producer_id, epoch, sequence."""
    return codec.encode_batch([(1_700_000_000_000, key, value, None)], **producer)


def compacted_harness(tmp_path) -> Harness:
    harness = Harness(tmp_path / "data")
    harness.create(**{"cleanup.policy": "compact"})
    return harness


def eager_policy(delete_retention_ms: int):
    from logd.storage import CompactionPolicy

    return CompactionPolicy(min_compaction_lag_ms=0, delete_retention_ms=delete_retention_ms,
                            min_cleanable_dirty_ratio=0.0)


def roll_then_append(harness: Harness, key: bytes, value: bytes) -> PartitionLog:
    """Roll the partition's log, then append one record: what came before is cleanable."""
    log = harness.partition.log
    log.roll()
    harness.offset_of(keyed(key, value))
    return log


def test_compaction_keeps_each_producers_newest_batch_emptied_and_revives_no_key(tmp_path):
    """A producer's newest batch whose records later versions all superseded used to be
    dropped whole: producer state rebuilt from the headers (no usable snapshot) then
    expected an older sequence and refused the producer's next batch as out of order.
    It stays, with no record: keeping its superseded record instead brought a deleted
    key back once the key's tombstone had gone."""
    from logd.storage import CleanerConfig, LogCleaner

    harness = compacted_harness(tmp_path)
    assert harness.produce(keyed(b"A", b"a", producer_id=7, producer_epoch=0, base_sequence=0)).error is None
    newest = harness.offset_of(keyed(b"B", b"b", producer_id=7, producer_epoch=0, base_sequence=1))
    harness.offset_of(keyed(b"B", None))  # another writer deletes the producer's newest record's key
    harness.offset_of(keyed(b"X", b"x"))
    log = roll_then_append(harness, b"C", b"c")
    cleaner = LogCleaner(CleanerConfig(duty_cycle=1.0))
    policy = eager_policy(delete_retention_ms=1000)
    assert cleaner.clean(log, policy, 1_700_000_001_000).records_removed == 1  # b; the tombstone is recent
    assert cleaner.clean(log, policy, 1_700_000_100_000).tombstones_removed == 1  # past delete.retention.ms
    headers = {h.base_offset: h for h in log.batch_headers(0)}
    assert (headers[newest].producer_id, headers[newest].base_sequence, headers[newest].records_count) == (7, 1, 0)
    assert [value for _, value in harness.values()] == [b"a", b"x", b"c"]  # no B: neither b nor its tombstone
    harness.broker.close()
    (harness.data_dir / f"{TOPIC}-0" / SNAPSHOT_FILE).unlink()  # rebuilt from the headers alone
    harness.broker = Broker(harness.data_dir).open()
    try:
        assert harness.produce(keyed(b"D", b"d", producer_id=7, producer_epoch=0, base_sequence=2)).error is None
        assert [value for _, value in harness.values()] == [b"a", b"x", b"c", b"d"]
    finally:
        harness.close()


def test_an_emptied_batch_goes_once_its_producer_has_written_newer_ones(tmp_path):
    """A batch compaction emptied and kept as its producer's newest went on being copied,
    empty, by every later pass (nothing in it left to remove), after the producer had
    written newer batches: one dead header per such batch, forever."""
    from logd.storage import CleanerConfig, LogCleaner

    harness = compacted_harness(tmp_path)
    emptied = harness.offset_of(keyed(b"A", b"a", producer_id=7, producer_epoch=0, base_sequence=0))
    harness.offset_of(keyed(b"A", b"a2"))
    log = roll_then_append(harness, b"Z", b"z")
    cleaner = LogCleaner(CleanerConfig(duty_cycle=1.0))
    policy = eager_policy(delete_retention_ms=86_400_000)
    cleaner.clean(log, policy, 1_700_000_001_000)
    assert emptied in {h.base_offset: h for h in log.batch_headers(0) if h.records_count == 0}
    harness.offset_of(keyed(b"B", b"b", producer_id=7, producer_epoch=0, base_sequence=1))  # its newest now
    roll_then_append(harness, b"Y", b"y")
    cleaner.clean(log, policy, 1_700_000_002_000)
    try:
        assert emptied not in [h.base_offset for h in log.batch_headers(0)]
        assert [value for _, value in harness.values()] == [b"a2", b"z", b"b", b"y"]
    finally:
        harness.close()
