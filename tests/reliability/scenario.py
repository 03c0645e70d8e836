"""The crash-point scenario: drive a broker through every multi-step operation, with a model.

``drive(address, model, alive)`` runs, one RPC at a time with raw gRPC stubs (no client
retries, short deadlines), every operation that has crash points: topic creation
(partition logs open: checkpoints; metadata write), produce into small segments (rolls),
delete records (log start checkpoint, segment deletion), a config change (metadata
write), a topic deletion, and then waits for the broker's background task to enforce
retention (``retained``) and compact (``compacted``). It stops at the first RPC that
fails because the process died.

:class:`Model` records what was acknowledged and which operation was in flight when the
broker died; ``Model.verify(state)`` checks a recovered :class:`~state.DataState`:

- a topic whose creation or deletion was acknowledged is there or gone; one in flight
  is either (whole: every partition, its data intact) -- never a mix;
- every acknowledged record at or above the log start offset is at its offset with its
  value; in an uncompacted partition the offsets from the log start to the high
  watermark are contiguous; no value was invented (the one in-flight produce may or may
  not be there);
- a compacted partition keeps the latest acknowledged value of each key;
- log start offsets and configs are the old or the new value of an in-flight change;
- a topic deletion leaves no set-aside (``-stray``) directory behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import grpc

from logd_sdk import codec
from logd_sdk.protocol import topics_pb2

from server.helpers import connect_address

from .state import DataState

RPC_TIMEOUT_S = 3.0
SEGMENT_BYTES = 1024
RECORD_VALUE_BYTES = 90


class BrokerDied(Exception):
    """The RPC failed because the broker process is gone (the crash point fired)."""


@dataclass
class PartitionModel:
    acked: dict[int, tuple[bytes | None, bytes]] = field(default_factory=dict)  # offset -> (key, value)
    in_flight: set[bytes] = field(default_factory=set)  # values that may or may not be there
    start_options: set[int] = field(default_factory=lambda: {0})  # possible log start offsets
    start_free: bool = False  # retention may have moved the log start anywhere


@dataclass
class TopicModel:
    partitions: int
    config: dict[str, set[str]]  # key -> possible values
    exists: set[bool] = field(default_factory=lambda: {True})
    compacted: bool = False
    parts: list[PartitionModel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parts = [PartitionModel() for _ in range(self.partitions)]


class Model:
    def __init__(self) -> None:
        self.topics: dict[str, TopicModel] = {}
        self.in_flight: str = ""  # the operation the broker died in, for messages

    def verify(self, state: DataState) -> list[str]:
        problems: list[str] = []
        for name in state.topics:
            if name not in self.topics:
                problems.append(f"topic {name!r} exists but was never created")
        for name, model in self.topics.items():
            exists = name in state.topics
            if exists not in model.exists:
                problems.append(f"topic {name!r} exists={exists}, expected one of {model.exists}")
            if exists:
                problems.extend(self._verify_topic(name, model, state))
        if state.leftovers:
            problems.append(f"set-aside directories left behind: {list(state.leftovers)}")
        return problems

    @staticmethod
    def _verify_topic(name: str, model: TopicModel, state: DataState) -> list[str]:
        problems = []
        topic = state.topics[name]
        config = topic.config_dict
        for key, options in model.config.items():
            if config.get(key) not in options:
                problems.append(f"{name}: config {key}={config.get(key)!r}, expected one of {options}")
        if len(topic.partitions) != model.partitions:
            return problems + [f"{name}: {len(topic.partitions)} partitions, expected {model.partitions}"]
        for index, (part, got) in enumerate(zip(model.parts, topic.partitions)):
            where = f"{name}-{index}"
            if not part.start_free and got.log_start_offset not in part.start_options:
                problems.append(f"{where}: log start {got.log_start_offset}, expected one of {part.start_options}")
            offsets = got.offsets
            if offsets != sorted(set(offsets)):
                problems.append(f"{where}: offsets not strictly increasing")
            if not model.compacted and offsets != list(range(got.log_start_offset, got.high_watermark)):
                problems.append(f"{where}: offsets not contiguous from {got.log_start_offset} to "
                                f"{got.high_watermark}")
            present = {offset: (key, value) for offset, key, value in got.records}
            for offset, (key, value) in part.acked.items():
                if offset < got.log_start_offset:
                    continue
                if offset in present and present[offset] != (key, value):
                    problems.append(f"{where}@{offset}: holds {present[offset]!r}, acked {(key, value)!r}")
                elif offset not in present and not model.compacted:
                    problems.append(f"{where}@{offset}: acknowledged record {value!r} lost")
            acked_values = {value for _, value in part.acked.values()}
            for offset, (key, value) in present.items():
                if offset not in part.acked and value not in part.in_flight:
                    problems.append(f"{where}@{offset}: {value!r} was never acknowledged nor in flight")
                if offset not in part.acked and value in acked_values:
                    problems.append(f"{where}@{offset}: {value!r} duplicated")
            if model.compacted:
                problems.extend(_verify_compacted(where, part, present, got.log_start_offset))
        return problems


def _verify_compacted(where: str, part: PartitionModel, present: dict, log_start: int) -> list[str]:
    latest: dict[bytes | None, int] = {}
    for offset, (key, _) in sorted(part.acked.items()):
        latest[key] = offset
    return [f"{where}: latest value of key {key!r} (offset {offset}) lost"
            for key, offset in latest.items() if offset >= log_start and offset not in present]


class Driver:
    """Runs the operations against one broker, updating the model (see module docstring)."""

    def __init__(self, address: str, model: Model, alive: Callable[[], bool]) -> None:
        self.client = connect_address(address)
        self.model = model
        self.alive = alive

    def close(self) -> None:
        self.client.channel.close()

    def _call(self, what: str, call):
        self.model.in_flight = what
        try:
            result = call()
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN,
                              grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL) and self._died():
                raise BrokerDied(what) from None
            raise
        self.model.in_flight = ""
        return result

    def _died(self) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.01)  # polling the process state
        return False

    # -- operations -----------------------------------------------------------------------

    def create(self, name: str, partitions: int, **config: str) -> None:
        config = {key.replace("_", "."): value for key, value in config.items()}
        model = TopicModel(partitions, {key: {value} for key, value in config.items()},
                           exists={True, False}, compacted="compact" in config.get("cleanup.policy", ""))
        self.model.topics[name] = model
        request = topics_pb2.CreateTopicRequest(name=name, partitions=partitions, config=config)
        self._call(f"create {name}", lambda: self.client.topics.CreateTopic(request, timeout=RPC_TIMEOUT_S))
        model.exists = {True}

    def produce(self, name: str, partition: int, value: bytes, key: bytes | None = None) -> None:
        part = self.model.topics[name].parts[partition]
        part.in_flight.add(value)
        batch = codec.encode_batch([(int(time.time() * 1000), key, value, None)], codec=codec.CODEC_NONE)
        result = self._call(f"produce {name}-{partition}",
                            lambda: self.client.produce(name, partition, batch))
        assert not result.HasField("error") or result.error.code == 0, result
        part.in_flight.discard(value)
        part.acked[result.base_offset] = (key, value)

    def delete_records(self, name: str, partition: int, offset: int) -> None:
        part = self.model.topics[name].parts[partition]
        part.start_options.add(offset)
        request = topics_pb2.DeleteRecordsRequest(targets=[
            topics_pb2.DeleteRecordsRequest.Target(topic=name, partition=partition, offset=offset)])
        response = self._call(f"delete records {name}-{partition} < {offset}",
                              lambda: self.client.topics.DeleteRecords(request, timeout=RPC_TIMEOUT_S))
        assert response.results[0].log_start_offset == offset, response
        part.start_options = {offset}

    def alter(self, name: str, **config: str) -> None:
        model = self.model.topics[name]
        config = {key.replace("_", "."): value for key, value in config.items()}
        for key, value in config.items():
            model.config.setdefault(key, {None}).add(value)  # None: the key was not set before
        request = topics_pb2.AlterTopicConfigRequest(name=name, config=config)
        self._call(f"alter {name}", lambda: self.client.topics.AlterTopicConfig(request, timeout=RPC_TIMEOUT_S))
        for key, value in config.items():
            model.config[key] = {value}

    def delete_topic(self, name: str) -> None:
        model = self.model.topics[name]
        model.exists = {True, False}
        request = topics_pb2.DeleteTopicRequest(name=name)
        self._call(f"delete {name}", lambda: self.client.topics.DeleteTopic(request, timeout=RPC_TIMEOUT_S))
        model.exists = {False}

    def wait_for_death(self, timeout_s: float, what: str) -> None:
        self.model.in_flight = what
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise BrokerDied(what)
            time.sleep(0.02)  # polling the process state
        self.model.in_flight = ""


def value(tag: str, i: int) -> bytes:
    return f"{tag}-{i}-".encode().ljust(RECORD_VALUE_BYTES, b".")


def drive(driver: Driver, background_wait_s: float) -> None:
    """Every operation with crash points, in order (raises BrokerDied when it dies)."""
    tiny = {"segment_bytes": str(SEGMENT_BYTES)}
    driver.create("logs", 2, **tiny)
    driver.create("doomed", 2, **tiny)
    for i in range(30):
        driver.produce("logs", i % 2, value("logs", i))
    for i in range(12):
        driver.produce("doomed", i % 2, value("doomed", i))
    driver.delete_records("logs", 0, 6)
    driver.alter("logs", retention_ms="86400000")
    driver.delete_topic("doomed")
    # Background work of the broker's retention/compaction task (it checks often).
    driver.create("retained", 1, retention_bytes=str(2 * SEGMENT_BYTES), **tiny)
    driver.model.topics["retained"].parts[0].start_free = True
    driver.create("compacted", 1, cleanup_policy="compact", min_cleanable_dirty_ratio="0.01", **tiny)
    for i in range(40):
        driver.produce("retained", 0, value("retained", i))
        driver.produce("compacted", 0, value("compacted", i), key=b"key-%d" % (i % 4))
    driver.model.topics["retained"].parts[0].start_free = True
    driver.wait_for_death(background_wait_s, "retention and compaction in the background")
