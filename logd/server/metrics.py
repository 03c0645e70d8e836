"""Prometheus metrics of a broker (``logd serve --metrics-listen HOST:PORT``, path ``/metrics``).

What the message-queue world watches, named ``logd_<what>_<unit>``. Labels are only
``topic``, ``partition``, ``group``, ``method`` and ``code``: never a member, a client or
a record, so the number of series is bounded by partitions x groups.

    per partition (topic, partition)
      logd_partition_log_start_offset, logd_partition_log_end_offset (high watermark),
      logd_partition_size_bytes, logd_partition_segments               gauges, read at scrape
      logd_partition_records_in_total, logd_partition_bytes_in_total,
      logd_partition_records_out_total, logd_partition_bytes_out_total counters
    per group (group) and committed partition (group, topic, partition)
      logd_group_members, logd_group_committed_offset, logd_group_lag_records,
      logd_group_oldest_unconsumed_age_seconds                          gauges, read at scrape
    per RPC (method = "logd.v1.LogService/Produce", code = gRPC status name)
      logd_rpc_requests_total, logd_rpc_errors_total{method,code},
      logd_rpc_latency_seconds (histogram; a Fetch's includes its long-poll wait); each
      request on a ProduceStream (FetchStream) counts and is timed as a Produce (Fetch);
      the stream itself counts once under its own name
    broker
      logd_broker_info{version}, logd_broker_serving (1 once recovered, 0 while starting
      or stopping), logd_broker_recovery_seconds
    retention and compaction (the log cleaner task's counters, read at scrape)
      logd_retention_deleted_segments_total, logd_retention_reclaimed_bytes_total,
      logd_cleaner_runs_total, logd_cleaner_passes_total, logd_cleaner_cleaned_segments_total,
      logd_cleaner_removed_records_total, logd_cleaner_reclaimed_bytes_total,
      logd_cleaner_duration_seconds_total, logd_log_segments_rolled_total,
      logd_log_maintenance_checks_total, logd_log_maintenance_errors_total
    process-wide (every broker of the process shares it)
      logd_fsync_duration_seconds (histogram, every fsync of the storage's file seam)
    plus prometheus-client's process_* and python_* collectors.

Cost on the data path: the broker calls :class:`TrafficMeter` once per partition of a
produce or fetch (counts come from batch headers: the produce's from the offsets the log
assigned, the fetch's by walking the returned batches' headers); the RPC interceptor
adds a counter and a histogram observation per call. Everything else is computed when
Prometheus scrapes, by :class:`BrokerCollector`, from the broker's and the group
coordinator's current state. The age of the oldest unconsumed record needs the
timestamp of the record at the committed offset, a log read: it is cached per
(partition, offset), so a scrape reads the log only for partitions whose committed
offset moved since the last one.

Retention and compaction: ``logd.broker.log_cleaner.LogCleanerTask`` keeps its own
counters (``stats_snapshot()``); they are exported under the names above
(:data:`MAINTENANCE_COUNTERS`), fields it may add later are ignored until mapped there.

Thread safety: everything here may be called from any thread.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Mapping

import grpc
from prometheus_client import (
    CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector, disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

import logd
from logd.storage import files
from logd_sdk import codec

log = logging.getLogger(__name__)

# The *_created series (a timestamp per counter child) double the output and tell a
# broker's operator nothing: off for the process, which is a broker.
disable_created_metrics()

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# -- process-wide metrics ---------------------------------------------------------------

#: Metrics of the whole process, served by every broker's endpoint.
SHARED_REGISTRY = CollectorRegistry()

FSYNC_DURATION = Histogram(
    "logd_fsync_duration_seconds", "Time each fsync took (segments, indexes, checkpoints, directories).",
    buckets=FSYNC_BUCKETS_S, registry=SHARED_REGISTRY)

_fsync_users = 0
_fsync_users_lock = threading.Lock()


def _use_fsync_observer(delta: int) -> None:
    """Reference-count the storage's fsync hook: installed while any broker has metrics."""
    global _fsync_users
    with _fsync_users_lock:
        _fsync_users += delta
        files.set_fsync_observer(FSYNC_DURATION.observe if _fsync_users > 0 else None)


# -- traffic ----------------------------------------------------------------------------

