"""Smoke tests of scripts/compare.py's pure parts: the workload, the stats, the report.

No peer server or peer client is needed: the peers package imports those lazily.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import compare  # noqa: E402
from peers import SYSTEMS, make_target  # noqa: E402
from peers.base import Measurement  # noqa: E402
from peers.harness import LatencyProbe, latency_records, run_paced  # noqa: E402
from peers.report import format_table, to_json_object  # noqa: E402
from peers.stats import format_ms, format_rate, percentile, rate_per_s, summarize_latencies  # noqa: E402
from peers.workload import generate  # noqa: E402


def test_workload_is_deterministic_keyed_json_of_about_108_bytes():
    """The same seed gives the same records; values are ~108-byte JSON naming their key's user."""
    first, again, other = generate(5_000, seed=3), generate(5_000, seed=3), generate(5_000, seed=4)
    assert first.keys == again.keys and first.values == again.values
    assert first.values != other.values
    assert first.count == 5_000
    assert 104 <= first.value_bytes_mean <= 112
    for key, value in zip(first.keys, first.values):
        order = json.loads(value)
        assert key == order["user_id"].encode()
        assert 0 <= int(key[5:]) < 10_000
    assert len({json.loads(v)["order_id"] for v in first.values}) == 5_000


def test_workload_spreads_over_the_users_and_refuses_bad_sizes():
    """Keys come from the requested number of users, and most of them occur."""
    workload = generate(20_000, users=100)
    assert {int(k[5:]) for k in workload.keys} == set(range(100))
    with pytest.raises(ValueError):
        generate(0)
    with pytest.raises(ValueError):
        generate(10, users=0)


def test_percentile_interpolates_between_ranks():
    """Known values: linear interpolation as numpy's default method."""
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([0.0, 10.0], 25) == 2.5
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200),
       st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_percentile_is_monotonic_and_bounded(values, q1, q2):
    """Any percentile lies within [min, max], p0 = min, p100 = max, and it never decreases with q."""
    ordered = sorted(values)
    low, high = sorted((q1, q2))
    assert ordered[0] <= percentile(ordered, low) <= percentile(ordered, high) <= ordered[-1]
    assert percentile(ordered, 0) == ordered[0] and percentile(ordered, 100) == ordered[-1]
    assert percentile(ordered, 50) == pytest.approx(statistics.median(ordered))


def test_latency_summary_and_formatting():
    """p50/p99/max/mean of 1..100 ms, rates and ms rendered for the table."""
    summary = summarize_latencies([float(v) for v in range(100, 0, -1)])
    assert (summary.samples, summary.p50_ms, summary.max_ms, summary.mean_ms) == (100, 50.5, 100.0, 50.5)
    assert summary.p99_ms == pytest.approx(99.01)
    assert rate_per_s(1_000, 0.5) == 2_000
    with pytest.raises(ValueError):
        rate_per_s(1, 0)
    assert format_rate(1234567.8) == "1,234,568" and format_rate(None) == "-"
    assert format_ms(0.456) == "0.46" and format_ms(12.34) == "12.3" and format_ms(None) == "-"


def test_latency_probe_matches_in_order_and_skips_the_warmup():
    """Records are matched by position and value; a wrong value fails; warm-up sends are not counted."""
    keys, values = latency_records([b"k0", b"k1"], [b"a", b"b"], rate_per_s=4, seconds=1.5)
    assert values == [b"a", b"b", b"a", b"b", b"a", b"b"] and keys[:2] == [b"k0", b"k1"]
    probe = LatencyProbe(keys, values, rate_per_s=4, warmup_s=0.5)
    for i in range(len(values)):
        probe.mark_sent(i)
    assert probe.on_received([b"a", b"b"]) is False
    assert probe.on_received(iter([b"a", b"b", b"a", b"b"])) is True
    latencies = probe.latencies_ms()
    assert len(latencies) == len(values) - 2 and all(latency >= 0 for latency in latencies)
    wrong = LatencyProbe(keys, values, rate_per_s=4, warmup_s=0)
    with pytest.raises(AssertionError):
        wrong.on_received([b"b"])


def test_run_paced_sends_every_record_once_in_order():
    """The pacer covers [0, count) with contiguous ranges."""
    ranges: list[tuple[int, int]] = []
    run_paced(500, 1_000_000.0, lambda i, j: ranges.append((i, j)))
    assert ranges[0][0] == 0 and ranges[-1][1] == 500
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:]))


def test_table_and_json_show_measured_and_skipped_systems():
    """A measured row has its figures, a skipped one dashes and its reason; the JSON round-trips."""
    ok = Measurement("logd", "logd", "fsync before ack", True, produce_rec_s=500_000.0, consume_rec_s=1e6,
                     latency=summarize_latencies([1.0, 2.0, 3.0]))
    skipped = Measurement("nats-jetstream", "NATS JetStream", "no fsync", False, status="skipped",
                          reason="nats-server not found (apt-get install -y nats-server)")
    table = format_table([ok, skipped])
    assert "500,000" in table and "1,000,000" in table and "2.00" in table
    assert "nats-jetstream: skipped: nats-server not found" in table
    cells = [cell.strip() for cell in table.splitlines()[3].strip("| ").split("|")]
    assert cells[0] == "NATS JetStream (nats-jetstream)" and cells[2:] == ["-"] * 4
    decoded = json.loads(json.dumps(to_json_object([ok, skipped], records=3)))
    assert decoded["records"] == 3
    assert decoded["systems"][0]["e2e_p50_ms"] == 2.0 and decoded["systems"][1]["e2e_p99_ms"] is None


def test_command_line_names_the_systems():
    """--systems accepts the known names only, and each name builds its target."""
    args = compare.parse_args(["--systems", "logd,redis-always", "--records", "10"])
    assert args.systems == ["logd", "redis-always"] and args.records == 10
    with pytest.raises(SystemExit):
        compare.parse_args(["--systems", "kafka"])
    assert [make_target(name).name for name in SYSTEMS] == list(SYSTEMS)
