"""The topics of a data directory: their metadata, configs and partition logs.

Layout of the data directory::

    <data-dir>/topics/<topic>.json      the topic's metadata (see broker.metadata)
    <data-dir>/<topic>-<partition>/     one PartitionLog per partition (logd.storage)
    <data-dir>/<topic>-<p>.<uuid>-delete a deleted partition being removed
    <data-dir>/<topic>-<p>.<uuid>-stray  a partition directory no metadata accounts for,
                                         set aside (never deleted) for an operator to look at
                                         (unless it holds no record: an interrupted create's,
                                         removed at start-up)
    (``<topic>-<p>`` cut to 200 characters in the last two, to fit the 255-byte limit)

Operations and their commit points (a crash before it undoes the operation, after it
the operation stands; see ``load`` for the clean-up):

- create: open the partition logs (creating their directories), then write the metadata.
- create_partitions: open the new logs, then rewrite the metadata with the new count.
- alter: rewrite the metadata, then give the logs their new config.
- delete: write a deletion marker (``topics/.<topic_id>.deleting``), remove the metadata
  (the commit point), rename each partition directory to a ``-delete`` name (so the name
  is free at once), remove those directories, remove the marker. At start-up a marker
  whose topic has no metadata any more names the directories to remove (they are not
  set aside as strays); a marker whose topic still has its metadata is dropped.

Thread safety: admin operations hold ``_lock`` (one at a time); ``get`` is lock-free (a
dict read) and returns an immutable ``Topic``, replaced as a whole when it changes.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

from logd.faults import crash_point
from logd.storage import FileSystem, LogConfig, PartitionLog

from .config import TopicConfig, normalize_overrides
from .errors import InvalidConfigError, InvalidTopicError, TopicAlreadyExistsError, TopicNotFoundError
from .files import TMP_SUFFIX, fsync_dir
from .metadata import MetadataStore, TopicMetadata
from .names import is_internal, parse_partition_dir_name, partition_dir_name, topic_name_problem
from .partition import Partition

log = logging.getLogger(__name__)

#: Partitions per topic, at most: each open partition holds a few file descriptors.
MAX_PARTITIONS = 1024
DEFAULT_PARTITIONS = 1


@dataclass(frozen=True, slots=True)
class Topic:
    metadata: TopicMetadata
    config: TopicConfig
    partitions: tuple[Partition, ...]

    @property
    def name(self) -> str:
        return self.metadata.name


class TopicManager:
    """Creates, loads, changes and deletes topics in one data directory."""

    def __init__(self, data_dir: Path, log_config: Callable[[TopicConfig], LogConfig],
                 clock_ms: Callable[[], int] | None = None, defaults: TopicConfig | None = None) -> None:
        self._data_dir = data_dir
        self._defaults = defaults  # the broker-wide topic config defaults (None: built-in)
        self._log_config = log_config
        self._clock_ms = clock_ms
        self._store = MetadataStore(data_dir)
        self._topics: dict[str, Topic] = {}
        self._lock = threading.Lock()
        #: The storage's file-system seam for the partition logs (None: the real one); the
        #: reliability suite sets a fault-injecting one before ``load``.
        self.fs: FileSystem | None = None
        #: The data directory is on a read-only file system: load without clean-up and
        #: open the logs read-only (set by the broker before ``load``).
        self.read_only = False

    # -- reading (lock-free) ------------------------------------------------------------

    def get(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def require(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise TopicNotFoundError(f"topic {name!r} does not exist")
        return topic

    def names(self, include_internal: bool = False) -> list[str]:
        return sorted(name for name in list(self._topics) if include_internal or not is_internal(name))

    # -- start and stop ---------------------------------------------------------------

    def load(self) -> None:
        """Open every topic's logs (recovering them) after clearing interrupted operations."""
        with self._lock:
            metadata = {m.name: m for m in self._store.load_all(remove_leftovers=not self.read_only)}
            if not self.read_only:  # else left for the next writable start
                self._finish_deletions_locked(metadata)
                self._clear_leftovers_locked(metadata)
            for meta in metadata.values():
                config = TopicConfig.from_overrides(meta.config, self._defaults)
                logs = self._open_logs_locked(meta.name, range(meta.partitions), config)
                self._topics[meta.name] = Topic(meta, config, tuple(logs))
            log.info("loaded %d topics with %d partitions", len(self._topics),
                     sum(len(t.partitions) for t in self._topics.values()))

    def close(self) -> None:
        """Close every log (flushing it and marking it clean); topics stay on disk."""
        with self._lock:
            for topic in self._topics.values():
                for partition in topic.partitions:
                    _close_quietly(partition)
                    partition.notify()
            self._topics = {}

    # -- admin ------------------------------------------------------------------------

    def create(self, name: str, partitions: int | None, config: Mapping[str, str], *, internal: bool = False) -> Topic:
        check_topic_name(name, internal=internal)
        count = DEFAULT_PARTITIONS if partitions is None else partitions
        _check_partition_count(count)
        overrides = normalize_overrides(config)
        topic_config = TopicConfig.from_overrides(overrides, self._defaults)
        with self._lock:
            if name in self._topics:
                raise TopicAlreadyExistsError(f"topic {name!r} already exists")
            created_ms = self._clock_ms() if self._clock_ms else int(time.time() * 1000)
            meta = TopicMetadata(name, uuid.uuid4().hex, count, overrides, created_ms)
            logs = self._open_logs_locked(name, range(count), topic_config, fresh=True)
            try:
                self._store.write(meta)
            except BaseException:
                self._discard_locked(logs)
                raise
            topic = self._topics[name] = Topic(meta, topic_config, tuple(logs))
        log.info("created topic %r with %d partitions, config %s", name, count, overrides or "{}")
        return topic

    def alter(self, name: str, config: Mapping[str, str]) -> Topic:
        overrides = normalize_overrides(config)
        with self._lock:
            topic = self.require(name)
            meta = replace(topic.metadata, config={**topic.metadata.config, **overrides})
            topic_config = TopicConfig.from_overrides(meta.config, self._defaults)
            self._store.write(meta)
            log_config = self._log_config(topic_config)
            for partition in topic.partitions:
                partition.log.update_config(log_config)
            topic = self._topics[name] = Topic(meta, topic_config, topic.partitions)
        log.info("altered topic %r: %s", name, overrides)
        return topic

    def create_partitions(self, name: str, total: int) -> Topic:
        with self._lock:
            topic = self.require(name)
            current = len(topic.partitions)
            if total <= current:
                raise InvalidConfigError(
                    f"topic {name!r} has {current} partitions; the new total must be larger, got {total}")
            _check_partition_count(total)
            logs = self._open_logs_locked(name, range(current, total), topic.config, fresh=True)
            meta = replace(topic.metadata, partitions=total)
            try:
                self._store.write(meta)
            except BaseException:
                self._discard_locked(logs)
                raise
            topic = self._topics[name] = Topic(meta, topic.config, topic.partitions + tuple(logs))
        log.info("topic %r grew from %d to %d partitions", name, current, total)
        return topic

    def delete(self, name: str) -> None:
        with self._lock:
            topic = self.require(name)
            self._store.write_deletion_marker(topic.metadata)
            crash_point("topic_delete.marked")
            self._store.remove(name)  # the commit point: from here on the topic is gone
            crash_point("topic_delete.metadata_removed")
            del self._topics[name]
            doomed = self._set_aside_locked(topic.partitions, "delete")
            crash_point("topic_delete.directories_renamed")
        for partition in topic.partitions:
            partition.notify()  # long-polls waiting on it answer now (TOPIC_NOT_FOUND)
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
            crash_point("topic_delete.partition_removed")
        self._store.remove_deletion_marker(topic.metadata)
        log.info("deleted topic %r", name)

    # -- helpers ----------------------------------------------------------------------

    def _open_logs_locked(self, name: str, indexes: range, config: TopicConfig, fresh: bool = False) -> list[Partition]:
        log_config = self._log_config(config)
        opened: list[Partition] = []
        try:
            for index in indexes:
                directory = self._data_dir / partition_dir_name(name, index)
                if fresh and directory.exists():
                    # No metadata accounts for it (a crash mid-create/-delete): not ours.
                    self._rename_stray(directory)
                options: dict = {} if self.fs is None else {"fs": self.fs}
                if self.read_only:
                    options["read_only"] = True
                if self._clock_ms is not None:
                    options["clock_ms"] = self._clock_ms
                partition_log = PartitionLog.open(directory, log_config, **options)
                opened.append(Partition(name, index, partition_log))
        except BaseException:
            if fresh:
                self._discard_locked(opened)
            else:
                for partition in opened:
                    _close_quietly(partition)
            raise
        if fresh:
            fsync_dir(self._data_dir)
        return opened

    def _discard_locked(self, partitions: list[Partition]) -> None:
        """Undo the creation of ``partitions`` (their metadata was not written)."""
        try:
            for path in self._set_aside_locked(partitions, "delete"):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:  # keep the error that made us undo; the next start cleans up
            log.exception("could not remove the partitions of a failed operation")

    def _set_aside_locked(self, partitions: tuple[Partition, ...] | list[Partition], kind: str) -> list[Path]:
        """Close the logs and rename their directories to ``set_aside_name(..., kind)``."""
        moved = []
        for partition in partitions:
            _close_quietly(partition)
            directory = self._data_dir / partition_dir_name(partition.topic, partition.index)
            target = directory.with_name(set_aside_name(directory.name, kind))
            try:
                directory.rename(target)
            except FileNotFoundError:
                continue
            moved.append(target)
        fsync_dir(self._data_dir)
        return moved

    def _rename_stray(self, directory: Path) -> None:
        target = directory.with_name(set_aside_name(directory.name, "stray"))
        log.warning("partition directory %s belongs to no topic; moved it to %s", directory, target.name)
        directory.rename(target)

    def _finish_deletions_locked(self, metadata: dict[str, TopicMetadata]) -> None:
        """Complete the deletions a crash interrupted after their commit point (the
        metadata removal); drop the markers of those it interrupted before it."""
        for marker in self._store.deletion_markers():
            live = metadata.get(marker.name)
            if live is None:
                log.warning("finishing the interrupted deletion of topic %r", marker.name)
                for index in range(marker.partitions):
                    directory = self._data_dir / partition_dir_name(marker.name, index)
                    if directory.exists():
                        target = directory.with_name(set_aside_name(directory.name, "delete"))
                        directory.rename(target)  # removed below with the other -delete dirs
            elif live.topic_id == marker.topic_id:
                log.warning("topic %r: its deletion was interrupted before it took effect; "
                            "the topic is kept", marker.name)
            fsync_dir(self._data_dir)
            self._store.remove_deletion_marker(marker)

    def _clear_leftovers_locked(self, metadata: dict[str, TopicMetadata]) -> None:
        for path in sorted(self._data_dir.iterdir()):
            if not path.is_dir():
                if path.name.endswith(TMP_SUFFIX):  # e.g. of producer_ids.json
                    path.unlink()
                continue
            if path.name.endswith("-delete"):
                log.info("removing %s, left over by a topic deletion", path.name)
                shutil.rmtree(path, ignore_errors=True)
                continue
            parsed = parse_partition_dir_name(path.name)
            if parsed is None:
                continue
            topic, partition = parsed
            meta = metadata.get(topic)
            if meta is None or partition >= meta.partitions:
                if _holds_no_records(path):
                    # A create (or create_partitions) interrupted before its commit point:
                    # nothing to keep for an operator, and kept it would pile up forever.
                    log.info("removing %s, left over by an interrupted topic creation", path.name)
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    self._rename_stray(path)
        fsync_dir(self._data_dir)


