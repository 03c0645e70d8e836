"""RabbitMQ Streams (rabbitmq-server with the rabbitmq_stream plugin, rstream) as a peer.

The broker runs privately: its own epmd on a free port (started and stopped by us, not
the system's), a unique node name, and RABBITMQ_MNESIA_BASE, LOG_BASE, config file and
enabled-plugins file in the work dir, so nothing under /etc or /var/lib is used. It is
ready once the stream port accepts an rstream client that can create and delete a
stream; if that does not happen within the start timeout the system is skipped.

Messages are rstream raw messages whose body is ``len(key) (1 byte) + key + value``: the
stream protocol has no key, and raw bytes are the client's fastest path (AMQP 1.0
encoding costs more). Produce: ``send_batch`` of BATCH_RECORDS messages (one Publish
frame each) with a confirm callback, at most WINDOW_RECORDS unconfirmed; timed until
every message is confirmed. Consume: ``subscribe`` from OffsetType.FIRST with
INITIAL_CREDIT chunks of credit; each message is split into key and value.
Latency: ``send_batch`` of the due records (no linger: ``send``'s buffer flushes only
every 0.5 s) and a live subscriber on the same event loop.

Durability: a stream confirms once the chunk is written by the (here single) replica;
osiris does not fsync before confirming (it relies on replication), so the ack comes
before the data is on disk.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import time
from pathlib import Path

from peers.base import Settings, Target
from peers.harness import LatencyProbe, Progress, run_paced_async, wait_event
from peers.procs import ServerProcess, SkipSystem, free_port, port_open, require_binary, require_module
from peers.workload import Workload

BATCH_RECORDS = 1000
WINDOW_RECORDS = 50_000
INITIAL_CREDIT = 100       # chunks; rstream's default 10 lets a latency run fall behind under load
USER = PASSWORD = "guest"  # allowed from loopback only, RabbitMQ's default

_PLUGIN_GLOB = "/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_stream-*"


def pack(key: bytes, value: bytes) -> bytes:
    """The message body: key length (1 byte), key, value."""
    return bytes((len(key),)) + key + value


class _Confirms:
    """Counts publish confirms (rstream calls back once per message) and wakes waiters."""

    def __init__(self) -> None:
        self.confirmed = 0
        self.failed: list[int] = []
        self.wanted = 0
        self.event = asyncio.Event()

    def __call__(self, status) -> None:
        if status.is_confirmed:
            self.confirmed += 1
        else:
            self.failed.append(status.response_code)
        if self.confirmed + len(self.failed) >= self.wanted:
            self.event.set()

    async def wait_for(self, count: int, stall_timeout_s: float) -> None:
        """Until ``count`` messages are confirmed or failed (raises on failures)."""
        self.wanted = count
        while self.confirmed + len(self.failed) < count:
            self.event.clear()
            before = self.confirmed
            try:
                await asyncio.wait_for(self.event.wait(), stall_timeout_s)
            except asyncio.TimeoutError:
                if self.confirmed == before:
                    raise AssertionError(f"no publish confirm for {stall_timeout_s:.0f} s "
                                         f"({self.confirmed:,} of {count:,} confirmed)") from None
        if self.failed:
            raise AssertionError(f"{len(self.failed)} messages were not confirmed (codes {set(self.failed)})")


class RabbitMQStreams(Target):
    """RabbitMQ Streams, one stream, single node."""

    name = "rabbitmq-streams"
    label = "RabbitMQ Streams"
    durability = "no fsync before confirm (relies on replication)"
    fsync_before_ack = False
    notes = (f"rstream raw messages, key carried in the body; send_batch of {BATCH_RECORDS} with "
             f"<= {WINDOW_RECORDS:,} unconfirmed; subscribe from FIRST with {INITIAL_CREDIT} chunks of "
             "credit; no linger in the latency phase.",)

    def __init__(self) -> None:
        self.epmd: ServerProcess | None = None
        self.server: ServerProcess | None = None
        self.port = 0
        self.version = ""

    def check(self) -> None:
        self.binary = require_binary("rabbitmq-server", "rabbitmq-server")
        if self.binary.startswith("/usr/sbin/") and os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server"):
            # Debian's /usr/sbin wrapper switches to the rabbitmq user and its /var/lib home.
            self.binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        self.epmd_binary = require_binary("epmd", "erlang-base")
        plugins = glob.glob(_PLUGIN_GLOB)
        if not plugins:
            raise SkipSystem(f"the rabbitmq_stream plugin is not installed ({_PLUGIN_GLOB})")
        match = re.search(r"rabbitmq_server-([\d.]+)", plugins[0])
        self.version = f"RabbitMQ {match.group(1)}" if match else "RabbitMQ"
        require_module("rstream", "rstream")

    def server_version(self) -> str:
        return self.version

    def start(self, workdir: Path, settings: Settings) -> None:
        epmd_port, amqp_port, dist_port, self.port = free_port(), free_port(), free_port(), free_port()
        for sub in ("mnesia", "log", "home"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
            f"stream.listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "stream.advertised_host = 127.0.0.1\n"
            f"stream.advertised_port = {self.port}\n")
        (workdir / "enabled_plugins").write_text("[rabbitmq_stream].\n")
        self.epmd = ServerProcess("epmd", [self.epmd_binary, "-port", str(epmd_port), "-address", "127.0.0.1"],
                                  workdir)
        self.epmd.start()
        self.epmd.wait_ready(lambda: port_open(epmd_port), 10)
        env = dict(os.environ)
        env.update({
            "HOME": str(workdir / "home"),  # the Erlang cookie is written here
            "ERL_EPMD_PORT": str(epmd_port),
            "RABBITMQ_NODENAME": f"logdcompare{os.getpid()}x{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),  # absent: /etc's is not read
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        })
        self.server = ServerProcess("rabbitmq-server", [self.binary], workdir, env)
        self.server.start()
        self.server.wait_ready(lambda: port_open(self.port) and asyncio.run(self._ready()),
                               settings.start_timeout_s, poll_s=0.5)

    async def _ready(self) -> bool:
        async with self._producer() as producer:
            await producer.create_stream("ready-check", exists_ok=True)
            await producer.delete_stream("ready-check")
        return True

    def stop(self) -> None:
        for attribute in ("server", "epmd"):  # the node first, then its epmd
            process = getattr(self, attribute)
            if process is not None:
                process.stop(timeout_s=30)
                setattr(self, attribute, None)

    def _producer(self):
        from rstream import Producer
        return Producer("127.0.0.1", self.port, username=USER, password=PASSWORD)

    def _consumer(self):
        from rstream import Consumer
        return Consumer("127.0.0.1", self.port, username=USER, password=PASSWORD)

    def produce(self, workload: Workload, progress: Progress) -> float:
        return asyncio.run(self._produce(workload, progress))

    async def _produce(self, workload: Workload, progress: Progress) -> float:
        keys, values, count = workload.keys, workload.values, workload.count
        async with self._producer() as producer:
            await producer.create_stream("orders", exists_ok=True)
            confirms = _Confirms()
            await producer.send_batch("orders", [pack(keys[0], values[0])], on_publish_confirm=confirms)
            await confirms.wait_for(1, 60)  # declares the publisher outside the timed region (1 record of N)
            started = time.perf_counter()
            for start in range(1, count, BATCH_RECORDS):
                end = min(start + BATCH_RECORDS, count)
                await producer.send_batch("orders", [pack(keys[i], values[i]) for i in range(start, end)],
                                          on_publish_confirm=confirms)
                if end - confirms.confirmed > WINDOW_RECORDS:
                    await confirms.wait_for(end - WINDOW_RECORDS // 2, 60)
                progress.update(end)
            await confirms.wait_for(count, 60)
            return time.perf_counter() - started

    def consume(self, count: int, progress: Progress, stall_timeout_s: float) -> float:
        return asyncio.run(self._consume(count, progress, stall_timeout_s))

    async def _consume(self, count: int, progress: Progress, stall_timeout_s: float) -> float:
        from rstream import ConsumerOffsetSpecification, OffsetType

        done = asyncio.Event()
        got = 0

        def on_message(body: bytes, _context) -> None:
            nonlocal got
            key_end = 1 + body[0]
            _key, _value = body[1:key_end], body[key_end:]
            got += 1
            if got % 10_000 == 0 or got >= count:
                progress.update(got)
                if got >= count:
                    done.set()

        async with self._consumer() as consumer:
            started = time.perf_counter()
            await consumer.subscribe("orders", on_message, initial_credit=INITIAL_CREDIT,
                                     offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
            await wait_event(done, lambda: got, stall_timeout_s, "rabbitmq consumer")
            elapsed = time.perf_counter() - started
        if got != count:
            raise AssertionError(f"read {got} records, expected {count}")
        return elapsed

    def latency(self, probe: LatencyProbe, settings: Settings) -> None:
        asyncio.run(self._latency(probe, settings))

    async def _latency(self, probe: LatencyProbe, settings: Settings) -> None:
        from rstream import ConsumerOffsetSpecification, OffsetType

        done = asyncio.Event()

        def on_message(body: bytes, _context) -> None:
            if probe.on_received((body[1 + body[0]:],)):
                done.set()

        async with self._producer() as producer, self._consumer() as consumer:
            await producer.create_stream("lat", exists_ok=True)
            await consumer.subscribe("lat", on_message, initial_credit=INITIAL_CREDIT,
                                     offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
            confirms = _Confirms()
            keys, values, mark_sent = probe.keys, probe.values, probe.mark_sent

            async def send_range(i: int, j: int) -> None:
                batch = []
                for k in range(i, j):
                    mark_sent(k)
                    batch.append(pack(keys[k], values[k]))
                await producer.send_batch("lat", batch, on_publish_confirm=confirms)

            await run_paced_async(probe.count, settings.latency_rate_per_s, send_range)
            await wait_event(done, lambda: probe.received_count, settings.stall_timeout_s, "rabbitmq latency consumer")
            await confirms.wait_for(probe.count, settings.stall_timeout_s)

