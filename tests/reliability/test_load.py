"""Load: back-pressure instead of unbounded memory; 1,000 partitions within the fd limit."""

from __future__ import annotations

import os
import random
import resource
import subprocess
import threading
import time
from pathlib import Path

import pytest

from logd.server import BrokerServer
from logd.server.app import MAX_CONCURRENT_RPCS
from logd.storage import FileSystem, HandleCache, LogConfig, PartitionLog
from logd.storage import log as log_module
from logd_sdk import BrokerUnavailableError, Consumer, LogdTimeoutError, Producer, TopicPartition, codec
from logd_sdk._transport import error_from_rpc
from logd_sdk.protocol import log_pb2

from broker_process import BrokerProcess
from server.helpers import batch, connect_address

from .state import read_partition

MIB = 1024 * 1024


def _rss_sampler(broker: BrokerProcess, stop: threading.Event, samples: list[int]) -> threading.Thread:
    def run() -> None:
        while not stop.wait(0.05):
            try:
                samples.append(broker.rss_kib())
            except (OSError, KeyError, ValueError):
                return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class _SlowDisk(FileSystem):
    """A disk that writes 10 MB/s and takes 10 ms per fsync (the sleeps are the disk's
    latency, not a synchronisation)."""

    def pwrite(self, fd: int, data, position: int) -> None:
        time.sleep(len(data) / 10e6)
        super().pwrite(fd, data, position)

    def fsync(self, fd: int) -> None:
        time.sleep(0.01)
        super().fsync(fd)


def _own_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(90)
def test_producers_faster_than_the_disk_block_instead_of_queueing(tmp_path):
    """SDK producers sending as fast as they can to a broker whose disk writes 10 MB/s
    and takes 10 ms per fsync (flush policy "always"): ``send`` blocks on a full buffer (back-pressure reaches
    the application) and memory levels off instead of growing with the backlog."""
    server = BrokerServer(tmp_path / "data", "127.0.0.1:0", flush_policy="always", grace_s=2.0)
    server.broker.topics.fs = _SlowDisk()
    server.start()
    try:
        client = connect_address(server.address)
        client.create("load", 4)
        blocked: list[int] = []
        samples: list[int] = []
        done = threading.Event()

        def produce(index: int) -> None:
            value = os.urandom(20_000)
            with Producer(server.address, buffer_memory=2 * MIB, max_block_ms=50, compression="none",
                          linger_ms=1) as producer:
                started = time.monotonic()
                while time.monotonic() - started < 2:
                    try:
                        producer.send("load", value, partition=index % 4)
                    except LogdTimeoutError:  # the buffer is full: back-pressure reached us
                        blocked.append(index)
                producer.flush(30_000)

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            samples.append(_own_rss_kib())
            done.wait(0.05)  # the sampling interval
        for thread in threads:
            thread.join(30)
        half = len(samples) // 2
        first, second = max(samples[:half]), max(samples[half:])
        print(f"RSS (broker and producers): first half {first // 1024} MiB, second half {second // 1024} MiB; "
              f"sends refused for a full buffer: {len(blocked)}")
        assert blocked, "producers never had to wait for the slow disk"
        assert second <= first * 1.25 + 20 * 1024, "memory kept growing under sustained load"
        client.channel.close()
    finally:
        server.stop()


