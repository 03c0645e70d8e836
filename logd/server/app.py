"""The gRPC server around a Broker: ``BrokerServer`` (in-process) and ``serve`` (the CLI's).

Start-up: bind the listen address, start serving with health NOT_SERVING (requests get
UNAVAILABLE meanwhile), open the broker (recovering every log), then report SERVING.
Shutdown (``stop``; SIGTERM/SIGINT in ``serve``): health NOT_SERVING, stop accepting
RPCs, wake long-polling fetches and end open streams (produce, fetch, health watches,
which hear NOT_SERVING first) so they answer at once, let in-flight RPCs finish within
the grace period, then close the logs cleanly (flush, clean-shutdown marker).

Services: logd.v1 TopicService and LogService, grpc.health.v1.Health, server reflection;
logd.v1 GroupService (its coordinator attached once the broker has recovered).

Health: the overall service ``""`` (and each logd service) reports SERVING once recovery
is done, NOT_SERVING before and while shutting down. ``logd.v1.LogService`` alone also
reports NOT_SERVING while the data directory is on a read-only file system (checked at
start and every ``WRITABLE_CHECK_INTERVAL_S``): produce is refused then, but fetches are
still served, so the broker as a whole stays SERVING for readers.

Metrics (``metrics_listen``, off by default): ``logd.server.metrics`` serves /metrics from
before recovery (``logd_broker_serving`` 0) until the logs are closed; its RPC interceptor
and the broker's traffic observer are installed only then, so without it they cost nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import logd
from logd.broker import Broker
from logd.broker.log_cleaner import LogCleanerTask
from logd.broker.producer_state import DEFAULT_PRODUCER_ID_EXPIRATION_MS
from logd.storage import raise_open_file_limit
from logd.storage.files import is_read_only_file_system
from logd_sdk.protocol import log_pb2, log_pb2_grpc, topics_pb2, topics_pb2_grpc

from . import groups
from .log import LogServicer
from .logging_setup import configure_logging
from .metrics import BrokerMetrics
from .topics import TopicServicer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Enough threads that long-polling fetches never starve produce calls.
DEFAULT_MAX_WORKERS = 64
#: Workers that long-held calls (waiting fetches, streams) may never take (see LogServicer).
RESERVED_WORKERS = 16
#: Keepalive pings on idle connections: a client that vanished without closing its
#: connection is noticed within about a minute, and its streams (a worker each) ended.
KEEPALIVE_OPTIONS = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 20_000)]
#: Calls the server holds at once (running or queued for a worker); beyond it gRPC refuses
#: with RESOURCE_EXHAUSTED, which the SDK retries. Without a bound, a client firing calls
#: at will would make the broker buffer every request body it sends.
MAX_CONCURRENT_RPCS = 2 * DEFAULT_MAX_WORKERS
DEFAULT_GRACE_S = 10.0
#: How often the server checks that the data directory is still writable (for health).
WRITABLE_CHECK_INTERVAL_S = 1.0

LOG_SERVICE_NAME = log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name
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
                 grace_s: float = DEFAULT_GRACE_S, clock_ms: Callable[[], int] | None = None,
                 metrics_listen: str | None = None, topic_defaults: Mapping[str, str] | None = None,
                 producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS) -> None:
        """``metrics_listen``: serve Prometheus ``/metrics`` there (off when None; port 0
        picks one, see ``metrics_address``); ``topic_defaults``: broker-wide topic config
        defaults (topic keys: ``retention.ms``...); ``producer_id_expiration_ms``: see ``Broker``."""
        self.data_dir = Path(data_dir)
        self.listen = listen
        self.grace_s = grace_s
        self.retention_check_interval_ms = retention_check_interval_ms
        self.broker = Broker(self.data_dir, flush_policy=flush_policy, clock_ms=clock_ms, topic_defaults=topic_defaults,
                             producer_id_expiration_ms=producer_id_expiration_ms)
        #: Retention and compaction every ``retention_check_interval_ms`` (an extension:
        #: it starts once the broker is open and stops before it closes).
        self.log_cleaner = LogCleanerTask(self.broker.topics, interval_ms=retention_check_interval_ms,
                                          clock_ms=clock_ms)
        self.port: int = 0
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._health = _HealthServicer()
        self._service_names: list[str] = list(SERVICE_NAMES)
        self._extensions: list[object] = [self.log_cleaner]
        self._stopped = False
        self._stop_watch = threading.Event()
        self._write_status = health_pb2.HealthCheckResponse.SERVING
        self.metrics_listen = metrics_listen
        self.metrics_address: str | None = None  # host:port of /metrics once started
        self.metrics: BrokerMetrics | None = None
        if metrics_listen:
            self.metrics = BrokerMetrics(self.broker, self._coordinator, serving=self._serving, clock_ms=clock_ms,
                                         maintenance_stats=self.log_cleaner.stats_snapshot)
            self.broker.traffic = self.metrics.traffic

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
                *KEEPALIVE_OPTIONS,
            ],
            interceptors=[self.metrics.interceptor] if self.metrics is not None else None,
            maximum_concurrent_rpcs=max(MAX_CONCURRENT_RPCS, 2 * self._max_workers),
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        topics_pb2_grpc.add_TopicServiceServicer_to_server(TopicServicer(self.broker), server)
        self._log_servicer = LogServicer(self.broker, max(1, self._max_workers - RESERVED_WORKERS))
        log_pb2_grpc.add_LogServiceServicer_to_server(self._log_servicer, server)
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
            if self.metrics is not None:  # up during recovery: logd_broker_serving 0 says why
                self.metrics_address = self.metrics.serve_http(self.metrics_listen)
            started = time.monotonic()
            self.broker.open()
            for extension in self._extensions:
                if hasattr(extension, "start"):
                    extension.start()
            if self.metrics is not None:
                self.metrics.collector.recovery_seconds = time.monotonic() - started
        except BaseException:
            server.stop(0).wait()
            self.broker.close()
            if self.metrics is not None:
                self.metrics.close()
            raise
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._update_write_health()
        self._writable_watch = threading.Thread(target=self._watch_writable, name="logd-writable-watch", daemon=True)
        self._writable_watch.start()
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Shut down gracefully (see the module docstring). Idempotent."""
        if self._stopped or self._server is None:
            return
        self._stopped = True
        self._stop_watch.set()
        self._health.enter_graceful_shutdown()
        stopped = self._server.stop(self.grace_s if grace_s is None else grace_s)  # no new calls now
        self._health.end_watches()  # else each open Watch holds the stop for the whole grace period
        self.broker.begin_shutdown()
        self._log_servicer.end_streams()
        stopped.wait()
        for extension in reversed(self._extensions):
            if hasattr(extension, "stop"):
                extension.stop()
        self.broker.close()
        if self.metrics is not None:
            self.metrics.close()
        log.info("logd stopped; logs closed cleanly")

    def __enter__(self) -> "BrokerServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _serving(self) -> bool:
        return self.broker.is_open and not self._stopped

    def _coordinator(self):
        """The group coordinator once the group service has started, else None."""
        return next((e.coordinator for e in self._extensions if isinstance(e, groups.GroupServiceExtension)), None)

    def _update_write_health(self) -> None:
        """LogService is NOT_SERVING while the data directory cannot be written."""
        try:
            writable = not (self.broker.read_only or is_read_only_file_system(self.data_dir))
        except OSError:
            writable = False
        status = health_pb2.HealthCheckResponse.SERVING if writable else health_pb2.HealthCheckResponse.NOT_SERVING
        if status != self._write_status:
            self._write_status = status
            self._health.set(LOG_SERVICE_NAME, status)
            if not writable:
                log.warning("data directory %s is read-only: %s reports NOT_SERVING", self.data_dir, LOG_SERVICE_NAME)

    def _watch_writable(self) -> None:
        while not self._stop_watch.wait(WRITABLE_CHECK_INTERVAL_S):
            self._update_write_health()

    def _set_health(self, status) -> None:
        for name in ("", *self._service_names):
            self._health.set(name, status)

    def _add_group_service(self, server: grpc.Server) -> None:
        """Register logd.v1.GroupService; its coordinator attaches once the broker is open
        (it replays ``__consumer_offsets``), and its expiry ticker stops before the broker closes."""
        servicer = groups.add_to_server(server)
        self._service_names.append("logd.v1.GroupService")
        self._extensions.append(groups.GroupServiceExtension(servicer, lambda: groups.coordinator_for_broker(self.broker)))