_RECORDS_COUNT = struct.Struct("<i")
_RECORDS_COUNT_AT = codec.HEADER_SIZE - 4  # records_count is the header's last field


def count_records(batches: bytes) -> int:
    """Records in concatenated whole batches: the sum of their headers' ``records_count``
    (O(batches); a truncated tail is ignored)."""
    position = total = 0
    end = len(batches)
    unpack = _RECORDS_COUNT.unpack_from
    while end - position >= codec.HEADER_SIZE:
        size = codec.batch_size_at(batches, position)
        if size < codec.HEADER_SIZE or position + size > end:
            break
        total += unpack(batches, position + _RECORDS_COUNT_AT)[0]
        position += size
    return total


class TrafficMeter:
    """Records and bytes in and out per partition (``logd.broker.TrafficObserver``).

    Plain integers under one lock (a few hundred ns per call); exported by
    :class:`BrokerCollector`, which also forgets partitions whose topic is gone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (topic, partition) -> [records in, bytes in, records out, bytes out]
        self._counts: dict[tuple[str, int], list[int]] = {}

    def produced(self, topic: str, partition: int, records: int, size_bytes: int) -> None:
        with self._lock:
            counts = self._counts.get((topic, partition))
            if counts is None:
                counts = self._counts[(topic, partition)] = [0, 0, 0, 0]
            counts[0] += records
            counts[1] += size_bytes

    def fetched(self, topic: str, partition: int, batches: bytes) -> None:
        records = count_records(batches)  # outside the lock
        with self._lock:
            counts = self._counts.get((topic, partition))
            if counts is None:
                counts = self._counts[(topic, partition)] = [0, 0, 0, 0]
            counts[2] += records
            counts[3] += len(batches)

    def snapshot(self, topics: Iterable[str] | None = None) -> dict[tuple[str, int], tuple[int, int, int, int]]:
        """The counts; with ``topics``, first forget every partition of another topic."""
        with self._lock:
            if topics is not None:
                alive = set(topics)
                for key in [key for key in self._counts if key[0] not in alive]:
                    del self._counts[key]
            return {key: tuple(counts) for key, counts in self._counts.items()}  # type: ignore[misc]


# -- RPCs -------------------------------------------------------------------------------

#: Streams whose every request is a request of a unary method (answered in order): each
#: is counted, timed and its failure counted under that method, as if sent alone.
_STREAMED_UNARY = {"logd.v1.LogService/ProduceStream": "logd.v1.LogService/Produce",
                   "logd.v1.LogService/FetchStream": "logd.v1.LogService/Fetch"}


class RpcMetrics(grpc.ServerInterceptor):
    """A server interceptor counting each RPC, its failures (status not OK, by code) and
    timing unary calls. Streams (health Watch, reflection, ProduceStream, FetchStream) are
    counted once each, not timed; the requests on a produce or fetch stream count as
    Produce or Fetch calls (``_STREAMED_UNARY``), so that traffic shows the same whichever
    way it came."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("logd_rpc_requests", "RPCs received.", ["method"], registry=registry)
        self.errors = Counter("logd_rpc_errors", "RPCs that ended with a status other than OK.",
                              ["method", "code"], registry=registry)
        self.latency = Histogram("logd_rpc_latency_seconds", "Time from receiving an RPC to answering it.",
                                 ["method"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self._lock = threading.Lock()
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method -> (handler, wrapped handler)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: grpc answers UNIMPLEMENTED, and no label is made
        method = handler_call_details.method.lstrip("/")
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        with self._lock:
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler):
        requests = self.requests.labels(method)
        unary = _STREAMED_UNARY.get(method)
        if unary is not None and handler.stream_stream is not None:
            return self._per_request_stream_handler(method, unary, handler, requests)
        if handler.unary_unary is None:
            return _counting_stream_handler(handler, requests)
        latency = self.latency.labels(method)
        count_failure = self._count_failure
        behavior = handler.unary_unary

        def observed(request, context):
            requests.inc()
            started = time.perf_counter()
            failed = False
            try:
                return behavior(request, context)
            except BaseException:
                failed = True
                raise
            finally:
                latency.observe(time.perf_counter() - started)
                code = context.code()
                if code is None and failed:
                    code = grpc.StatusCode.UNKNOWN
                if code is not None and code != grpc.StatusCode.OK:
                    count_failure(method, code)

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _count_failure(self, method: str, code: grpc.StatusCode) -> None:
        self.errors.labels(method, getattr(code, "name", str(code))).inc()

    def _per_request_stream_handler(self, method: str, unary: str, handler, streams):
        """A stream of requests answered in order: the stream counts once, each request as
        a call of ``unary``, timed from its reading to its answer; a request that ends the
        stream unanswered counts as a failure of ``unary`` with the stream's status, a
        stream that fails before any (refused) as a failure of ``method``."""
        requests, latency, count_failure = self.requests.labels(unary), self.latency.labels(unary), self._count_failure
        behavior = handler.stream_stream

        def observed(request_iterator, context):
            streams.inc()
            read_at: deque[float] = deque()  # requests read and not yet answered

            def counted_requests():
                for request in request_iterator:
                    requests.inc()
                    read_at.append(time.perf_counter())
                    yield request

            try:
                for response in behavior(counted_requests(), context):
                    if read_at:
                        latency.observe(time.perf_counter() - read_at.popleft())
                    yield response
            finally:
                code = context.code()
                if read_at:
                    latency.observe(time.perf_counter() - read_at.popleft())
                    code = code or grpc.StatusCode.UNKNOWN
                    if code != grpc.StatusCode.OK:
                        count_failure(unary, code)
                elif code not in (None, grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
                    count_failure(method, code)

        return grpc.stream_stream_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _counting_stream_handler(handler, requests):
    for kind, make in (("unary_stream", grpc.unary_stream_rpc_method_handler),
                       ("stream_unary", grpc.stream_unary_rpc_method_handler),
                       ("stream_stream", grpc.stream_stream_rpc_method_handler)):
        behavior = getattr(handler, kind)
        if behavior is not None:
            def counted(request_or_iterator, context, behavior=behavior):
                requests.inc()
                return behavior(request_or_iterator, context)
            return make(counted, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
    return handler


# -- scrape-time state ------------------------------------------------------------------

class BrokerCollector:
    """A prometheus-client collector reading the broker's and coordinator's state at scrape.

    ``coordinator()`` returns the group coordinator or None (not started yet);
    ``serving()`` says whether the server reports SERVING; ``clock_ms()`` is the wall
    clock the age of the oldest unconsumed record is measured against;
    ``maintenance_stats()`` returns the log cleaner task's counters.
    """

    def __init__(self, broker, coordinator: Callable[[], Any], traffic: TrafficMeter, *,
                 serving: Callable[[], bool], clock_ms: Callable[[], int],
                 maintenance_stats: Callable[[], Mapping[str, float]] | None = None) -> None:
        self._broker = broker
        self._maintenance_stats = maintenance_stats
        self._coordinator = coordinator
        self._traffic = traffic
        self._serving = serving
        self._clock_ms = clock_ms
        self.recovery_seconds: float | None = None
        self._timestamps: dict[tuple[str, int, int], int] = {}
        self._timestamps_lock = threading.Lock()  # two scrapes at once share the cache

    def collect(self) -> Iterator[Metric]:
        yield from self._broker_families()
        yield from self._partition_families()
        yield from self._group_families()
        yield from self._maintenance_families()

    def _maintenance_families(self) -> Iterator[Metric]:
        stats = self._maintenance_stats() if self._maintenance_stats is not None else {}
        for field_name, (name, documentation, scale) in MAINTENANCE_COUNTERS.items():
            if field_name in stats:
                yield CounterMetricFamily(name, documentation, value=stats[field_name] * scale)

    def _broker_families(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("logd_broker_info", "The broker's version.", labels=["version"])
        info.add_metric([logd.__version__], 1)
        yield info
        yield GaugeMetricFamily("logd_broker_serving", "1 when the health service reports SERVING.",
                                value=1 if self._serving() else 0)
        if self.recovery_seconds is not None:
            yield GaugeMetricFamily("logd_broker_recovery_seconds", "How long opening (recovering) the logs took.",
                                    value=self.recovery_seconds)

    def _partition_families(self) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        gauges = {
            "log_start_offset": GaugeMetricFamily("logd_partition_log_start_offset",
                                                  "The first offset still in the log.", labels=labels),
            "log_end_offset": GaugeMetricFamily("logd_partition_log_end_offset",
                                                "The high watermark: the offset after the last readable record.",
                                                labels=labels),
            "size_bytes": GaugeMetricFamily("logd_partition_size_bytes", "Bytes of the partition's segments on disk.",
                                            labels=labels),
            "segments": GaugeMetricFamily("logd_partition_segments", "Segments of the partition's log.", labels=labels),
        }
        topics = self._broker.topics
        names = topics.names(include_internal=True)
        for name in names:
            topic = topics.get(name)
            for partition in topic.partitions if topic is not None else ():
                partition_log = partition.log
                key = [name, str(partition.index)]
                try:
                    segments = len(partition_log.segments())
                except Exception:  # a log closing under us (topic deleted): skip it
                    continue
                gauges["log_start_offset"].add_metric(key, partition_log.log_start_offset)
                gauges["log_end_offset"].add_metric(key, partition_log.high_watermark)
                gauges["size_bytes"].add_metric(key, partition_log.size_bytes)
                gauges["segments"].add_metric(key, segments)
        yield from gauges.values()
        counters = [
            CounterMetricFamily("logd_partition_records_in", "Records appended by producers.", labels=labels),
            CounterMetricFamily("logd_partition_bytes_in", "Bytes of batches appended by producers.", labels=labels),
            CounterMetricFamily("logd_partition_records_out", "Records in batches sent to consumers (whole batches).",
                                labels=labels),
            CounterMetricFamily("logd_partition_bytes_out", "Bytes of batches sent to consumers.", labels=labels),
        ]
        for (topic_name, index), counts in sorted(self._traffic.snapshot(names).items()):
            for family, value in zip(counters, counts):
                family.add_metric([topic_name, str(index)], value)
        yield from counters

    def _group_families(self) -> Iterator[Metric]:
        members = GaugeMetricFamily("logd_group_members", "Members of the consumer group.", labels=["group"])
        labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily("logd_group_committed_offset", "The group's committed offset (next to read).",
                                      labels=labels)
        lag = GaugeMetricFamily("logd_group_lag_records", "Log end offset minus committed offset.", labels=labels)
        age = GaugeMetricFamily("logd_group_oldest_unconsumed_age_seconds",
                                "Now minus the timestamp of the record at the committed offset (0 without lag).",
                                labels=labels)
        descriptions = self._describe_groups()
        now_ms = self._clock_ms()
        used: set[tuple[str, int, int]] = set()
        for description in descriptions:
            members.add_metric([description.group_id], len(description.members))
            for offsets in description.offsets:
                if offsets.committed_offset < 0 or offsets.lag < 0:
                    continue  # nothing committed, or the partition is gone
                key = [description.group_id, offsets.topic, str(offsets.partition)]
                committed.add_metric(key, offsets.committed_offset)
                lag.add_metric(key, offsets.lag)
                age_s = 0.0
                if offsets.lag > 0:
                    timestamp_ms = self._timestamp_at(offsets.topic, offsets.partition, offsets.committed_offset, used)
                    if timestamp_ms is not None:
                        age_s = max(0.0, (now_ms - timestamp_ms) / 1000)
                age.add_metric(key, age_s)
        with self._timestamps_lock:
            for stale in [key for key in self._timestamps if key not in used]:
                del self._timestamps[stale]
        yield from (members, committed, lag, age)

    def _describe_groups(self) -> list:
        coordinator = self._coordinator()
        if coordinator is None:
            return []
        try:
            return [coordinator.describe_group(group_id) for group_id in coordinator.list_groups()]
        except Exception as exc:  # a failed coordinator refuses requests; it is logged there
            log.debug("cannot describe the groups for metrics: %s", exc)
            return []

    def _timestamp_at(self, topic_name: str, index: int, offset: int, used: set) -> int | None:
        """The timestamp of the first record at or after ``offset`` (cached per offset)."""
        topic = self._broker.topics.get(topic_name)
        if topic is None or index >= len(topic.partitions):
            return None
        partition_log = topic.partitions[index].log
        offset = max(offset, partition_log.log_start_offset)  # retention took the rest
        key = (topic_name, index, offset)
        used.add(key)
        with self._timestamps_lock:
            if key in self._timestamps:
                return self._timestamps[key]
        timestamp_ms = _first_timestamp_at(partition_log, offset)
        if timestamp_ms is not None:  # (a failed read is tried again next time)
            with self._timestamps_lock:
                self._timestamps[key] = timestamp_ms
        return timestamp_ms


def _first_timestamp_at(partition_log, offset: int, max_batches: int = 8) -> int | None:
    """Read whole batches from ``offset`` until a record at or after it (compaction may
    leave gaps); None when there is none below the high watermark or the read fails."""
    for _ in range(max_batches):
        try:
            data = partition_log.read(offset, 1)
            if not data:
                return None
            header, records = codec.decode_batch(data, 0)
        except Exception:  # a log closing (topic deleted), failed or corrupt: no age this time
            return None
        for record in records:
            if record.offset >= offset:
                return record.timestamp_ms
        offset = header.base_offset + header.last_offset_delta + 1
    return None


#: LogCleanerStats field -> (metric name without _total, help, scale to the unit).
MAINTENANCE_COUNTERS: dict[str, tuple[str, str, float]] = {
    "retention_segments_deleted": ("logd_retention_deleted_segments",
                                   "Segments deleted by retention (retention.ms, retention.bytes).", 1),
    "retention_bytes_reclaimed": ("logd_retention_reclaimed_bytes", "Bytes freed by retention.", 1),
    "cleaner_runs": ("logd_cleaner_runs", "Compactions of a partition the log cleaner ran.", 1),
    "cleaner_passes": ("logd_cleaner_passes", "Compaction passes (one offset map each).", 1),
    "cleaner_segments_cleaned": ("logd_cleaner_cleaned_segments", "Segments rewritten by compaction.", 1),
    "cleaner_records_removed": ("logd_cleaner_removed_records",
                                "Records (superseded values, expired tombstones) compaction removed.", 1),
    "cleaner_bytes_reclaimed": ("logd_cleaner_reclaimed_bytes", "Bytes freed by compaction.", 1),
    "cleaner_duration_ms": ("logd_cleaner_duration_seconds", "Time spent compacting (its rate: busy fraction).",
                            0.001),
    "segments_rolled": ("logd_log_segments_rolled", "Idle active segments rolled for segment.ms.", 1),
    "checks": ("logd_log_maintenance_checks", "Retention and compaction checks over all partitions.", 1),
    "errors": ("logd_log_maintenance_errors", "Partitions whose retention or compaction failed.", 1),
}


class _Forward:
    """Serves another registry's metrics (the process-wide ones) from this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        return self._registry.collect()


# -- one broker's metrics ---------------------------------------------------------------

class BrokerMetrics:
    """Everything one ``BrokerServer`` exports, in its own registry.

    Wiring: ``interceptor`` goes into ``grpc.server(interceptors=...)``, ``traffic`` into
    ``Broker(traffic=...)``; ``serve_http(listen)`` starts the endpoint, ``close()`` stops
    it. While any instance is open the storage's fsync hook feeds ``logd_fsync_duration_seconds``.
    """

    def __init__(self, broker, coordinator: Callable[[], Any], *, serving: Callable[[], bool],
                 clock_ms: Callable[[], int] | None = None,
                 maintenance_stats: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.traffic = TrafficMeter()
        self.interceptor = RpcMetrics(self.registry)
        self.collector = BrokerCollector(broker, coordinator, self.traffic, serving=serving,
                                         clock_ms=clock_ms or (lambda: time.time_ns() // 1_000_000),
                                         maintenance_stats=maintenance_stats)
        self.registry.register(self.collector)
        self.registry.register(_Forward(SHARED_REGISTRY))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._http = None
        self._closed = False
        _use_fsync_observer(+1)

    def serve_http(self, listen: str) -> str:
        """Serve ``/metrics`` on ``listen`` (``HOST:PORT``, port 0 picks one); returns
        the bound ``host:port``. Raises OSError when the address cannot be bound."""
        host, port = listen.rsplit(":", 1)
        host = host.strip("[]")
        try:
            server, thread = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:  # say which address: the gRPC one's error does
            raise OSError(exc.errno, f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
        self._http = (server, thread)
        bound_port = server.server_address[1]
        return f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"

    def close(self) -> None:
        """Stop the endpoint (if started) and release the fsync hook. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(5)
            self._http = None
        _use_fsync_observer(-1)