def _holds_no_records(directory: Path) -> bool:
    """True when ``directory`` has segment files and all are empty (a partition log opened
    by a create that did not commit). A directory without any is set aside as before."""
    sizes = [entry.stat().st_size for entry in directory.iterdir() if entry.suffix == ".log"]
    return bool(sizes) and not any(sizes)


def set_aside_name(directory_name: str, kind: str) -> str:
    """``<dir>.<uuid>-<kind>``, the directory name cut so that the result fits 255 bytes."""
    return f"{directory_name[:200]}.{uuid.uuid4().hex}-{kind}"


def check_topic_name(name: str, *, internal: bool = False) -> None:
    """Raise InvalidTopicError unless ``name`` is legal (internal names only if ``internal``)."""
    problem = topic_name_problem(name)
    if problem is not None:
        raise InvalidTopicError(problem)
    if is_internal(name) and not internal:
        raise InvalidTopicError(f"topic names starting with '__' are reserved for internal topics: {name!r}")


def _check_partition_count(count: int) -> None:
    if not 1 <= count <= MAX_PARTITIONS:
        raise InvalidConfigError(f"the number of partitions must be between 1 and {MAX_PARTITIONS}, got {count}")


def _close_quietly(partition: Partition) -> None:
    try:
        partition.log.close()
    except Exception:  # a failed log still has to let go of the others
        log.exception("closing the log of %s failed", partition)
