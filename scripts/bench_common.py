"""What bench.py, latency.py and profile_phases.py share: the broker they run and the workload.

``local_broker`` starts ``python -m logd.cli serve`` on a free loopback port with a temp
data dir (metrics on a second port if asked), waits until the grpc.health.v1 service
reports SERVING for "", and on exit stops it by PID (SIGTERM, SIGKILL after 30 s) and
removes the data dir; given ``--bootstrap``'s address instead, it starts nothing. The
workload: keys from ``USERS`` users (so mmh3 partitioning spreads them) and JSON-like
order values of a fixed size. Imported by name: scripts/ is on ``sys.path`` when one of
them runs as a script.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logd_sdk import Admin

USERS = 10_000
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Broker:
    """The broker a run talks to; ``process`` and ``metrics_url`` are None unless started here."""

    address: str
    process: subprocess.Popen | None = None
    metrics_url: str | None = None


@contextlib.contextmanager
def local_broker(prefix: str, bootstrap: str | None = None, metrics: bool = False) -> Iterator[Broker]:
    """The broker at ``bootstrap``, or one started here for the ``with`` block (see the module docstring)."""
    if bootstrap is not None:
        yield Broker(bootstrap)
        return
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    address = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "logd.cli", "serve", "--data-dir", str(data_dir), "--listen", address,
            "--log-level", "WARNING"]
    metrics_address = f"127.0.0.1:{free_port()}" if metrics else None
    if metrics_address:
        argv += ["--metrics-listen", metrics_address]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        _wait_serving(process, address)
        yield Broker(address, process, f"http://{metrics_address}/metrics" if metrics_address else None)
    finally:
        _stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_serving(process: subprocess.Popen, address: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"broker exited with {process.returncode}")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)  # polling the health service until it serves
    raise SystemExit(f"broker did not become ready in {START_DEADLINE_S:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE_S)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def create_topic(address: str, prefix: str, partitions: int) -> str:
    """A new topic ``<prefix>-<epoch ms>`` with ``partitions`` partitions; returns its name."""
    topic = f"{prefix}-{int(time.time() * 1000)}"
    with Admin(address) as admin:
        admin.create_topic(topic, partitions=partitions)
    return topic


def user_keys() -> list[bytes]:
    """One key per user: ``user-00000`` ... ``user-09999``."""
    return [b"user-%05d" % i for i in range(USERS)]


def make_values(count: int, size: int) -> list[bytes]:
    """``count`` JSON order documents, each padded or cut to ``size`` bytes (seeded: the same every run)."""
    rng = random.Random(7)
    values = []
    for i in range(count):
        text = json.dumps({"order_id": 10_000_000 + i, "user": f"user-{rng.randrange(USERS):05d}",
                           "sku": f"SKU-{rng.randrange(10**6):06d}", "qty": rng.randrange(1, 9),
                           "price": round(rng.uniform(1, 500), 2)}, separators=(",", ":"))
        values.append(text.encode().ljust(size, b" ")[:size])
    return values
