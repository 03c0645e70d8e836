"""Disk faults: a full disk, a read-only disk, EIO on fsync, on write and on read.

Each test runs an in-process ``BrokerServer`` and talks raw gRPC to it, so that the
exact error code a client sees is checked. The mount-based tests use a 2 MiB tmpfs (see
the ``tmpfs`` fixture; skipped where mounting is impossible); the EIO tests inject
faults through the storage's file-system seam (``faultfs.FaultInjectingFileSystem``).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logd.server import BrokerServer
from logd_sdk import codec
from logd_sdk.protocol import common_pb2, log_pb2

from server.helpers import connect, decode_values, error_of, start_server

from .faultfs import FaultInjectingFileSystem

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _code(result) -> str:
    return common_pb2.ErrorCode.Name(result.error.code) if result.HasField("error") else "NONE"


def _batch(size: int, tag: int) -> bytes:
    """One uncompressed record of ``size`` incompressible bytes."""
    return codec.encode_batch([(1_000, None, b"%08d" % tag + os.urandom(size), None)], codec=codec.CODEC_NONE)


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _values(client, topic: str, partition: int) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while True:
        data = client.fetch(topic, partition, offset, partition_max_bytes=1 << 20)
        assert not data.HasField("error") or data.error.code == 0, data.error
        values = decode_values(data.batches, offset)  # decoding checks every CRC
        if not values:
            return out
        out.extend(values)
        offset = values[-1][0] + 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("segment_bytes", [1 << 30, 16384])
def test_full_disk_refuses_the_append_whole_then_resumes_at_the_same_offset(tmpfs, segment_bytes):
    """ENOSPC mid-append: a retriable STORAGE_ERROR, no partial batch on disk or visible,
    the partition stays writable, and once space is freed the next append gets the very
    offset the refused one would have had; a restart finds exactly the acknowledged data."""
    ballast = tmpfs / "ballast"
    ballast.write_bytes(b"\0" * (512 * 1024))
    data_dir = tmpfs / "data"
    server = start_server(data_dir)
    try:
        client = connect(server)
        client.create("t", 1, segment_bytes=str(segment_bytes))
        acked: list[bytes] = []
        end = 0
        for tag in range(200):
            batch = _batch(48 * 1024, tag)
            result = client.produce("t", 0, batch)
            if _code(result) != "NONE":
                break
            assert result.base_offset == end
            acked.append(batch)
            end += 1
        else:
            pytest.fail("the 2 MiB tmpfs never filled up")
        assert _code(result) == "STORAGE_ERROR", result
        assert acked, "the disk was full before the first append"
        partition_log = server.broker.topics.get("t").partitions[0].log
        assert not partition_log.failed, "out of space must not fail the partition for good"
        # No partial batch: the segment files hold exactly the acknowledged batches.
        on_disk = sum(p.stat().st_size for p in (data_dir / "t-0").glob("*.log"))
        assert on_disk == sum(map(len, acked)), (on_disk, sum(map(len, acked)))
        assert [offset for offset, _ in _values(client, "t", 0)] == list(range(end))
        assert _code(client.produce("t", 0, _batch(48 * 1024, 999))) == "STORAGE_ERROR"  # still full
        ballast.unlink()
        result = client.produce("t", 0, _batch(1024, 1000))
        assert _code(result) == "NONE" and result.base_offset == end, result
        client.channel.close()
    finally:
        server.stop()
    server = start_server(data_dir)
    try:
        client = connect(server)
        assert [offset for offset, _ in _values(client, "t", 0)] == list(range(end + 1))
        client.channel.close()
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_read_only_disk_serves_reads_refuses_writes_and_says_so_in_health(tmpfs):
    """On a file system remounted read-only the broker starts, serves fetches, refuses
    produce and admin writes with STORAGE_ERROR, and health reports the overall service
    SERVING but logd.v1.LogService NOT_SERVING; writable again, everything resumes."""
    data_dir = tmpfs / "data"
    server = start_server(data_dir)
    client = connect(server)
    client.create("t", 2)
    for tag in range(5):
        assert _code(client.produce("t", tag % 2, _batch(100, tag))) == "NONE"
    client.channel.close()
    server.stop()  # closes every file: a busy file system cannot be remounted read-only
    remount = subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True, text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
    try:
        server = start_server(data_dir)
        try:
            client = connect(server)
            assert _health(server.address, "") == SERVING
            assert _health(server.address, "logd.v1.LogService") == NOT_SERVING
            assert len(_values(client, "t", 0)) == 3 and len(_values(client, "t", 1)) == 2
            assert _code(client.produce("t", 0, _batch(100, 99))) == "STORAGE_ERROR"
            code, name, _ = error_of(lambda: client.create("u", 1))
            assert (code, name) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_ERROR")
            assert len(_values(client, "t", 0)) == 3
            client.channel.close()
        finally:
            server.stop()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    server = start_server(data_dir)
    try:
        client = connect(server)
        assert _health(server.address, "logd.v1.LogService") == SERVING
        result = client.produce("t", 0, _batch(100, 100))
        assert _code(result) == "NONE" and result.base_offset == 3
        client.channel.close()
    finally:
        server.stop()


def _faulty_server(data_dir, fs: FaultInjectingFileSystem) -> BrokerServer:
    server = BrokerServer(data_dir, "127.0.0.1:0", grace_s=2.0)
    server.broker.topics.fs = fs
    return server.start()


@pytest.mark.timeout(60)
def test_failed_fsync_fails_the_partition_for_good_and_never_acks(tmp_path):
    """EIO on fsync: the append fails with STORAGE_ERROR, the partition refuses every later
    append even once fsync works again (never an ack after a retried fsync), its data
    stays readable, the record never becomes visible, and other partitions keep serving."""
    fs = FaultInjectingFileSystem()
    data_dir = tmp_path / "data"
    server = _faulty_server(data_dir, fs)
    try:
        client = connect(server)
        client.create("t", 2)
        assert _code(client.produce("t", 0, _batch(100, 0))) == "NONE"
        fs.fail("fsync", f"{os.sep}t-0{os.sep}", errno.EIO)
        assert _code(client.produce("t", 0, _batch(100, 1))) == "STORAGE_ERROR"
        fs.clear()
        for tag in (2, 3):
            assert _code(client.produce("t", 0, _batch(100, tag))) == "STORAGE_ERROR"
        assert fs.calls["fsync"] == 1
        assert _code(client.produce("t", 1, _batch(100, 4))) == "NONE"
        assert [offset for offset, _ in _values(client, "t", 0)] == [0]
        assert client.fetch("t", 0, 0).high_watermark == 1
        assert len(_values(client, "t", 1)) == 1
        client.channel.close()
    finally:
        server.stop()
    server = start_server(data_dir)  # a restart recovers the partition
    try:
        client = connect(server)
        before = len(_values(client, "t", 0))
        assert before in (1, 2)  # the unacknowledged record may or may not have survived
        result = client.produce("t", 0, _batch(100, 5))
        assert _code(result) == "NONE" and result.base_offset == before
        client.channel.close()
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_failed_write_leaves_no_partial_batch(tmp_path):
    """EIO half-way through a write: STORAGE_ERROR, the partition refuses appends until a
    restart, whose recovery cuts the torn bytes; nothing torn is ever served."""
    fs = FaultInjectingFileSystem()
    data_dir = tmp_path / "data"
    server = _faulty_server(data_dir, fs)
    try:
        client = connect(server)
        client.create("t", 1)
        assert _code(client.produce("t", 0, _batch(500, 0))) == "NONE"
        fs.fail("pwrite", f"{os.sep}t-0{os.sep}", errno.EIO, times=1, keep_bytes=100)
        assert _code(client.produce("t", 0, _batch(500, 1))) == "STORAGE_ERROR"
        assert _code(client.produce("t", 0, _batch(500, 2))) == "STORAGE_ERROR"
        assert [offset for offset, _ in _values(client, "t", 0)] == [0]
        client.channel.close()
    finally:
        server.stop()
    server = start_server(data_dir)
    try:
        client = connect(server)
        assert [offset for offset, _ in _values(client, "t", 0)] == [0]
        result = client.produce("t", 0, _batch(500, 3))
        assert _code(result) == "NONE" and result.base_offset == 1
        client.channel.close()
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_read_error_is_a_clean_storage_error_and_spares_other_partitions(tmp_path):
    """EIO on read: the fetch of that partition answers STORAGE_ERROR (not an internal
    error), the other partition of the same request is served, writes go on, and the
    partition reads again once the disk does."""
    fs = FaultInjectingFileSystem()
    server = _faulty_server(tmp_path / "data", fs)
    try:
        client = connect(server)
        client.create("t", 2, segment_bytes="1024")
        for tag in range(20):
            assert _code(client.produce("t", tag % 2, _batch(100, tag))) == "NONE"
        fs.fail("pread", f"{os.sep}t-0{os.sep}", errno.EIO)
        response = client.log.Fetch(log_pb2.FetchRequest(partitions=[
            log_pb2.FetchRequest.PartitionRequest(topic="t", partition=p, offset=0, max_bytes=1 << 20)
            for p in (0, 1)]), timeout=10)
        first, second = response.partitions
        assert _code(first) == "STORAGE_ERROR" and not first.batches
        assert _code(second) == "NONE" and len(decode_values(second.batches)) == 10
        assert _code(client.produce("t", 0, _batch(100, 20))) == "NONE"  # a read error is not sticky
        fs.clear()
        assert len(_values(client, "t", 0)) == 11
        client.channel.close()
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_health_follows_the_data_directory_turning_read_only(tmp_path, monkeypatch):
    """When the data directory's file system turns read-only while the broker runs (the
    kernel's answer to disk errors, errors=remount-ro), logd.v1.LogService reports
    NOT_SERVING within a check interval while "" stays SERVING for readers."""
    from logd.server import app as app_module
    read_only = {"now": False}
    monkeypatch.setattr(app_module, "is_read_only_file_system", lambda path: read_only["now"])
    monkeypatch.setattr(app_module, "WRITABLE_CHECK_INTERVAL_S", 0.05)
    server = start_server(tmp_path / "data")
    try:
        assert _health(server.address, "logd.v1.LogService") == SERVING
        read_only["now"] = True
        deadline = time.monotonic() + 5
        while _health(server.address, "logd.v1.LogService") != NOT_SERVING:
            assert time.monotonic() < deadline, "LogService still SERVING on a read-only disk"
            time.sleep(0.02)  # polling the health service
        assert _health(server.address, "") == SERVING
        read_only["now"] = False
        deadline = time.monotonic() + 5
        while _health(server.address, "logd.v1.LogService") != SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)  # polling the health service
    finally:
        server.stop()


def test_no_space_for_the_periodic_index_write_does_not_fail_the_log(tmp_path):
    """The index and checkpoint written after a commit once per interval only shorten
    recovery: out of space there, the append that committed succeeds (its records are
    durable and visible), the log stays writable, and the write is tried again at the
    next interval (it once failed the partition until restart)."""
    from logd.storage import HandleCache, LogConfig, PartitionLog

    fs = FaultInjectingFileSystem()
    now = [0]
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), clock_ms=lambda: now[0], fs=fs,
                            handle_cache=HandleCache(fs=fs), recovery_checkpoint_interval_ms=1_000)
    batch = codec.encode_batch([(1, None, b"value", None)])
    log.append(batch)
    fs.fail("pwrite", "checkpoint", errno.ENOSPC)
    now[0] = 5_000
    info = log.append(batch)  # this commit's periodic checkpoint write hits the full disk
    assert fs.calls["pwrite"] >= 1
    assert not log.failed and log.high_watermark == info.last_offset + 1
    fs.clear()
    log.append(batch)  # within the interval: no retry yet
    now[0] = 10_000
    log.append(batch)  # the next interval: the index and checkpoint are written
    assert (tmp_path / "t-0" / "checkpoint").exists()
    log.close()
    reopened = PartitionLog.open(tmp_path / "t-0", LogConfig())
    assert reopened.log_end_offset == 4
    reopened.close()
