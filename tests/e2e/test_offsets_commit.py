"""Committed offsets with manual assignment: commit, committed, resume, and the group admin."""

import json
import time

import pytest

from logd_sdk import Admin, Consumer, InvalidGroupIdError, Producer, TopicPartition
from e2e_cli import ok, run


def test_commit_resume_describe_reset_delete(broker, topic):
    """A committed position is where the next consumer of the group starts; admin sees lag."""
    group = "g-" + topic
    tp = TopicPartition(topic, 0)
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
        with Producer(broker.address) as producer:
            for i in range(10):
                producer.send(topic, value=b"%d" % i)
        with Consumer(broker.address, group_id=group, auto_offset_reset="earliest",
                      enable_auto_commit=False) as consumer:
            consumer.assign([tp])
            assert consumer.committed(tp) is None
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 6 and time.monotonic() < deadline:
                got.extend(consumer.poll(timeout_ms=200, max_records=6 - len(got)))
            consumer.commit()
            assert consumer.committed(tp) == 6
        with Consumer(broker.address, group_id=group) as consumer:
            consumer.assign([tp])
            assert consumer.position(tp) == 6
        assert group in admin.list_groups()
        description = admin.describe_group(group)
        assert description.offsets[tp].committed_offset == 6 and description.offsets[tp].lag == 4
        described = json.loads(ok(run(broker, "group", "describe", group, "-o", "json")))
        assert described["offsets"] == [{"topic": topic, "partition": 0, "committed_offset": 6,
                                         "log_end_offset": 10, "lag": 4}]
        ok(run(broker, "group", "reset-offsets", group, "--topic", topic, "--to-offset", "3"))  # dry run
        assert admin.describe_group(group).offsets[tp].committed_offset == 6
        ok(run(broker, "group", "reset-offsets", group, "--topic", topic, "--to-offset", "3", "--execute"))
        assert admin.describe_group(group).offsets[tp].committed_offset == 3
        ok(run(broker, "group", "delete", group))
        assert group not in admin.list_groups()


def test_commit_needs_a_group_id(broker):
    with Consumer(broker.address) as consumer:
        with pytest.raises(InvalidGroupIdError):
            consumer.commit({TopicPartition("t", 0): 1})
        with pytest.raises(InvalidGroupIdError):
            consumer.committed(TopicPartition("t", 0))