class _HealthServicer(health.HealthServicer):
    """grpcio's health servicer, whose Watch streams can be ended (at shutdown)."""

    def end_watches(self) -> None:
        """End every open Watch stream, after the status it has yet to send: a response
        callback given None ends its stream (grpcio's own idiom for a closing watch)."""
        try:  # grpcio-health-checking's own state: a later version may name it otherwise
            with self._lock:
                callbacks = [callback for per_service in self._send_response_callbacks.values()
                             for callback in per_service]
        except AttributeError:
            log.warning("cannot end health watches: they hold the shutdown for its grace period")
            return
        for callback in callbacks:
            callback(None)


def serve(data_dir: Path, listen: str = "127.0.0.1:7070", *, flush_policy: str = "group",
          retention_check_interval_ms: int = 5000, log_level: str = "INFO", log_format: str = "text",
          metrics_listen: str | None = None, topic_defaults: Mapping[str, str] | None = None,
          producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
          warnings: Sequence[str] = (), ready_callback: Callable[[str], None] | None = None) -> int:
    """Run a broker until SIGTERM or SIGINT, then shut down gracefully.

    Returns the process exit code: 0 after a graceful shutdown, 1 when the broker could
    not start (address in use, data directory locked or unreadable; one error line is
    logged). ``ready_callback(address)`` is called with the bound ``host:port`` once the
    broker serves. Signal handlers are installed only when called from the main thread.
    The arguments are ``logd.server.config.ServerConfig.serve_kwargs()``; its ``warnings``
    (unknown ``LOGD_*`` variables) are logged once logging is set up, in its format.
    """
    configure_logging(log_level, log_format)
    for warning in warnings:
        log.warning("%s", warning)
    raise_open_file_limit()  # one open log file per partition
    stop_requested = threading.Event()
    previous = _install_signal_handlers(lambda signum, frame: stop_requested.set())
    try:
        try:
            server = BrokerServer(Path(data_dir), listen, flush_policy=flush_policy,
                                  retention_check_interval_ms=retention_check_interval_ms,
                                  metrics_listen=metrics_listen, topic_defaults=topic_defaults,
                                  producer_id_expiration_ms=producer_id_expiration_ms)
            server.start()
        except Exception as exc:  # the reason is for the operator, not a traceback
            log.error("logd cannot start: %s", exc)
            return 1
        log.info("logd %s listening on %s, data in %s (flush policy %s)%s",
                 logd.__version__, server.address, Path(data_dir).resolve(), flush_policy,
                 f", metrics on http://{server.metrics_address}/metrics" if server.metrics_address else "")
        if ready_callback is not None:
            ready_callback(server.address)
        while not stop_requested.wait(1.0):
            pass
        log.info("logd shutting down")
        server.stop()
        return 0
    finally:
        _restore_signal_handlers(previous)


def _install_signal_handlers(handler) -> dict[int, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
