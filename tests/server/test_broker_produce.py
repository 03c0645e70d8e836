"""Broker.produce of many partitions in one call: the durability each flush policy promises,
with the partitions' syncs waited for in parallel (the flush pool)."""

from __future__ import annotations

import threading

import pytest

from logd.broker import ProduceTarget
from logd.broker.broker import Broker
from logd.storage import files

from .helpers import batch


@pytest.fixture
def syncs():
    """The fsyncs the engine makes meanwhile, by thread name."""
    made: list[str] = []
    previous = files.set_fsync_observer(lambda seconds: made.append(threading.current_thread().name))
    yield made
    files.set_fsync_observer(previous)


@pytest.mark.parametrize("policy, synced", [("group", True), ("always", True), ("never", False)])
def test_a_many_partition_produce_syncs_as_its_policy_says(tmp_path, syncs, policy, synced):
    broker = Broker(tmp_path / "data", flush_policy=policy).open()
    try:
        broker.create_topic("t", 4)
        syncs.clear()  # topic creation syncs directories
        results = broker.produce([ProduceTarget("t", p, batch(b"a", b"b")) for p in range(4)])
        assert [(r.error, r.base_offset) for r in results] == [(None, 0)] * 4
        assert len(syncs) >= 4 if synced else syncs == []
        assert all(broker.topics.get("t").partitions[p].log.high_watermark == 2 for p in range(4))
    finally:
        broker.close()


def test_each_written_partition_is_synced_and_failures_stay_per_partition(tmp_path, syncs):
    broker = Broker(tmp_path / "data").open()
    try:
        broker.create_topic("t", 3)
        syncs.clear()
        targets = [ProduceTarget("t", 0, batch(b"a")), ProduceTarget("t", 9, batch(b"b")),
                   ProduceTarget("t", 1, batch(b"c")), ProduceTarget("t", 2, batch(b"d"))]
        results = broker.produce(targets)
        assert [r.error is None for r in results] == [True, False, True, True]
        assert type(results[1].error).__name__ == "PartitionNotFoundError"
        assert len(syncs) == 3  # one per written partition: here or on the flush pool
    finally:
        broker.close()
