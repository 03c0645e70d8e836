"""NATS JetStream (nats-server -js, nats-py) as a compared system.

The server runs as ``nats-server -a 127.0.0.1 -p PORT -js -sd DIR`` (file store in the
work dir); ready once nats-py connects and JetStream answers ``account_info``. Each
phase has its own file-backed stream; the key is the last subject token
(``orders.user-00042``), the value the payload.

Produce: ``publish_async`` per record (nats-py's pipelined publish: up to
PENDING_PUBLISHES acks outstanding), then ``publish_async_completed``; every ack future
is checked afterwards. Consume: an ordered push consumer (ephemeral, AckPolicy none,
flow control, from the first message) with a callback; it measured ~5x faster than a
pull consumer's ``fetch`` (~30k rec/s at any batch size) here. Latency: ``publish_async`` per due
record and an ordered push consumer on the same event loop.

Durability: JetStream acknowledges after writing to its file store without fsync; the
server syncs the store periodically (every 2 minutes by default), not before the ack.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from peers.base import Settings, Target
from peers.harness import LatencyProbe, Progress, run_paced_async, wait_event
from peers.procs import ServerProcess, free_port, port_open, require_binary, require_module
from peers.workload import Workload

PENDING_PUBLISHES = 4_000     # nats-py's default; 20,000 measured no faster
CHUNK_RECORDS = 10_000


class NatsJetStream(Target):
    """NATS JetStream with a file store, one stream, one server."""

    name = "nats-jetstream"
    label = "NATS JetStream"
    durability = "no fsync before ack (store synced every 2 min)"
    fsync_before_ack = False
    notes = ("publish_async (acks pipelined), key as the last subject token; consume with an ordered "
             "push consumer (a pull consumer's fetch measured ~30k rec/s).",)

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.port = 0
        self.version = "NATS"

    def check(self) -> None:
        self.binary = require_binary("nats-server", "nats-server")
        require_module("nats", "nats-py")
        output = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        self.version = "NATS " + output.strip().rsplit("v", 1)[-1] if "v" in output else "NATS"

    def server_version(self) -> str:
        return self.version

    def start(self, workdir: Path, settings: Settings) -> None:
        self.port = free_port()
        store = workdir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)]
        self.server = ServerProcess("nats-server", argv, workdir)
        self.server.start()
        self.server.wait_ready(lambda: port_open(self.port) and asyncio.run(self._ready()), settings.start_timeout_s)

    async def _ready(self) -> bool:
        nc = await self._connect()
        try:
            await nc.jetstream().account_info()
            return True
        finally:
            await nc.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    async def _connect(self):
        import nats
        return await nats.connect(f"nats://127.0.0.1:{self.port}", allow_reconnect=False, connect_timeout=5)

    async def _add_stream(self, js, name: str, prefix: str) -> None:
        from nats.js.api import StorageType, StreamConfig
        await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"], storage=StorageType.FILE))

    def produce(self, workload: Workload, progress: Progress) -> float:
        return asyncio.run(self._produce(workload, progress))

    async def _produce(self, workload: Workload, progress: Progress) -> float:
        keys, values, count = workload.keys, workload.values, workload.count
        nc = await self._connect()
        try:
            js = nc.jetstream(publish_async_max_pending=PENDING_PUBLISHES)
            await self._add_stream(js, "ORDERS", "orders")
            futures = []
            append, publish_async = futures.append, js.publish_async
            started = time.perf_counter()
            for start in range(0, count, CHUNK_RECORDS):
                for i in range(start, min(start + CHUNK_RECORDS, count)):
                    append(await publish_async("orders." + keys[i].decode(), values[i]))
                progress.update(start + CHUNK_RECORDS)
            await asyncio.wait_for(js.publish_async_completed(), 120)
            elapsed = time.perf_counter() - started
            for future in futures:
                future.result()  # raises the first failed publish
            info = await js.stream_info("ORDERS")
            if info.state.messages != count:
                raise AssertionError(f"stream ORDERS holds {info.state.messages} messages, expected {count}")
            return elapsed
        finally:
            await nc.close()

    def consume(self, count: int, progress: Progress, stall_timeout_s: float) -> float:
        return asyncio.run(self._consume(count, progress, stall_timeout_s))

    async def _consume(self, count: int, progress: Progress, stall_timeout_s: float) -> float:
        done = asyncio.Event()
        got = 0

        async def on_message(message) -> None:
            nonlocal got
            _key, _value = message.subject[7:], message.data
            got += 1
            if got % CHUNK_RECORDS == 0 or got >= count:
                progress.update(got)
                if got >= count:
                    done.set()

        nc = await self._connect()
        try:
            js = nc.jetstream()
            started = time.perf_counter()
            await js.subscribe("orders.>", stream="ORDERS", cb=on_message, ordered_consumer=True)
            await wait_event(done, lambda: got, stall_timeout_s, "nats consumer")
            elapsed = time.perf_counter() - started
        finally:
            await nc.close()
        if got != count:
            raise AssertionError(f"read {got} records, expected {count}")
        return elapsed

    def latency(self, probe: LatencyProbe, settings: Settings) -> None:
        asyncio.run(self._latency(probe, settings))

    async def _latency(self, probe: LatencyProbe, settings: Settings) -> None:
        done = asyncio.Event()

        async def on_message(message) -> None:
            if probe.on_received((message.data,)):
                done.set()

        nc = await self._connect()
        try:
            js = nc.jetstream(publish_async_max_pending=PENDING_PUBLISHES)
            await self._add_stream(js, "LAT", "lat")
            await js.subscribe("lat.>", stream="LAT", cb=on_message, ordered_consumer=True)
            keys, values, mark_sent = probe.keys, probe.values, probe.mark_sent
            futures = []

            async def send_range(i: int, j: int) -> None:
                for k in range(i, j):
                    mark_sent(k)
                    futures.append(await js.publish_async("lat." + keys[k].decode(), values[k]))

            await run_paced_async(probe.count, settings.latency_rate_per_s, send_range)
            await wait_event(done, lambda: probe.received_count, settings.stall_timeout_s, "nats latency consumer")
            await asyncio.wait_for(js.publish_async_completed(), settings.stall_timeout_s)
            for future in futures:
                future.result()
        finally:
            await nc.close()
