"""A real ``logd serve`` subprocess on a free loopback port, for the e2e and reliability suites.

The broker is started as ``python -m logd.cli serve`` (the CLI users run) with the given
data dir, on ``127.0.0.1:<free port>`` (kept across restarts), its output appended to a
log file. It is ready when the grpc.health.v1 service reports SERVING for "" within a
deadline, and it is stopped by PID: ``stop`` sends SIGTERM, then SIGKILL if it has not
exited in time; ``kill`` sends SIGKILL at once (crash tests). The child gets this
process's environment without its ``LOGD_*`` variables (so only the arguments and the
``env`` given to ``spawn``/``start`` configure it). For crash tests: ``spawn`` (start
without waiting), ``wait_exit`` (the process killed itself at a crash point), and /proc
figures (``rss_kib``, ``open_fds``).

Importable as ``broker_process`` from every test directory: tests/conftest.py puts
tests/ on ``sys.path``. Thread safety: one object is driven by one thread.
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
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BrokerProcess:
    """One broker subprocess on a fixed data dir and port (kept across restarts).

    ``flush_policy`` and ``retention_check_interval_ms`` become the ``serve`` flags of
    those names when given (else the broker's defaults, or a ``--config`` file's values
    in ``extra_args``, apply); ``extra_args`` are appended to the command line.
    """

    def __init__(self, data_dir: Path, log_path: Path, extra_args: list[str] | None = None, *,
                 flush_policy: str | None = None, retention_check_interval_ms: int | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.args = list(extra_args or [])
        if flush_policy is not None:
            self.args += ["--flush-policy", flush_policy]
        if retention_check_interval_ms is not None:
            self.args += ["--retention-check-interval-ms", str(retention_check_interval_ms)]
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, env: dict[str, str] | None = None) -> "BrokerProcess":
        """Start the process without waiting for it to serve; ``env`` is added to its environment."""
        assert not self.alive, "already running"
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
        """Poll the health service until SERVING; RuntimeError (with the log's tail) if the
        process exits first or ``deadline_s`` passes (then it is killed)."""
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
        """SIGTERM, wait; SIGKILL after the deadline. Returns the exit code (None if killed)."""
        if not self.alive:
            return None if self.process is None else self.process.returncode
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def restart(self) -> None:
        """Graceful stop, then start on the same data dir and port."""
        self.stop()
        self.start()

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
