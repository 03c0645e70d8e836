"""What a data directory holds, read through a broker opened in this process.

``recover(data_dir)`` opens a :class:`logd.broker.Broker` on the directory (running the
same recovery as ``logd serve``), reads every topic's config and every partition's
records from its log start offset to its high watermark (each batch CRC-checked and
decoded), closes it and returns a :class:`DataState` value: two recoveries of the same
crash must give equal states.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from logd.broker import Broker
from logd_sdk import codec


@dataclass(frozen=True)
class PartitionState:
    log_start_offset: int
    high_watermark: int
    records: tuple[tuple[int, bytes | None, bytes | None], ...]  # (offset, key, value)

    def value_at(self, offset: int) -> bytes | None:
        for record_offset, _, value in self.records:
            if record_offset == offset:
                return value
        raise KeyError(offset)

    @property
    def offsets(self) -> list[int]:
        return [offset for offset, _, _ in self.records]


@dataclass(frozen=True)
class TopicState:
    config: tuple[tuple[str, str], ...]
    partitions: tuple[PartitionState, ...]

    @property
    def config_dict(self) -> dict[str, str]:
        return dict(self.config)


@dataclass(frozen=True)
class DataState:
    topics: dict[str, TopicState]
    leftovers: tuple[str, ...]  # names of set-aside directories (-stray) in the data dir


def read_partition(partition_log) -> PartitionState:
    """Every record from the log start offset to the high watermark, CRCs verified."""
    start, end = partition_log.log_start_offset, partition_log.high_watermark
    records = []
    offset = start
    while offset < end:
        data = partition_log.read(offset, 1 << 20)
        assert data, f"empty read at {offset} below the high watermark {end}"
        position = 0
        for position, header in codec.iter_batches(data):  # validates each batch (CRC)
            _, decoded = codec.decode_batch(data, position)
            for record in decoded:
                if offset <= record.offset < end:
                    records.append((record.offset, record.key, record.value))
            offset = max(offset, header.next_offset)
    return PartitionState(start, end, tuple(records))


def snapshot(broker: Broker) -> dict[str, TopicState]:
    topics = {}
    for name in broker.topics.names(include_internal=False):
        topic = broker.topics.get(name)
        topics[name] = TopicState(tuple(sorted(topic.metadata.config.items())),
                                  tuple(read_partition(p.log) for p in topic.partitions))
    return topics


def recover(data_dir: Path) -> DataState:
    """Open (recover), snapshot and close the broker of ``data_dir``."""
    broker = Broker(data_dir).open()
    try:
        topics = snapshot(broker)
    finally:
        broker.close()
    leftovers = tuple(sorted(p.name for p in data_dir.iterdir() if p.name.endswith("-stray")))
    return DataState(topics, leftovers)
