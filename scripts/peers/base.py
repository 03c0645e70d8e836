"""What every compared system implements, and the driver that measures one.

A :class:`Target` starts its server in a work dir, then :func:`measure` runs three
phases against it, each on a fresh stream or topic:

1. produce: every workload record, with the best batching/pipelining the system's Python
   client offers, timed until the last acknowledgement/confirm has arrived;
2. consume: all of them again from the beginning, timed until the last one is in hand as
   key and value bytes;
3. latency: a paced producer at ``Settings.latency_rate_per_s`` and a live consumer (see
   ``harness``), giving end-to-end p50/p99.

A system that cannot run here (no server binary, no client, the server did not start)
raises :class:`~peers.procs.SkipSystem` and is reported as skipped with the reason; any
other exception marks it failed. The server is always stopped.

Thread safety: one target is measured at a time, from one thread.
"""

from __future__ import annotations

import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from host_probe import WakeupProbe
from peers.harness import LatencyProbe, Progress, latency_records, say
from peers.procs import SkipSystem
from peers.stats import LatencySummary, rate_per_s, summarize_latencies
from peers.workload import Workload


@dataclass(frozen=True)
class Settings:
    """Knobs shared by every target (the command line's options)."""

    latency_rate_per_s: float = 5000.0
    latency_seconds: float = 10.0
    latency_warmup_s: float = 1.0
    linger_ms: float = 1.0
    start_timeout_s: float = 90.0
    stall_timeout_s: float = 60.0
    show_progress: bool = True


@dataclass
class Measurement:
    """One system's row: rates in records/s, latencies in ms; None where not measured."""

    system: str
    label: str
    durability: str
    fsync_before_ack: bool
    status: str = "ok"                    # "ok", "skipped" or "failed"
    reason: str = ""
    produce_rec_s: float | None = None
    consume_rec_s: float | None = None
    latency: LatencySummary | None = None
    #: How late a thread sleeping 1 ms woke during the latency phase (``host_probe``), ms.
    host_wakeup_late_ms: dict[str, float] | None = None
    server_version: str = ""
    notes: list[str] = field(default_factory=list)


class Target:
    """Base class of one compared system; subclasses fill in the class attributes and phases."""

    name = ""              # command-line name, e.g. "redis-always"
    label = ""             # table label, e.g. "Redis Streams"
    durability = ""        # what an acknowledgement means, in a few words
    fsync_before_ack = False
    notes: tuple[str, ...] = ()   # how this system was driven, for the fairness notes

    def check(self) -> None:
        """Raise SkipSystem if the server binary or the Python client is missing."""

    def start(self, workdir: Path, settings: Settings) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def server_version(self) -> str:
        return ""

    def produce(self, workload: Workload, progress: Progress) -> float:
        """Send every record to the "orders" stream; seconds until the last ack."""
        raise NotImplementedError

    def consume(self, count: int, progress: Progress, stall_timeout_s: float) -> float:
        """Read ``count`` records of "orders" from the beginning; seconds taken."""
        raise NotImplementedError

    def latency(self, probe: LatencyProbe, settings: Settings) -> None:
        """Run the paced producer and live consumer of a fresh stream, filling ``probe``."""
        raise NotImplementedError


def measure(target: Target, workload: Workload, settings: Settings, workdir: Path) -> Measurement:
    """Start ``target``'s server, run the three phases, stop it; never raises."""
    result = Measurement(system=target.name, label=target.label, durability=target.durability,
                         fsync_before_ack=target.fsync_before_ack, notes=list(target.notes))
    system_dir = workdir / target.name
    try:
        target.check()
        say(f"[{target.name}] starting the server in {system_dir}")
        started = time.monotonic()
        target.start(system_dir, settings)
        result.server_version = target.server_version()
        say(f"[{target.name}] {result.server_version or 'server'} ready after {time.monotonic() - started:.1f} s")
        progress = Progress(target.name, "produce", workload.count, settings.show_progress)
        result.produce_rec_s = rate_per_s(workload.count, target.produce(workload, progress))
        say(f"[{target.name}] produce: {result.produce_rec_s:,.0f} rec/s")
        progress = Progress(target.name, "consume", workload.count, settings.show_progress)
        result.consume_rec_s = rate_per_s(workload.count, target.consume(workload.count, progress,
                                                                         settings.stall_timeout_s))
        say(f"[{target.name}] consume: {result.consume_rec_s:,.0f} rec/s")
        probe = LatencyProbe(*latency_records(workload.keys, workload.values, settings.latency_rate_per_s,
                                              settings.latency_seconds),
                             settings.latency_rate_per_s, settings.latency_warmup_s)
        say(f"[{target.name}] latency: {probe.count:,} records at {settings.latency_rate_per_s:,.0f} rec/s")
        with WakeupProbe() as host:
            target.latency(probe, settings)
        result.host_wakeup_late_ms = host.result
        result.latency = summarize_latencies(probe.latencies_ms())
        say(f"[{target.name}] e2e p50 {result.latency.p50_ms:.2f} ms, p99 {result.latency.p99_ms:.2f} ms")
    except SkipSystem as exc:
        result.status, result.reason = "skipped", str(exc)
        say(f"[{target.name}] SKIPPED: {exc}")
    except Exception as exc:  # a failing peer must not stop the comparison of the others
        result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        say(f"[{target.name}] FAILED: {result.reason}\n{traceback.format_exc()}")
    finally:
        try:
            target.stop()
        except Exception as exc:
            say(f"[{target.name}] stopping the server failed: {exc}")
        shutil.rmtree(system_dir, ignore_errors=True)
    return result
