"""scripts/host_probe.py: the wake-up lateness figures and the probe process."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from host_probe import WakeupProbe, lateness_summary, probe  # noqa: E402
from peers.base import Measurement  # noqa: E402
from peers.report import fairness_notes  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def test_lateness_summary_gives_percentiles_in_ms():
    late_s = [i / 1_000_000 for i in range(1, 1001)]  # 1 us .. 1 ms
    figures = lateness_summary(late_s)
    assert figures == {"samples": 1000, "p50": 0.501, "p99": 0.991, "p999": 1.0, "max": 1.0}
    assert lateness_summary([]) == {"samples": 0}


def test_probe_samples_until_stopped():
    stop = threading.Event()
    first = threading.Event()

    def stop_after_first() -> None:
        first.set()
        stop.set()

    figures = probe(stop, on_first_sample=stop_after_first)
    assert first.is_set() and figures["samples"] >= 1
    assert -0.01 <= figures["p50"] <= figures["p99"] <= figures["p999"] <= figures["max"]


def test_probe_process_reports_its_samples_and_the_notes_show_them():
    with WakeupProbe() as host:
        pass  # __enter__ returns once the probe has taken a sample
    assert host.result is not None and host.result["samples"] >= 1
    assert "late by p50" in host.describe()
    measured = Measurement("logd", "logd", "fsync before ack", True, host_wakeup_late_ms=host.result)
    notes = fairness_notes([measured], records=10, rate_per_s=5000.0, linger_ms=1.0)
    assert f"logd p99 {host.result['p99']}, p99.9 {host.result['p999']}" in notes
