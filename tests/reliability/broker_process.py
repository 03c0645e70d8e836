"""A real ``logd serve`` subprocess for the reliability suite: crash it, restart it.

Like ``tests/e2e/e2e_broker.py`` (``python -m logd.cli serve`` on a free loopback port,
ready when grpc.health.v1 reports SERVING) plus what crash tests need: extra environment
(``LOGD_CRASH_POINT``), the flush policy and retention interval as arguments, ``kill``
(SIGKILL by PID) and ``wait_exit`` (the process killed itself at a crash point).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 15.0

#: Held while a broker subprocess is forked. A forked child holds copies of the parent's
#: descriptors until it execs, which keeps a data directory's flock held for a moment: a
#: test that opens brokers in-process while others spawn in threads takes it too.
SPAWN_LOCK = threading.Lock()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BrokerProcess:
    """One broker subprocess on a fixed data dir and port (kept across restarts)."""

    def __init__(self, data_dir: Path, log_path: Path, *, flush_policy: str = "group",
                 retention_check_interval_ms: int = 5000, extra_args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.args = ["--flush-policy", flush_policy,
                     "--retention-check-interval-ms", str(retention_check_interval_ms), *(extra_args or [])]
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self, env: dict[str, str] | None = None) -> "BrokerProcess":
        """Start the process without waiting for it to serve."""
        assert self.process is None or self.process.poll() is not None, "already running"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LOGD_")}
        environment.update(env or {})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {env or ''}\n".encode())
            log.flush()
            with SPAWN_LOCK:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "logd.cli", "serve", "--data-dir", str(self.data_dir),
                     "--listen", self.address, "--log-level", "WARNING", *self.args],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment)
        return self

    def start(self, env: dict[str, str] | None = None) -> "BrokerProcess":
        """Start and wait until it reports SERVING."""
        self.spawn(env)
        self.wait_ready()
        return self

    def wait_ready(self, deadline_s: float = START_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"logd serve exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"logd serve not SERVING within {deadline_s} s: {self.log_tail()}")
                time.sleep(0.02)  # polling interval of the readiness check

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_exit(self, timeout_s: float) -> int | None:
        """The exit code once the process ended within ``timeout_s``, else None."""
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL (by PID) and reap."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_DEADLINE_S)

    def stop(self) -> int | None:
        """SIGTERM, wait; SIGKILL after the deadline. Returns the exit code."""
        if not self.alive:
            return None if self.process is None else self.process.returncode
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def status_of(self, pid_file: str) -> dict[str, str]:
        """``/proc/<pid>/<pid_file>`` as a dict (e.g. "status": VmRSS...)."""
        out = {}
        for line in Path(f"/proc/{self.pid}/{pid_file}").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
        return out

    def rss_kib(self) -> int:
        return int(self.status_of("status")["VmRSS"].split()[0])

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""
