"""Topic metadata on disk: one JSON file per topic, ``<data-dir>/topics/<name>.json``.

Format (UTF-8 JSON, written with ``files.write_atomically``)::

    {"version": 1, "name": "orders", "topic_id": "<uuid4 hex>", "partitions": 3,
     "config": {"retention.ms": "86400000"}, "created_ms": 1700000000000}

``config`` holds only the keys set for the topic (canonical strings, see
``broker.config``); the defaults fill in the rest when the topic is loaded. The file is
the commit point of a topic: it is written after the partition directories exist
(create, create_partitions) and removed before they go (delete), so that at start-up any
partition directory that no file accounts for is a leftover of an interrupted operation.

Not thread-safe: the broker calls it under its metadata lock.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .files import TMP_SUFFIX, remove_durably, write_atomically, fsync_dir
from .names import topic_name_problem

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    """What is persisted about a topic (its data lives in the partition directories)."""

    name: str
    topic_id: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0

    def to_json(self) -> bytes:
        return json.dumps({
            "version": FORMAT_VERSION, "name": self.name, "topic_id": self.topic_id,
            "partitions": self.partitions, "config": self.config, "created_ms": self.created_ms,
        }, indent=1, sort_keys=True).encode()


class MetadataError(Exception):
    """A metadata file is unreadable; the message names it and says what to do."""


class MetadataStore:
    """Reads and writes the per-topic metadata files under ``<data-dir>/topics/``."""

    def __init__(self, data_dir: Path) -> None:
        self._directory = data_dir / "topics"

    def load_all(self) -> list[TopicMetadata]:
        """Every topic's metadata; removes temporary files left by a crash."""
        created = not self._directory.exists()
        self._directory.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self._directory.parent)
        topics = []
        for path in sorted(self._directory.iterdir()):
            if path.name.endswith(TMP_SUFFIX):
                log.info("removing %s, left over by an interrupted metadata write", path)
                path.unlink()
            elif path.suffix == ".json":
                topics.append(self._load(path))
            else:
                log.warning("ignoring unexpected file %s", path)
        return topics

    def write(self, metadata: TopicMetadata) -> None:
        write_atomically(self._path(metadata.name), metadata.to_json())

    def remove(self, name: str) -> None:
        remove_durably(self._path(name))

    def _path(self, name: str) -> Path:
        return self._directory / f"{name}.json"

    def _load(self, path: Path) -> TopicMetadata:
        try:
            data = json.loads(path.read_bytes())
            metadata = TopicMetadata(
                name=data["name"], topic_id=data["topic_id"], partitions=int(data["partitions"]),
                config=dict(data["config"]), created_ms=int(data.get("created_ms", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MetadataError(
                f"topic metadata file {path} is unreadable ({exc}); restore it from a backup "
                f"or remove it and the topic's partition directories to drop the topic"
            ) from None
        if data.get("version") != FORMAT_VERSION:
            raise MetadataError(f"topic metadata file {path} has unknown format version {data.get('version')!r}")
        if f"{metadata.name}.json" != path.name or topic_name_problem(metadata.name) or metadata.partitions < 1:
            raise MetadataError(f"topic metadata file {path} does not describe a valid topic")
        return metadata
