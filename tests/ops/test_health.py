"""Health and lifecycle: NOT_SERVING until recovery is done and while shutting down; the log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logd.server import BrokerServer
from logd.server.health_check import check_health, main as health_main

from .helpers import scrape, value, wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health_status(address: str, service: str = "") -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2).status
        except grpc.RpcError:
            return None


def test_not_serving_until_recovery_is_done(tmp_path):
    """While the broker recovers its logs, health says NOT_SERVING (and the metrics say so); then SERVING."""
    server = BrokerServer(tmp_path / "data", "127.0.0.1:0", grace_s=1.0, metrics_listen="127.0.0.1:0")
    recovering = threading.Event()
    may_finish = threading.Event()
    open_broker = server.broker.open

    def slow_open():
        recovering.set()
        assert may_finish.wait(20)
        return open_broker()

    server.broker.open = slow_open  # recovery that takes as long as the test wants
    starter = threading.Thread(target=server.start)
    starter.start()
    try:
        assert recovering.wait(10)
        address = f"127.0.0.1:{server.port}"
        assert _health_status(address) == NOT_SERVING
        assert _health_status(address, "logd.v1.LogService") == NOT_SERVING
        assert check_health(address) == "NOT_SERVING"
        assert health_main([address]) == 1
        assert value(scrape(server.metrics_address), "logd_broker_serving") == 0
        may_finish.set()
        starter.join(20)
        assert _health_status(address) == SERVING
        assert health_main([address]) == 0
        assert check_health(address, "no.such.Service") == "SERVICE_UNKNOWN"  # answered, not unreachable
        assert value(scrape(server.metrics_address), "logd_broker_serving") == 1
    finally:
        may_finish.set()
        starter.join(20)
        server.stop()
    assert check_health(address, timeout_ms=500).startswith("UNREACHABLE")


def test_not_serving_while_shutting_down(tmp_path):
    """A health watcher sees NOT_SERVING as soon as stop() begins, then the server ends its
    stream (an open watch used to hold the stop for the whole grace period)."""
    server = BrokerServer(tmp_path / "data", "127.0.0.1:0", grace_s=2.0).start()
    channel = grpc.insecure_channel(server.address)
    statuses: list[int] = []
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)

    def read_watch():
        for response in watch:  # until the server ends the stream (an error fails the test)
            statuses.append(response.status)

    reader = threading.Thread(target=read_watch)
    reader.start()
    try:
        wait_until(lambda: statuses == [SERVING], what="SERVING on the watch")
        started = time.monotonic()
        server.stop(grace_s=30)
        # The watch hears NOT_SERVING, then the server ends it: it no longer holds the
        # stop for the whole grace period.
        assert time.monotonic() - started < 15
        reader.join(20)
        assert statuses == [SERVING, NOT_SERVING]
    finally:
        watch.cancel()
        channel.close()
        server.stop()


def test_serve_logs_start_recovery_and_shutdown_as_json(tmp_path):
    """`serve` with log_format json writes one JSON object per line: start, recovery summary with its time, shutdown."""
    data_dir = tmp_path / "data"
    ready = tmp_path / "ready"
    code = (
        "import sys; from pathlib import Path; from logd.server.app import serve; "
        f"sys.exit(serve(Path({str(data_dir)!r}), '127.0.0.1:0', log_format='json', metrics_listen='127.0.0.1:0', "
        f"topic_defaults={{'retention.ms': '1000'}}, ready_callback=lambda a: Path({str(ready)!r}).write_text(a)))"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: ready.exists() and ready.read_text(), timeout_s=20, what="the broker to serve")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    messages = [line["message"] for line in lines]
    recovered = [m for m in messages if m.startswith("recovered ")]
    assert recovered and " s (data dir" in recovered[0], messages
    assert any("listening on" in m and "/metrics" in m for m in messages), messages
    assert any("shutting down" in m for m in messages) and any("stopped" in m for m in messages), messages
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")], lines


def test_serve_refuses_bad_topic_defaults(tmp_path):
    """A bad broker-wide topic default stops `serve` with exit code 1 and one error line naming the key."""
    code = ("import sys; from pathlib import Path; from logd.server.app import serve; "
            f"sys.exit(serve(Path({str(tmp_path / 'd')!r}), '127.0.0.1:0', "
            "topic_defaults={'segment.bytes': '12'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "segment.bytes" in result.stderr and "Traceback" not in result.stderr
