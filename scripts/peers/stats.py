"""Small statistics for the comparison: rates, percentiles, latency summaries.

Percentiles interpolate linearly between the two nearest ranks (numpy's default
"linear" method), so p50 of an even-sized sample is the mean of its two middle values.
Everything here is pure and allocation-light; nothing is thread-specific.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of an ascending, non-empty sequence."""
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within [0, 100], got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


@dataclass(frozen=True)
class LatencySummary:
    """End-to-end latencies of one run, in milliseconds."""

    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def summarize_latencies(latencies_ms: Sequence[float]) -> LatencySummary:
    """p50, p99, max and mean of a non-empty sample of latencies (ms)."""
    ordered = sorted(latencies_ms)
    if not ordered:
        raise ValueError("no latency samples")
    return LatencySummary(samples=len(ordered), p50_ms=percentile(ordered, 50), p99_ms=percentile(ordered, 99),
                          max_ms=ordered[-1], mean_ms=sum(ordered) / len(ordered))


def rate_per_s(count: int, seconds: float) -> float:
    """Records per second; ``inf`` is refused (a zero duration means a broken clock read)."""
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    return count / seconds


def format_rate(value: float | None) -> str:
    """``1234567.8`` -> ``"1,234,568"``; None (not measured) -> ``"-"``."""
    return "-" if value is None else f"{value:,.0f}"


def format_ms(value: float | None) -> str:
    """Milliseconds with two significant decimals below 10 ms, one above; None -> ``"-"``."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"
