"""Start, stop, restart, health, reflection and the `serve` entry point."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from logd.broker import BrokerError
from logd.broker.metadata import MetadataError
from logd_sdk.protocol import common_pb2, log_pb2

from .helpers import RPC_TIMEOUT_S, batch, connect, connect_address, decode_values, start_server


def test_restart_keeps_topics_configs_and_data(data_dir):
    """Topics, their configs, partitions, records and producer ids survive a stop and a start."""
    server = start_server(data_dir)
    client = connect(server)
    client.create("keep", 2, retention_ms="123456")
    client.produce("keep", 1, batch(b"a", b"b"))
    client.produce("keep", 1, batch(b"c"))
    first_id = client.log.InitProducerId(log_pb2.InitProducerIdRequest(), timeout=RPC_TIMEOUT_S).producer_id
    client.channel.close()
    server.stop()

    server = start_server(data_dir)
    try:
        client = connect(server)
        assert client.list_topics() == ["keep"]
        description = client.describe("keep")
        assert description.config["retention.ms"] == "123456"
        assert [p.log_end_offset for p in description.partitions] == [0, 3]
        assert decode_values(client.fetch("keep", 1, 0).batches) == [(0, b"a"), (1, b"b"), (2, b"c")]
        assert client.produce("keep", 1, batch(b"d")).base_offset == 3
        next_id = client.log.InitProducerId(log_pb2.InitProducerIdRequest(), timeout=RPC_TIMEOUT_S).producer_id
        assert next_id > first_id
        client.channel.close()
    finally:
        server.stop()


def test_health_and_reflection(client):
    """The overall health is SERVING and reflection lists the logd, health and reflection services."""
    health = health_pb2_grpc.HealthStub(client.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT_S).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="logd.v1.LogService"), timeout=RPC_TIMEOUT_S).status == \
        health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=RPC_TIMEOUT_S)
    names = {service.name for response in responses for service in response.list_services_response.service}
    assert {"logd.v1.TopicService", "logd.v1.LogService", "grpc.health.v1.Health"} <= names
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="logd.v1.LogService")
    (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=RPC_TIMEOUT_S))
    assert response.file_descriptor_response.file_descriptor_proto  # grpcurl can describe it


def test_second_broker_on_same_data_dir_is_refused(server, client):
    """A data directory is locked by its broker; a second one fails to start and the first keeps serving."""
    with pytest.raises(BrokerError, match="in use"):
        start_server(server.data_dir)
    client.create("still", 1)
    assert client.list_topics() == ["still"]


def test_stop_answers_waiting_fetches_promptly(data_dir):
    """A long-poll in flight when the server stops answers at once instead of holding shutdown."""
    server = start_server(data_dir, grace_s=30.0)  # a fetch that held the stop would take the 30 s
    client = connect(server)
    client.create("w", 1)
    answer = {}
    thread = threading.Thread(target=lambda: answer.setdefault("r", client.fetch("w", 0, 0, max_wait_ms=30_000)))
    thread.start()
    partition = server.broker.topics.get("w").partitions[0]
    deadline = time.monotonic() + 10
    while partition.waiter_count == 0:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10
    thread.join(timeout=5)
    assert answer["r"].batches == b""
    client.channel.close()


def test_leftovers_of_interrupted_operations_are_cleared(data_dir):
    """At start a -delete dir is removed, an unaccounted partition dir is set aside, a .tmp file dropped."""
    server = start_server(data_dir)
    client = connect(server)
    client.create("t", 1)
    client.produce("t", 0, batch(b"x"))
    client.channel.close()
    server.stop()
    (data_dir / "t-1").mkdir()                     # a crash during create_partitions
    (data_dir / "gone-0").mkdir()                  # a crash during create or delete
    (data_dir / "old-0.abc-delete").mkdir()        # a crash during deletion
    (data_dir / "topics" / ".0123.tmp").write_text("{")    # a crash during a metadata write
    server = start_server(data_dir)
    try:
        names = sorted(p.name for p in data_dir.iterdir())
        assert "old-0.abc-delete" not in names and "t-1" not in names and "gone-0" not in names
        assert len([n for n in names if n.endswith("-stray")]) == 2
        assert not (data_dir / "topics" / ".0123.tmp").exists()
        client = connect(server)
        assert [p.log_end_offset for p in client.describe("t").partitions] == [1]
        client.create("gone", 1)  # the set-aside directory does not leak into a new topic
        assert client.describe("gone").partitions[0].log_end_offset == 0
        client.channel.close()
    finally:
        server.stop()


def test_unreadable_metadata_fails_start_naming_the_file(data_dir):
    """A damaged topic metadata file stops the start with a message that names the file."""
    server = start_server(data_dir)
    connect(server).create("t", 1)
    server.stop()
    (data_dir / "topics" / "t.json").write_text("{not json")
    with pytest.raises(MetadataError, match="t.json"):
        start_server(data_dir)


def _serve_process(data_dir: Path, listen: str, ready_file: Path) -> subprocess.Popen:
    code = (
        "import sys; from pathlib import Path; from logd.server import serve;"
        f"sys.exit(serve(Path({str(data_dir)!r}), {listen!r}, flush_policy='always',"
        f" ready_callback=lambda a: Path({str(ready_file)!r}).write_text(a)))"
    )
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.01)
    return path.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_zero_on_signal_and_keeps_data(tmp_path, signum):
    """`serve` logs its address, serves, and on SIGTERM/SIGINT shuts down cleanly with exit code 0."""
    data_dir = tmp_path / "data"
    process = _serve_process(data_dir, "127.0.0.1:0", tmp_path / "ready")
    try:
        address = _wait_for(tmp_path / "ready", process)
        client = connect_address(address)
        client.create("s", 1)
        assert client.produce("s", 0, batch(b"kept")).error.code == common_pb2.NONE
        client.channel.close()
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        stderr = process.stderr.read()
        assert f"listening on {address}" in stderr and "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    server = start_server(data_dir)
    try:
        assert decode_values(connect(server).fetch("s", 0, 0).batches) == [(0, b"kept")]
    finally:
        server.stop()


def test_serve_returns_one_when_address_in_use(tmp_path, server):
    """`serve` on a taken port logs one error line and returns 1 instead of raising."""
    process = _serve_process(tmp_path / "other", server.address, tmp_path / "ready")
    assert process.wait(timeout=30) == 1
    stderr = process.stderr.read()
    assert "cannot start" in stderr and "Traceback" not in stderr
