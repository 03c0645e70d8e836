"""Redis Streams (redis-server, redis-py with hiredis) as a compared system.

Records are stream entries ``XADD orders * k <key> v <value>``. Produce pipelines
PIPELINE_RECORDS XADDs per round trip on one connection (redis-py's pipeline without
MULTI; a synchronous client has one request in flight per connection) and checks every
reply. Consume reads with ``XREAD COUNT CONSUME_RECORDS`` from 0-0. Latency: XADD per due
record on one connection, a second connection in a thread blocked in ``XREAD BLOCK``.

Durability: append-only file on, RDB snapshots off. ``appendfsync always`` writes and
fsyncs the AOF before replying (in ``beforeSleep``, before client replies go out), so an
acknowledged XADD is on disk; ``everysec`` replies before the fsync, which a background
thread does once a second. Automatic AOF rewrites are off so no fork lands in a timed
phase (Redis's best case).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from peers.base import Settings, Target
from peers.harness import LatencyProbe, Progress, run_paced, wait_until
from peers.procs import ServerProcess, SkipSystem, free_port, require_binary, require_module
from peers.workload import Workload

PIPELINE_RECORDS = 1000
CONSUME_RECORDS = 10_000


class RedisStreams(Target):
    """Redis Streams with AOF ``appendfsync`` = ``fsync_policy``."""

    label = "Redis Streams"
    notes = (f"XADD pipelined {PIPELINE_RECORDS} per round trip, XREAD COUNT {CONSUME_RECORDS}; "
             "RDB snapshots and automatic AOF rewrites off.",)

    def __init__(self, fsync_policy: str) -> None:
        assert fsync_policy in ("always", "everysec")
        self.fsync_policy = fsync_policy
        self.name = f"redis-{fsync_policy}"
        self.fsync_before_ack = fsync_policy == "always"
        self.durability = ("AOF always: fsync before ack" if self.fsync_before_ack
                           else "AOF everysec: ack before fsync (fsync each second)")
        self.server: ServerProcess | None = None
        self.port = 0

    def check(self) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        require_module("redis", "redis[hiredis]")
        import redis.utils
        if not redis.utils.HIREDIS_AVAILABLE:
            raise SkipSystem("hiredis is not installed (pip install 'redis[hiredis]'): "
                             "redis-py's pure-Python parser would understate Redis")

    def start(self, workdir: Path, settings: Settings) -> None:
        self.port = free_port()
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir),
                "--daemonize", "no", "--save", "", "--appendonly", "yes", "--appendfsync", self.fsync_policy,
                "--auto-aof-rewrite-percentage", "0", "--protected-mode", "yes"]
        self.server = ServerProcess("redis-server", argv, workdir)
        self.server.start()
        self.server.wait_ready(lambda: self._client().ping(), settings.start_timeout_s)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def server_version(self) -> str:
        return "Redis " + self._client().info("server")["redis_version"]

    def _client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=60)

    def produce(self, workload: Workload, progress: Progress) -> float:
        client = self._client()
        client.ping()  # connect outside the timed region
        keys, values, count = workload.keys, workload.values, workload.count
        pipe = client.pipeline(transaction=False)
        started = time.perf_counter()
        for start in range(0, count, PIPELINE_RECORDS):
            for i in range(start, min(start + PIPELINE_RECORDS, count)):
                pipe.xadd("orders", {"k": keys[i], "v": values[i]})
            pipe.execute()  # raises on any error reply
            progress.update(start + PIPELINE_RECORDS)
        elapsed = time.perf_counter() - started
        if client.xlen("orders") != count:
            raise AssertionError(f"XLEN orders is {client.xlen('orders')}, expected {count}")
        client.close()
        return elapsed

    def consume(self, count: int, progress: Progress, stall_timeout_s: float) -> float:
        client = self._client()
        client.ping()
        last_id, got = b"0-0", 0
        started = time.perf_counter()
        while got < count:
            response = client.xread({"orders": last_id}, count=CONSUME_RECORDS, block=int(stall_timeout_s * 1000))
            if not response:
                raise AssertionError(f"XREAD returned nothing after {got:,} records")
            entries = response[0][1]
            for _entry_id, fields in entries:
                _key, _value = fields[b"k"], fields[b"v"]
            got += len(entries)
            last_id = entries[-1][0]
            progress.update(got)
        elapsed = time.perf_counter() - started
        client.close()
        if got != count:
            raise AssertionError(f"read {got} records, expected {count}")
        return elapsed

    def latency(self, probe: LatencyProbe, settings: Settings) -> None:
        producer, reader = self._client(), self._client()
        producer.ping()
        reader.ping()
        errors: list[BaseException] = []

        def consume() -> None:
            last_id = b"0-0"
            try:
                while not probe.complete:
                    response = reader.xread({"lat": last_id}, count=CONSUME_RECORDS, block=1000)
                    if response:
                        entries = response[0][1]
                        probe.on_received(fields[b"v"] for _id, fields in entries)
                        last_id = entries[-1][0]
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=consume, name="redis-latency-reader", daemon=True)
        thread.start()
        keys, values = probe.keys, probe.values

        def send_range(i: int, j: int) -> None:
            if j - i == 1:
                probe.mark_sent(i)
                producer.xadd("lat", {"k": keys[i], "v": values[i]})
                return
            pipe = producer.pipeline(transaction=False)
            for k in range(i, j):
                probe.mark_sent(k)
                pipe.xadd("lat", {"k": keys[k], "v": values[k]})
            pipe.execute()

        run_paced(probe.count, settings.latency_rate_per_s, send_range)
        wait_until(lambda: probe.complete or bool(errors), lambda: probe.received_count,
                   settings.stall_timeout_s, "redis latency consumer")
        thread.join(timeout=5)
        producer.close()
        if errors:
            raise errors[0]
        reader.close()
