"""Helpers for the ops tests: serve settings, a broker with a metrics endpoint, scraping, raw group calls."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Callable

import grpc
from prometheus_client.parser import text_string_to_metric_families

from logd.server import BrokerServer
from logd.server.config import SETTINGS
from logd_sdk.protocol import groups_pb2, groups_pb2_grpc

RPC_TIMEOUT_S = 10
#: ``effective_config``'s flags when no flag is given.
NO_FLAGS = {key: None for key in SETTINGS}

Samples = dict[tuple[str, frozenset], float]


class FakeClock:
    """A wall clock in ms that moves only when told to."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def write_config(tmp_path: Path, text: str) -> Path:
    """``text`` as the config file ``tmp_path/logd.toml``; returns its path."""
    path = tmp_path / "logd.toml"
    path.write_text(text)
    return path


def start_metrics_server(data_dir: Path, **kwargs) -> BrokerServer:
    return BrokerServer(data_dir, "127.0.0.1:0", grace_s=2.0, metrics_listen="127.0.0.1:0", **kwargs).start()


def scrape_text(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=RPC_TIMEOUT_S) as response:
        assert response.status == 200
        return response.read().decode()


def scrape(address: str) -> Samples:
    """Every sample of the endpoint: (sample name, frozenset of label items) -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(scrape_text(address)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels) -> float | None:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def groups_stub(channel: grpc.Channel) -> groups_pb2_grpc.GroupServiceStub:
    return groups_pb2_grpc.GroupServiceStub(channel)


def commit(stub, group: str, topic: str, partition: int, offset: int) -> None:
    """Commit as a consumer that assigned its partitions itself (member "", epoch -1)."""
    stub.CommitOffsets(groups_pb2.CommitOffsetsRequest(
        group_id=group, member_id="", member_epoch=-1,
        offsets=[groups_pb2.CommitOffsetsRequest.Offset(topic=topic, partition=partition, offset=offset)]),
        timeout=RPC_TIMEOUT_S)


def describe_group(stub, group: str):
    return stub.DescribeGroup(groups_pb2.DescribeGroupRequest(group_id=group), timeout=RPC_TIMEOUT_S)


def join(stub, group: str, topics: list[str]):
    return stub.Heartbeat(groups_pb2.HeartbeatRequest(
        group_id=group, member_id="", member_epoch=0, subscribed_topics=topics, session_timeout_ms=30000),
        timeout=RPC_TIMEOUT_S)

