"""logd as a compared system: ``logd serve`` as a child process, driven through logd_sdk.

The broker runs as ``python -m logd.cli serve --data-dir D --listen 127.0.0.1:PORT`` with
its default durability (the default flush policy fsyncs a batch before acknowledging
it); it is ready when the standard gRPC health service reports SERVING for "".

Each phase uses a one-partition topic, like the single stream of every peer. Produce:
``Producer.send`` per record with the SDK's defaults (batching with linger, zstd,
several requests in flight), then ``flush()``; every future is checked afterwards,
outside the timed region. Consume: ``Consumer.assign`` + ``poll`` from the earliest
offset. Latency: a producer with ``Settings.linger_ms`` and a consumer thread polling.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from pathlib import Path

from peers.base import Settings, Target
from peers.harness import LatencyProbe, Progress, run_paced, wait_until
from peers.procs import ServerProcess, SkipSystem, free_port
from peers.workload import Workload

CHUNK_RECORDS = 10_000       # records between progress updates
WINDOW_RECORDS = 50_000      # unchecked acks at most (rabbitmq_streams: unconfirmed records)
POLL_RECORDS = 10_000        # max_records per poll when draining


class Logd(Target):
    """logd with its default flush policy (fsync before the ack)."""

    name = "logd"
    label = "logd"
    durability = "fsync before ack (default flush policy)"
    fsync_before_ack = True
    notes = ("logd_sdk Producer with its defaults (linger 5 ms, 256 KiB batches, zstd, acks=all), "
             "every record's future checked, at most 50,000 unchecked; Consumer.assign + poll; one partition.",)

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.bootstrap = ""

    def check(self) -> None:
        try:
            from logd_sdk import Admin, Consumer, Producer, TopicPartition  # noqa: F401
            from grpc_health.v1 import health_pb2  # noqa: F401
        except ImportError as exc:
            raise SkipSystem(f"logd_sdk is not importable ({exc}); python -m pip install -e .") from exc

    def start(self, workdir: Path, settings: Settings) -> None:
        port = free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        argv = [sys.executable, "-m", "logd.cli", "serve", "--data-dir", str(workdir / "data"),
                "--listen", self.bootstrap]
        self.server = ServerProcess("logd", argv, workdir)
        self.server.start()
        self.server.wait_ready(self._serving, settings.start_timeout_s, poll_s=0.2)

    def _serving(self) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.bootstrap) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return response.status == health_pb2.HealthCheckResponse.SERVING

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def server_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return f"logd {version('logd')}"
        except PackageNotFoundError:
            return "logd"

    def _create_topic(self, name: str) -> None:
        from logd_sdk import Admin
        with Admin(self.bootstrap) as admin:
            admin.create_topic(name, partitions=1)

    def produce(self, workload: Workload, progress: Progress) -> float:
        from logd_sdk import Producer

        self._create_topic("orders")
        keys, values, count = workload.keys, workload.values, workload.count
        unchecked: deque[list] = deque()  # the futures of the last chunks sent, oldest first
        checked = 0
        with Producer(self.bootstrap) as producer:
            producer.partitions_for("orders")  # metadata fetched outside the timed region
            send = producer.send
            started = time.perf_counter()
            for start in range(0, count, CHUNK_RECORDS):
                unchecked.append([send("orders", values[i], keys[i])
                                  for i in range(start, min(start + CHUNK_RECORDS, count))])
                # Every ack is checked, the oldest chunk once WINDOW_RECORDS are unchecked
                # (waiting for it if need be), as the RabbitMQ client's confirms are.
                if len(unchecked) * CHUNK_RECORDS >= WINDOW_RECORDS:
                    checked += _check_futures(unchecked.popleft())
                progress.update(start + CHUNK_RECORDS)
            producer.flush()
            elapsed = time.perf_counter() - started
        for futures in unchecked:
            checked += _check_futures(futures)
        if checked != count:
            raise AssertionError(f"{checked} futures for {count} records")
        return elapsed

    def consume(self, count: int, progress: Progress, stall_timeout_s: float) -> float:
        from logd_sdk import Consumer, TopicPartition

        consumer = Consumer(self.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
        try:
            got = 0
            started = time.perf_counter()
            consumer.assign([TopicPartition("orders", 0)])
            last_progress = time.monotonic()
            while got < count:
                records = consumer.poll(timeout_ms=1000, max_records=POLL_RECORDS)
                for record in records:
                    _key, _value = record.key, record.value
                got += len(records)
                if records:
                    last_progress = time.monotonic()
                    progress.update(got)
                elif time.monotonic() - last_progress > stall_timeout_s:
                    raise AssertionError(f"no record for {stall_timeout_s:.0f} s after {got:,}")
            elapsed = time.perf_counter() - started
        finally:
            consumer.close()
        if got != count:
            raise AssertionError(f"read {got} records, expected {count}")
        return elapsed

    def latency(self, probe: LatencyProbe, settings: Settings) -> None:
        from logd_sdk import Consumer, Producer, TopicPartition

        self._create_topic("lat")
        consumer = Consumer(self.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
        consumer.assign([TopicPartition("lat", 0)])
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                while not probe.complete:
                    records = consumer.poll(timeout_ms=200, max_records=POLL_RECORDS)
                    if records:
                        probe.on_received(record.value for record in records)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=consume, name="logd-latency-consumer", daemon=True)
        futures = []
        try:
            with Producer(self.bootstrap, linger_ms=settings.linger_ms) as producer:
                producer.partitions_for("lat")
                thread.start()
                keys, values, send, mark_sent = probe.keys, probe.values, producer.send, probe.mark_sent

                def send_range(i: int, j: int) -> None:
                    for k in range(i, j):
                        mark_sent(k)
                        futures.append(send("lat", values[k], keys[k]))

                run_paced(probe.count, settings.latency_rate_per_s, send_range)
                producer.flush()
            wait_until(lambda: probe.complete or bool(errors), lambda: probe.received_count,
                       settings.stall_timeout_s, "logd latency consumer")
        finally:
            thread.join(timeout=5)
            consumer.close()
        if errors:
            raise errors[0]
        if _check_futures(futures) != probe.count:
            raise AssertionError(f"{len(futures)} futures for {probe.count} records")


def _check_futures(futures: list) -> int:
    """Every send was acknowledged with an offset (raises the first error); returns how many."""
    for future in futures:
        error = future.exception(60)
        if error is not None:
            raise error
    return len(futures)