@pytest.mark.timeout(90)
def test_a_flood_of_calls_on_one_connection_is_held_to_a_bounded_number(tmp_path):
    """A raw client firing 800 produce calls of 1 MiB at once on one connection: the
    broker holds at most MAX_CONCURRENT_RPCS at a time (beyond it a refusal the SDK
    retries), so its memory stays below the 800 MiB offered. (SDK producers never do this: each
    keeps at most ``max_in_flight`` requests.)"""
    broker = BrokerProcess(tmp_path / "data", tmp_path / "broker.log", flush_policy="always").start()
    try:
        client = connect_address(broker.address)
        client.create("load", 1)
        samples: list[int] = []
        stop = threading.Event()
        sampler = _rss_sampler(broker, stop, samples)
        data = codec.encode_batch([(1, None, os.urandom(1000), None) for _ in range(1000)], codec=codec.CODEC_NONE)
        request = log_pb2.ProduceRequest(partitions=[log_pb2.ProduceRequest.PartitionData(
            topic="load", partition=0, batches=data)])
        before = broker.rss_kib()
        futures = [client.log.Produce.future(request, timeout=60) for _ in range(800)]
        for future in futures:
            future.exception()
        stop.set()
        sampler.join(5)
        refused = sum(1 for future in futures if future.exception() is not None)
        peak = max(samples + [broker.rss_kib()])
        print(f"flood: {refused} of 800 calls refused (retriable), broker RSS {before // 1024} -> peak "
              f"{peak // 1024} MiB")
        refusals = [error_from_rpc(future.exception()) for future in futures if future.exception() is not None]
        assert all(isinstance(error, BrokerUnavailableError) and error.retriable for error in refusals), refusals[:3]
        # Held calls are bounded by MAX_CONCURRENT_RPCS (each costs its body a few times
        # over while parsed and validated: 350-600 MiB measured, the upper end on a busy
        # machine); unbounded, the 800 MiB offered is held 2-3 times.
        assert 800 - refused >= MAX_CONCURRENT_RPCS, "the broker refused calls below its bound"
        assert peak - before < 800 * 1024, "the broker held far more than a bounded number of calls"
        client.channel.close()
    finally:
        broker.kill()


