"""Topic metadata on disk: one JSON file per topic, ``<data-dir>/topics/<name>.json``.

Format (UTF-8 JSON, written with ``files.write_atomically``)::

    {"version": 1, "name": "orders", "topic_id": "<uuid4 hex>", "partitions": 3,
     "config": {"retention.ms": "86400000"}, "created_ms": 1700000000000}

``config`` holds only the keys set for the topic (canonical strings, see
``broker.config``); the defaults fill in the rest when the topic is loaded. The file is
the commit point of a topic: it is written after the partition directories exist
(create, create_partitions) and removed before they go (delete), so that at start-up any
partition directory that no file accounts for is a leftover of an interrupted operation.
A deletion first writes ``topics/.<topic_id>.deleting`` (the same JSON) and removes it
last, so that start-up can finish an interrupted deletion (see ``TopicManager.load``).

Not thread-safe: the broker calls it under its metadata lock.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from logd.faults import crash_point

from .files import TMP_SUFFIX, fsync_dir, remove_durably, write_atomically
from .names import topic_name_problem

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: ``topics/.<topic_id>.deleting``: a topic deletion in progress (see ``MetadataStore``).
DELETING_SUFFIX = ".deleting"


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

    def load_all(self, remove_leftovers: bool = True) -> list[TopicMetadata]:
        """Every topic's metadata; removes temporary files left by a crash (unless
        ``remove_leftovers`` is False: a read-only data directory)."""
        if not self._directory.exists():
            self._directory.mkdir(parents=True)
            fsync_dir(self._directory.parent)
        topics = []
        for path in sorted(self._directory.iterdir()):
            if path.name.endswith(TMP_SUFFIX):
                if remove_leftovers:
                    log.info("removing %s, left over by an interrupted metadata write", path)
                    path.unlink()
            elif path.name.endswith(DELETING_SUFFIX):
                continue  # see deletion_markers()
            elif path.suffix == ".json":
                topics.append(self._load(path))
            else:
                log.warning("ignoring unexpected file %s", path)
        return topics

    def write(self, metadata: TopicMetadata) -> None:
        """Replace the topic's file atomically (``files.write_atomically``'s steps, with
        the crash points ``metadata.tmp_written`` and ``metadata.renamed`` between them)."""
        path = self._path(metadata.name)
        tmp = path.with_name(f".{uuid.uuid4().hex}{TMP_SUFFIX}")
        with open(tmp, "wb") as file:
            file.write(metadata.to_json())
            file.flush()
            os.fsync(file.fileno())
        crash_point("metadata.tmp_written")
        os.replace(tmp, path)
        crash_point("metadata.renamed")
        fsync_dir(self._directory)

    def remove(self, name: str) -> None:
        remove_durably(self._path(name))

    # -- deletion markers ---------------------------------------------------------------
    #
    # A topic deletion writes ``.<topic_id>.deleting`` (the topic's metadata) before it
    # removes the topic's file, and removes the marker once the partition directories are
    # gone. A start-up that finds a marker knows which partition directories belonged to
    # a deleted topic (and removes them) instead of setting them aside as strays forever.

    def write_deletion_marker(self, metadata: TopicMetadata) -> None:
        write_atomically(self._marker_path(metadata), metadata.to_json())

    def remove_deletion_marker(self, metadata: TopicMetadata) -> None:
        remove_durably(self._marker_path(metadata))

    def deletion_markers(self) -> list[TopicMetadata]:
        """The metadata of every topic whose deletion a crash interrupted."""
        if not self._directory.exists():
            return []
        return [self._load(path, marker=True) for path in sorted(self._directory.iterdir())
                if path.name.endswith(DELETING_SUFFIX)]

    def _marker_path(self, metadata: TopicMetadata) -> Path:
        # The topic id, not the name: a 249-character name would not fit 255 bytes.
        return self._directory / f".{metadata.topic_id}{DELETING_SUFFIX}"

    def _path(self, name: str) -> Path:
        return self._directory / f"{name}.json"

    def _load(self, path: Path, marker: bool = False) -> TopicMetadata:
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
        expected = self._marker_path(metadata).name if marker else f"{metadata.name}.json"
        if expected != path.name or topic_name_problem(metadata.name) or metadata.partitions < 1:
            raise MetadataError(f"topic metadata file {path} does not describe a valid topic")
        return metadata
