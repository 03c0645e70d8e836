"""The crash loop: producers and a consumer under load while the broker is SIGKILLed.

One run (``run_crash_loop``):

1. start ``logd serve`` (a subprocess) and create a topic with small segments (so that
   rolls happen all the time and some kills land inside one);
2. start ``producers`` threads, each with its own SDK ``Producer`` (acks=all), sending
   values unique to the run to random partitions and recording every outcome in a
   :class:`~history.History`; and one consumer thread polling every partition from
   offset 0, recording what it reads;
3. ``iterations`` times: let traffic run for a random while, SIGKILL the broker, and
   restart it (sometimes killing it again in the middle of its recovery first);
4. stop the clients, SIGKILL and restart once more, read every partition from 0 to its
   end (twice, across one more SIGKILL, which must read the same), and run
   :func:`history.check`.

Everything random comes from ``seed``. Used by ``test_crash_loop.py`` (short profile) and
``scripts/crash_loop.py`` (``--iterations N``).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from logd_sdk import Admin, Consumer, Producer, TopicPartition
from logd_sdk._errors import IllegalStateError, LogdError, UnknownServerError

from broker_process import BrokerProcess

from .history import FAILED, OK, UNKNOWN, CheckResult, History, Read, check

TOPIC = "crashloop"


@dataclass
class CrashLoopConfig:
    work_dir: Path
    seed: int
    iterations: int = 4
    producers: int = 3
    partitions: int = 3
    flush_policy: str = "group"
    run_s: tuple[float, float] = (0.4, 1.2)  # traffic between two kills
    segment_bytes: int = 16384
    value_bytes: int = 40
    tolerate_duplicates: bool = True  # until the broker deduplicates idempotent producers
    log: Callable[[str], None] = print


@dataclass
class CrashLoopReport:
    history: History
    final: dict[int, list[Read]]
    result: CheckResult
    kills: int = 0
    kills_during_recovery: int = 0
    poll_errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def summary(self) -> str:
        return (f"{self.kills} SIGKILLs ({self.kills_during_recovery} while starting up and recovering) in "
                f"{self.duration_s:.1f} s; "
                f"{self.result.summary()}; poll errors: {self.poll_errors[:5]}")


def _outcome(error: BaseException) -> str:
    if isinstance(error, (IllegalStateError, UnknownServerError)) or getattr(error, "retriable", False):
        return UNKNOWN  # the broker may or may not have written it (Kafka's semantics)
    return FAILED


class _ProducerThread(threading.Thread):
    def __init__(self, name: str, bootstrap: str, config: CrashLoopConfig, history: History,
                 stop: threading.Event) -> None:
        super().__init__(name=f"crashloop-{name}", daemon=True)
        self.producer_name = name
        self.bootstrap = bootstrap
        self.config = config
        self.history = history
        self.stop_event = stop
        self.rng = random.Random(f"{config.seed}-{name}")
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        rng, config = self.rng, self.config
        producer = Producer(self.bootstrap, linger_ms=rng.choice([0, 1, 5]), batch_size=rng.choice([2048, 16384]),
                            delivery_timeout_ms=8000, request_timeout_ms=2000, max_block_ms=4000,
                            retry_backoff_ms=30, retry_backoff_max_ms=300, compression=rng.choice(["zstd", "none"]))
        outstanding: deque = deque()
        seq = 0
        try:
            while not self.stop_event.is_set():
                partition = rng.randrange(config.partitions)
                value = f"{self.producer_name}-{seq}-".encode().ljust(config.value_bytes, b"x")
                entry = self.history.send(self.producer_name, partition, value, seq)
                seq += 1
                try:
                    future = producer.send(TOPIC, value, partition=partition)
                except LogdError as exc:  # never queued: it cannot be in the log
                    self.history.complete(entry, FAILED, error=type(exc).__name__)
                    continue
                future.add_done_callback(lambda f, e=entry: self._resolved(f, e))
                outstanding.append(future)
                while outstanding and outstanding[0].done():
                    outstanding.popleft()
                if len(outstanding) > 500:  # keep the history bounded per moment
                    outstanding[0].exception(timeout=15)
                if rng.random() < 0.05:
                    self.stop_event.wait(rng.random() * 0.02)  # bursts and pauses, not a metronome
        finally:
            try:
                producer.flush(timeout_ms=15000)
            except LogdError:
                pass
            producer.close(timeout_ms=5000)

    def _resolved(self, future, entry) -> None:
        error = future.exception(timeout=0)
        if error is None:
            self.history.complete(entry, OK, future.result(timeout=0).offset)
        else:
            self.history.complete(entry, _outcome(error), error=type(error).__name__)


class _ConsumerThread(threading.Thread):
    def __init__(self, bootstrap: str, config: CrashLoopConfig, history: History, stop: threading.Event) -> None:
        super().__init__(name="crashloop-consumer", daemon=True)
        self.bootstrap = bootstrap
        self.config = config
        self.history = history
        self.stop_event = stop
        self.errors: list[str] = []

    def run(self) -> None:
        session = 0
        while not self.stop_event.is_set():
            session += 1
            consumer = Consumer(self.bootstrap, auto_offset_reset="none", fetch_max_wait_ms=100,
                                request_timeout_ms=2000, retry_backoff_ms=50)
            partitions = [TopicPartition(TOPIC, p) for p in range(self.config.partitions)]
            try:
                consumer.assign(partitions)
                for tp in partitions:
                    consumer.seek(tp, 0)
                while not self.stop_event.is_set():
                    records = consumer.poll(timeout_ms=200)
                    if records:
                        self.history.poll(f"session-{session}",
                                          [Read(r.partition, r.offset, r.value) for r in records])
            except LogdError as exc:  # the checker reports these; a new session starts at 0
                self.errors.append(f"session {session}: {type(exc).__name__}: {exc}")
            finally:
                consumer.close()


def read_everything(bootstrap: str, partitions: int, deadline_s: float = 30.0) -> dict[int, list[Read]]:
    """Every record of every partition, from offset 0 to the end offset at call time."""
    consumer = Consumer(bootstrap, auto_offset_reset="none", fetch_max_wait_ms=50)
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: dict[int, list[Read]] = {p: [] for p in range(partitions)}
        remaining = {tp.partition: ends[tp] for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + deadline_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"final read incomplete after {deadline_s} s: {remaining}")
            for record in consumer.poll(timeout_ms=500):
                end = ends[TopicPartition(TOPIC, record.partition)]
                if record.offset < end:
                    out[record.partition].append(Read(record.partition, record.offset, record.value))
                if record.offset >= end - 1:
                    remaining.pop(record.partition, None)
        return out
    finally:
        consumer.close()


def run_crash_loop(config: CrashLoopConfig) -> CrashLoopReport:
    """One crash-loop run (see the module docstring)."""
    started = time.monotonic()
    rng = random.Random(config.seed)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess(config.work_dir / "data", config.work_dir / "broker.log",
                           flush_policy=config.flush_policy, retention_check_interval_ms=60_000).start()
    history = History()
    stop = threading.Event()
    kills = kills_during_recovery = 0
    threads: list[threading.Thread] = []
    try:
        with Admin(broker.address) as admin:
            admin.create_topic(TOPIC, partitions=config.partitions,
                               config={"segment.bytes": str(config.segment_bytes)})
        threads = [_ProducerThread(f"p{i}", broker.address, config, history, stop) for i in range(config.producers)]
        consumer = _ConsumerThread(broker.address, config, history, stop)
        threads.append(consumer)
        for thread in threads:
            thread.start()
        for iteration in range(config.iterations):
            stop.wait(rng.uniform(*config.run_s))
            broker.kill()
            kills += 1
            if rng.random() < 0.25:
                # Crash again while it recovers: recovery must be repeatable.
                broker.spawn()
                stop.wait(rng.uniform(0.05, 0.5))
                if broker.alive:
                    kills_during_recovery += 1
                broker.kill()
                kills += 1
            broker.start()
            config.log(f"crash loop: iteration {iteration + 1}/{config.iterations}, "
                       f"{len(history.sends)} sends so far")
        stop.wait(rng.uniform(*config.run_s))
        stop.set()
        for thread in threads:
            thread.join(60)
            if thread.is_alive():
                raise RuntimeError(f"{thread.name} did not stop")
            if getattr(thread, "error", None) is not None:
                raise RuntimeError(f"{thread.name} failed") from thread.error
        # Every future is resolved (flush + close above); crash once more, then read.
        broker.kill()
        kills += 1
        broker.start()
        final = read_everything(broker.address, config.partitions)
        broker.kill()
        broker.start()
        again = read_everything(broker.address, config.partitions)
        result = check(history, final, tolerate_duplicates=config.tolerate_duplicates)
        if again != final:
            result.add("unstable recovery", "two recoveries in a row read different logs")
        for error in consumer.errors:
            result.add("poll errors", error)
        return CrashLoopReport(history, final, result, kills, kills_during_recovery, consumer.errors,
                               time.monotonic() - started)
    finally:
        stop.set()
        broker.kill()
