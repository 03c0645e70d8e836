"""The gRPC server around a Broker: ``BrokerServer`` (in-process) and ``serve`` (the CLI's).

Start-up: bind the listen address, start serving with health NOT_SERVING (requests get
UNAVAILABLE meanwhile), open the broker (recovering every log), then report SERVING.
Shutdown (``stop``; SIGTERM/SIGINT in ``serve``): health NOT_SERVING, stop accepting
RPCs, wake long-polling fetches so they answer at once, let in-flight RPCs finish
within the grace period, then close the logs cleanly (flush, clean-shutdown marker).

Services: logd.v1 TopicService and LogService, grpc.health.v1.Health, server reflection;
logd.v1 GroupService (its coordinator attached once the broker has recovered).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import logd
from logd.broker import Broker
from logd.storage import raise_open_file_limit
from logd_sdk.protocol import log_pb2, log_pb2_grpc, topics_pb2, topics_pb2_grpc

from . import errors, groups
from .log import LogServicer
from .topics import TopicServicer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Enough threads that long-polling fetches never starve produce calls.
DEFAULT_MAX_WORKERS = 64
#: Workers that long-polling fetches may never all take (see LogServicer).
RESERVED_WORKERS = 16
DEFAULT_GRACE_S = 10.0

SERVICE_NAMES = (
    topics_pb2.DESCRIPTOR.services_by_name["TopicService"].full_name,
    log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
)


class BrokerServer:
    """A broker serving gRPC on ``listen`` (port 0 picks a free port, see ``port``).

    ``start()`` returns once the broker has recovered and reports SERVING; ``stop()``
    shuts down gracefully. Usable as a context manager. Not restartable: make a new one.
    """

    def __init__(self, data_dir: Path, listen: str = "127.0.0.1:0", *, flush_policy: str = "group",
                 retention_check_interval_ms: int = 5000, max_workers: int = DEFAULT_MAX_WORKERS,
                 grace_s: float = DEFAULT_GRACE_S, clock_ms: Callable[[], int] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.listen = listen
        self.grace_s = grace_s
        # TODO(issue 5): the retention/compaction task runs every this many ms.
        self.retention_check_interval_ms = retention_check_interval_ms
        self.broker = Broker(self.data_dir, flush_policy=flush_policy, clock_ms=clock_ms)
        self.port: int = 0
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._health = health.HealthServicer()
        self._service_names: list[str] = list(SERVICE_NAMES)
        self._extensions: list[object] = []
        self._stopped = False

    @property
    def address(self) -> str:
        """``host:port`` as bound (the real port when ``listen`` asked for port 0)."""
        return f"{self.listen.rsplit(':', 1)[0]}:{self.port}"

    def start(self) -> "BrokerServer":
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="logd-rpc"),
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # Without this, a second broker on the same port would share it silently.
                ("grpc.so_reuseport", 0),
            ],
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        topics_pb2_grpc.add_TopicServiceServicer_to_server(TopicServicer(self.broker), server)
        log_pb2_grpc.add_LogServiceServicer_to_server(
            LogServicer(self.broker, max(1, self._max_workers - RESERVED_WORKERS)), server)
        self._add_group_service(server)
        reflection.enable_server_reflection(
            (*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            self.port = server.add_insecure_port(self.listen)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.listen}: {exc}") from None
        server.start()
        self._server = server
        try:
            self.broker.open()
            for extension in self._extensions:
                if hasattr(extension, "start"):
                    extension.start()
        except BaseException:
            server.stop(0).wait()
            self.broker.close()
            raise
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Shut down gracefully (see the module docstring). Idempotent."""
        if self._stopped or self._server is None:
            return
        self._stopped = True
        self._health.enter_graceful_shutdown()
        stopped = self._server.stop(self.grace_s if grace_s is None else grace_s)
        self.broker.begin_shutdown()
        stopped.wait()
        for extension in reversed(self._extensions):
            if hasattr(extension, "stop"):
                extension.stop()
        self.broker.close()
        log.info("logd stopped; logs closed cleanly")

    def __enter__(self) -> "BrokerServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _set_health(self, status) -> None:
        for name in ("", *self._service_names):
            self._health.set(name, status)

    def _add_group_service(self, server: grpc.Server) -> None:
        """Register logd.v1.GroupService; its coordinator attaches once the broker is open
        (it replays ``__consumer_offsets``), and its expiry ticker stops before the broker closes."""
        servicer = groups.add_to_server(server)
        self._service_names.append("logd.v1.GroupService")
        self._extensions.append(groups.GroupServiceExtension(servicer, lambda: groups.coordinator_for_broker(self.broker)))


def serve(data_dir: Path, listen: str = "127.0.0.1:7070", *, flush_policy: str = "group",
          retention_check_interval_ms: int = 5000, log_level: str = "INFO",
          ready_callback: Callable[[str], None] | None = None) -> int:
    """Run a broker until SIGTERM or SIGINT, then shut down gracefully.

    Returns the process exit code: 0 after a graceful shutdown, 1 when the broker could
    not start (address in use, data directory locked or unreadable; one error line is
    logged). ``ready_callback(address)`` is called with the bound ``host:port`` once the
    broker serves. Signal handlers are installed only when called from the main thread.
    """
    _configure_logging(log_level)
    raise_open_file_limit()  # one open log file per partition
    stop_requested = threading.Event()
    previous = _install_signal_handlers(lambda signum, frame: stop_requested.set())
    try:
        server = BrokerServer(Path(data_dir), listen, flush_policy=flush_policy,
                              retention_check_interval_ms=retention_check_interval_ms)
        try:
            server.start()
        except Exception as exc:  # the reason is for the operator, not a traceback
            log.error("logd cannot start: %s", exc)
            return 1
        log.info("logd %s listening on %s, data in %s (flush policy %s)",
                 logd.__version__, server.address, Path(data_dir).resolve(), flush_policy)
        if ready_callback is not None:
            ready_callback(server.address)
        while not stop_requested.wait(1.0):
            pass
        log.info("logd shutting down")
        server.stop()
        return 0
    finally:
        _restore_signal_handlers(previous)


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(numeric)


def _install_signal_handlers(handler) -> dict[int, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
