"""The broker's background cleaner task (logd.broker.log_cleaner), in process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from logd.broker import Broker, ProduceTarget
from logd.broker.log_cleaner import LogCleanerTask
from logd_sdk import codec

pytestmark = pytest.mark.timeout(60)

COMPACT = {"cleanup.policy": "compact", "segment.bytes": "1024", "min.cleanable.dirty.ratio": "0.01"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fill(broker: Broker, topic: str) -> None:
    """60 records over 3 keys: several segments, mostly superseded versions."""
    for i in range(60):
        batch = codec.encode_batch([(now_ms(), b"k%d" % (i % 3), b"value-%03d" % i, None)])
        (result,) = broker.produce([ProduceTarget(topic, 0, batch)])
        assert result.error is None


def test_a_corrupt_log_stays_uncleanable_but_a_topic_created_again_under_its_name_is_cleaned(tmp_path: Path):
    """The mark used to be kept by directory: the new topic's log, in the same directory,
    was never compacted until a restart."""
    broker = Broker(tmp_path / "data").open()
    try:
        task = LogCleanerTask(broker.topics, clock_ms=now_ms)
        broker.create_topic("t", 1, COMPACT)
        fill(broker, "t")
        first = broker.topics.require("t").partitions[0].log.segments()[0].path
        with open(first, "r+b") as segment:  # a byte of the first batch's records: CRC mismatch
            segment.seek(70)
            byte = segment.read(1)[0]
            segment.seek(70)
            segment.write(bytes([byte ^ 0xFF]))
        task.run_once()
        assert task.stats.errors == 1 and task.stats.cleaner_runs == 0
        task.run_once()
        assert task.stats.errors == 1, "a corrupt log is not tried again at every check"

        broker.delete_topic("t")
        broker.create_topic("t", 1, COMPACT)
        fill(broker, "t")
        log = broker.topics.require("t").partitions[0].log
        size = log.size_bytes
        task.run_once()
        assert task.stats.cleaner_runs == 1 and log.size_bytes < size
    finally:
        broker.close()
