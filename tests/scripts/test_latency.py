"""scripts/latency.py: every record sent is matched to its arrival, with the consumer in
a thread beside the producer or in a process of its own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from logd_sdk import Admin

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import latency  # noqa: E402

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("consumer_process", [False, True], ids=["thread", "process"])
def test_every_record_is_timed_from_send_to_poll(broker, consumer_process, tmp_path):
    topic = f"latency-{'process' if consumer_process else 'thread'}"
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=2)
    dump = tmp_path / "dump.txt"
    figures = latency.run(broker.address, topic, 2, rate=400.0, seconds=1.0, linger_ms=1.0, warmup_s=0.25,
                          dump=str(dump), consumer_process=consumer_process)
    assert figures["records"] == 400 and figures["measured"] == 300
    assert figures["consumer_process"] is consumer_process
    rows = [line.split() for line in dump.read_text().splitlines()]
    assert len(rows) == 300
    # Both clocks are perf_counter (CLOCK_MONOTONIC, shared by the processes): a record
    # arrives after it was sent and is acknowledged after it was sent.
    assert all(float(e2e) > 0 and float(ack) > 0 for _, e2e, ack in rows)
    assert 0 < figures["e2e_ms"]["p50"] <= figures["e2e_ms"]["max"]