@pytest.mark.timeout(90)
def test_a_stalled_consumer_does_not_grow_the_broker(tmp_path):
    """A consumer that stops polling while 40 MiB are produced: its prefetch buffer is
    bounded, and the broker holds nothing for it (its memory does not grow with the
    backlog)."""
    broker = BrokerProcess(tmp_path / "data", tmp_path / "broker.log").start()
    try:
        client = connect_address(broker.address)
        client.create("backlog", 1)
        consumer = Consumer(broker.address, auto_offset_reset="earliest", fetch_max_bytes=MIB,
                            max_partition_fetch_bytes=MIB)
        consumer.assign([TopicPartition("backlog", 0)])
        consumer.poll(timeout_ms=200)  # then it stalls
        baseline = broker.rss_kib()
        value = os.urandom(10_000)
        with Producer(broker.address, compression="none", linger_ms=2) as producer:
            for _ in range(4000):
                producer.send("backlog", value, partition=0)
            producer.flush(60_000)
        stop = threading.Event()
        samples: list[int] = []
        sampler = _rss_sampler(broker, stop, samples)
        # The stalled consumer's fetcher has done its worst once its prefetch buffer is
        # full (it fetches no more), with a few broker RSS samples taken meanwhile.
        fetcher, deadline = consumer._fetcher, time.monotonic() + 30
        while len(fetcher.buffer) < fetcher._max_buffered or len(samples) < 3:
            assert time.monotonic() < deadline, "the stalled consumer's buffer never filled"
            time.sleep(0.05)  # polling interval
        stop.set()
        sampler.join(5)
        grown = max(samples) - baseline
        print(f"broker RSS grew {grown // 1024} MiB while a consumer stalled behind 40 MiB")
        assert grown < 40 * 1024
        records = consumer.poll(timeout_ms=2000)  # it resumes where it stopped
        assert records and records[0].offset == 0
        consumer.close()
        client.channel.close()
    finally:
        broker.kill()


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.mark.timeout(120)
def test_a_thousand_partitions_stay_within_a_1024_descriptor_limit(tmp_path, monkeypatch):
    """A broker limited to 1,024 file descriptors holds 1,000 partitions with data, serves
    30 more client connections reading 600 partitions, keeps its descriptors
    well below the limit (idle active segments are closed, see OpenActiveSegments), and
    recovers all of them after a SIGKILL; the recovery time is printed."""
    original = subprocess.Popen

    def popen(*args, **kwargs):
        kwargs["preexec_fn"] = _low_fd_limit
        return original(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    broker = BrokerProcess(tmp_path / "data", tmp_path / "broker.log").start()
    monkeypatch.setattr(subprocess, "Popen", original)
    try:
        limits = Path(f"/proc/{broker.pid}/limits").read_text().splitlines()
        limit = int(next(line for line in limits if line.startswith("Max open files")).split()[3])
        assert limit == 1024
        client = connect_address(broker.address)
        client.create("many", 1000)
        request = log_pb2.ProduceRequest(partitions=[log_pb2.ProduceRequest.PartitionData(
            topic="many", partition=p, batches=batch(b"p%d" % p)) for p in range(1000)])
        assert not any(r.error.code for r in client.log.Produce(request, timeout=60).results)
        clients = [connect_address(broker.address) for _ in range(30)]
        rng = random.Random(1)
        for i, other in enumerate(clients):
            for p in rng.sample(range(1000), 20):
                data = other.fetch("many", p, 0)
                assert not data.error.code, data.error.message
                assert [r.value for r in codec.decode_batch(data.batches)[1]] == [b"p%d" % p]
        fds = broker.open_fds()
        print(f"1,000 partitions, 31 clients: {fds} open descriptors (limit {limit})")
        assert fds < limit * 0.8
        for other in clients:
            other.channel.close()
        broker.kill()
        monkeypatch.setattr(subprocess, "Popen", popen)
        started = time.monotonic()
        broker.start()
        monkeypatch.setattr(subprocess, "Popen", original)
        recovery_s = time.monotonic() - started
        request = log_pb2.FetchRequest(partitions=[log_pb2.FetchRequest.PartitionRequest(
            topic="many", partition=p, offset=0) for p in range(1000)], max_bytes=64 * MIB)
        client = connect_address(broker.address)
        response = client.log.Fetch(request, timeout=60)
        assert all(not r.error.code and r.high_watermark == 1 for r in response.partitions)
        print(f"recovery of 1,000 partitions after SIGKILL: {recovery_s:.2f} s (to SERVING), "
              f"{broker.open_fds()} descriptors")
        client.channel.close()
    finally:
        broker.kill()


@pytest.mark.timeout(60)
def test_parked_active_segments_lose_nothing(tmp_path, seed, monkeypatch):
    """With room for only 4 open active segments among 20 logs, random appends, reads,
    rolls, flushes and deletions from several threads park and reopen files constantly:
    every log still reads back exactly what was appended, and at most a few active files
    are open at once."""
    monkeypatch.setattr(log_module.OPEN_ACTIVE_SEGMENTS, "capacity", 4)
    cache = HandleCache(8)
    logs = [PartitionLog.open(tmp_path / f"p-{i}", LogConfig(segment_bytes=2048, index_interval_bytes=256),
                              handle_cache=cache) for i in range(20)]
    expected: list[list[bytes]] = [[] for _ in logs]
    locks = [threading.Lock() for _ in logs]
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        rng = random.Random(f"{seed}-{worker}")
        try:
            for step in range(300):
                i = rng.randrange(len(logs))
                with locks[i]:
                    action = rng.random()
                    if action < 0.6:
                        value = b"w%d-%d-" % (worker, step) + b"." * rng.randrange(100)
                        info = logs[i].append(batch(value, codec_id=codec.CODEC_NONE))
                        assert info.base_offset == len(expected[i])
                        expected[i].append(value)
                    elif action < 0.85 and expected[i]:
                        offset = rng.randrange(len(expected[i]))
                        data = logs[i].read(offset, 500)
                        records = [r for p, _ in codec.iter_batches(data) for r in codec.decode_batch(data, p)[1]]
                        assert records[0].offset <= offset and all(
                            r.value == expected[i][r.offset] for r in records)
                    elif action < 0.92:
                        logs[i].roll()
                    else:
                        logs[i].flush()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert not errors, errors
    open_now = sum(1 for log in logs for s in log._segments[-1:] if s.write_handle is not None)
    assert open_now <= 4 + len(threads), open_now
    for i, log in enumerate(logs):
        assert [value for _, _, value in read_partition(log).records] == expected[i]
        log.close()
        reopened = PartitionLog.open(tmp_path / f"p-{i}", LogConfig(segment_bytes=2048), handle_cache=cache)
        assert [value for _, _, value in read_partition(reopened).records] == expected[i]
        reopened.close()
