"""The background task that keeps every partition bounded: retention and compaction.

Every ``interval_ms`` (``--retention-check-interval-ms``) one thread walks every
partition of every topic, internal ones (``__consumer_offsets``) included, and applies
the topic's *current* config, so ``alter_topic_config`` takes effect at the next check
without a restart:

1. roll an idle active segment older than ``segment.ms`` (the storage rolls on append
   only), so that its records can expire or be compacted;
2. ``cleanup.policy`` contains ``delete``: delete the leading segments beyond
   ``retention.ms`` / ``retention.bytes`` (:mod:`logd.storage.retention`);
3. ``cleanup.policy`` contains ``compact``: run the log cleaner
   (:mod:`logd.storage.cleaner`), which pauses between slices of work so that produce
   and fetch keep their latency.

A partition whose log is closed or failed is skipped; one that raises is logged and
retried at the next check, except a corrupt batch, which marks its log uncleanable until
the broker restarts (Kafka does the same) so that the log is not flooded; a topic
deleted and created again gets a new log, cleanable again.

Counters (``stats_snapshot()``): segments deleted and bytes reclaimed by retention and
by compaction, records removed by compaction, cleaner passes and their total duration,
segments rolled, errors. Each action also logs one line at INFO.

Thread-safety: ``start``/``stop`` from the owner's thread; ``run_once`` from one thread
at a time (the task's own, or a test's); ``stats`` from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, fields
from typing import Callable

from logd.storage import LogClosedError, LogFailedError, PartitionLog
from logd.storage.cleaner import CleanerConfig, CleanerStoppedError, CompactionPolicy, LogCleaner
from logd.storage.retention import enforce_retention, should_roll
from logd_sdk import codec

from .partition import Partition
from .topics import Topic, TopicManager

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_MS = 5000


@dataclass
class LogCleanerStats:
    """Counters since the broker started (only ever grow)."""

    checks: int = 0
    segments_rolled: int = 0
    retention_segments_deleted: int = 0
    retention_bytes_reclaimed: int = 0
    cleaner_runs: int = 0
    cleaner_passes: int = 0
    cleaner_segments_cleaned: int = 0
    cleaner_records_removed: int = 0
    cleaner_bytes_reclaimed: int = 0
    cleaner_duration_ms: float = 0.0
    errors: int = 0

    def snapshot(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LogCleanerTask:
    """Runs retention and compaction over ``topics`` every ``interval_ms`` (module docstring).

    ``clock_ms`` is the wall clock retention and compaction compare record timestamps
    with (a test passes a fake one; it should be the logs' clock too).
    """

    def __init__(self, topics: TopicManager, *, interval_ms: int = DEFAULT_INTERVAL_MS,
                 clock_ms: Callable[[], int] | None = None, cleaner_config: CleanerConfig | None = None) -> None:
        assert interval_ms > 0
        self.interval_ms = interval_ms
        self.stats = LogCleanerStats()
        self._topics = topics
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._stop_event = threading.Event()
        self._cleaner = LogCleaner(cleaner_config, stop_event=self._stop_event)
        # Logs with a corrupt batch. By log object, not path: a topic deleted and created
        # again under the same name has a new, cleanable log in the same directory.
        self._uncleanable: weakref.WeakSet[PartitionLog] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._checked = threading.Condition()

    def start(self) -> None:
        assert self._thread is None, "already started"
        self._thread = threading.Thread(target=self._run, name="logd-log-cleaner", daemon=True)
        self._thread.start()
        log.info("log cleaner started: retention and compaction every %d ms", self.interval_ms)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (a cleaner pass in progress is given up). Idempotent."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the log cleaner did not stop within %.1f s", timeout_s)

    def _run(self) -> None:
        while not self._stop_event.wait(self.interval_ms / 1000):
            try:
                self.run_once()
            except CleanerStoppedError:
                return
            except Exception:  # never let the task die; the next check retries
                log.exception("log cleaner check failed")
                self._count(errors=1)

    def run_once(self) -> None:
        """One check of every partition (the thread's body; tests may call it directly)."""
        for name in self._topics.names(include_internal=True):
            topic = self._topics.get(name)
            for partition in topic.partitions if topic else ():
                if self._stop_event.is_set():
                    raise CleanerStoppedError("the log cleaner is stopping")
                self._check_partition(topic, partition)
        self._count(checks=1)

    def _check_partition(self, topic: Topic, partition: Partition) -> None:
        partition_log = partition.log
        if partition_log.closed or partition_log.failed:
            return
        config = topic.config
        try:
            now_ms = self._clock_ms()
            segments = partition_log.segments()
            if should_roll(segments[-1], now_ms, config.segment_ms):
                partition_log.roll()
                self._count(segments_rolled=1)
            if config.delete:
                self._enforce_retention(partition, config.retention_ms, config.retention_bytes, now_ms)
            if config.compact and partition_log not in self._uncleanable:
                policy = CompactionPolicy(config.min_compaction_lag_ms, config.delete_retention_ms,
                                          config.min_cleanable_dirty_ratio)
                self._compact(partition, policy, now_ms)
        except (LogClosedError, LogFailedError):
            pass  # deleted, shutting down, or failed: nothing to keep bounded
        except codec.CorruptBatchError as exc:
            log.error("%s: corrupt batch, compaction of this partition disabled until restart: %s",
                      partition, exc)
            self._uncleanable.add(partition_log)
            self._count(errors=1)
        except CleanerStoppedError:
            raise
        except Exception:
            if partition_log.closed:
                return  # the topic was deleted under the pass (its directory is gone)
            log.exception("retention/compaction of %s failed", partition)
            self._count(errors=1)

    def _enforce_retention(self, partition: Partition, retention_ms: int, retention_bytes: int, now_ms: int) -> None:
        result = enforce_retention(partition.log, now_ms=now_ms, retention_ms=retention_ms,
                                   retention_bytes=retention_bytes)
        if result.rolled:
            self._count(segments_rolled=1)
        if result.segments_deleted:
            self._count(retention_segments_deleted=result.segments_deleted,
                        retention_bytes_reclaimed=result.bytes_reclaimed)
            log.info("%s-%d: deleted %d segments (%d bytes) by %s; log start offset now %d",
                     partition.topic, partition.index, result.segments_deleted, result.bytes_reclaimed,
                     result.reason, result.log_start_offset)

    def _compact(self, partition: Partition, policy: CompactionPolicy, now_ms: int) -> None:
        result = self._cleaner.clean(partition.log, policy, now_ms)
        if result.passes == 0 and not result.aborted:
            return
        self._count(cleaner_runs=1, cleaner_passes=result.passes, cleaner_segments_cleaned=result.segments_cleaned,
                    cleaner_records_removed=result.records_removed,
                    cleaner_bytes_reclaimed=result.bytes_reclaimed, cleaner_duration_ms=result.duration_ms)
        if result.aborted:
            log.info("%s-%d: cleaner pass given up (%s); retrying at the next check",
                     partition.topic, partition.index, result.aborted)
        log.info("%s-%d: cleaned in %d passes, %.0f ms: %d segments rewritten, %d records removed "
                 "(%d tombstones), %d -> %d bytes", partition.topic, partition.index, result.passes,
                 result.duration_ms, result.segments_cleaned, result.records_removed, result.tombstones_removed,
                 result.bytes_before, result.bytes_after)

    def wait_for_checks(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` checks have completed since start (True) or the timeout."""
        with self._checked:
            return self._checked.wait_for(lambda: self.stats.checks >= count, timeout_s)

    def stats_snapshot(self) -> dict[str, float]:
        with self._checked:
            return self.stats.snapshot()

    def _count(self, **increments: float) -> None:
        with self._checked:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)
            self._checked.notify_all()
