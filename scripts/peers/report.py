"""The comparison's outputs: a text table, fairness notes, a PNG chart, a JSON object.

The table has one row per system: system, durability, produce rec/s, consume rec/s,
e2e p50 and p99 in ms; skipped or failed systems get a row of dashes and their reason
below the table. The chart (matplotlib, Agg backend, imported only when asked for) has
three panels: produce, consume, and e2e p50/p99 (log scale); bars of systems that fsync
before the ack are drawn solid, the others hatched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from peers.base import Measurement
from peers.stats import format_ms, format_rate

HEADERS = ("system", "durability", "produce rec/s", "consume rec/s", "e2e p50 ms", "e2e p99 ms")


def display_name(m: Measurement) -> str:
    return m.server_version or m.label


def table_rows(measurements: Sequence[Measurement]) -> list[tuple[str, ...]]:
    rows = []
    for m in measurements:
        latency = m.latency
        rows.append((f"{display_name(m)} ({m.system})", m.durability, format_rate(m.produce_rec_s),
                     format_rate(m.consume_rec_s), format_ms(latency.p50_ms if latency else None),
                     format_ms(latency.p99_ms if latency else None)))
    return rows


def format_table(measurements: Sequence[Measurement]) -> str:
    """A Markdown table (readable as text too) plus one line per skipped/failed system."""
    rows = [HEADERS, *table_rows(measurements)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(HEADERS))]
    numeric = {2, 3, 4, 5}

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(widths[c]) if c in numeric else cell.ljust(widths[c]) for c, cell in enumerate(row)]
        return "| " + " | ".join(cells) + " |"

    out = [line(rows[0]), "|" + "|".join(("-" * (w + 1) + ":") if c in numeric else "-" * (w + 2)
                                         for c, w in enumerate(widths)) + "|"]
    out += [line(row) for row in rows[1:]]
    for m in measurements:
        if m.status != "ok":
            out.append(f"{m.system}: {m.status}: {m.reason.splitlines()[0] if m.reason else ''}")
    return "\n".join(out)


def fairness_notes(measurements: Sequence[Measurement], records: int, rate_per_s: float,
                   linger_ms: float) -> str:
    """Which systems fsync before the ack, and the conditions every figure shares."""
    durable = [m.system for m in measurements if m.fsync_before_ack]
    not_durable = [m.system for m in measurements if not m.fsync_before_ack]
    lines = [
        "Fairness notes:",
        f"- fsync before the ack: {', '.join(durable) or 'none'}; "
        f"acked before the data is on disk: {', '.join(not_durable) or 'none'}.",
        f"- Same {records:,} records for every system (keys from 10,000 users, ~108-byte JSON values), "
        "one stream/topic/partition each, one client process; server and client share this machine's cores; "
        "the pre-generated records are frozen out of the client's garbage collector (gc.freeze).",
        "- Produce: best batching the Python client offers, timed until every ack/confirm arrived. "
        "Consume: from the beginning, until every record is in hand as key and value.",
        f"- Latency: send -> receive in one process at {rate_per_s:,.0f} rec/s; producer linger "
        f"{linger_ms:g} ms where the client has one (logd), others send each record when due.",
    ]
    wakeups = [f"{m.system} p99 {m.host_wakeup_late_ms['p99']}, p99.9 {m.host_wakeup_late_ms['p999']}"
               for m in measurements if m.host_wakeup_late_ms and m.host_wakeup_late_ms.get("samples")]
    if wakeups:
        lines.append("- How late the host woke a thread sleeping 1 ms during each latency phase (ms; a "
                     "separate process, scripts/host_probe.py): " + "; ".join(wakeups) + ".")
    for m in measurements:
        lines.extend(f"- {m.system}: {note}" for note in m.notes)
    return "\n".join(lines)


def to_json_object(measurements: Sequence[Measurement], **run: object) -> dict:
    """The run's settings (``run``) and one object per system (LatencySummary inlined)."""
    systems = []
    for m in measurements:
        entry = dataclasses.asdict(m)
        latency = entry.pop("latency")
        entry["e2e_p50_ms"] = latency["p50_ms"] if latency else None
        entry["e2e_p99_ms"] = latency["p99_ms"] if latency else None
        entry["e2e_max_ms"] = latency["max_ms"] if latency else None
        entry["e2e_samples"] = latency["samples"] if latency else 0
        systems.append(entry)
    return {**run, "systems": systems}


def write_chart(measurements: Sequence[Measurement], path: Path, title: str) -> None:
    """Three bar panels (produce, consume, latency) for the systems that were measured."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    measured = [m for m in measurements if m.status == "ok"]
    names = [f"{display_name(m)}\n{m.system}" for m in measured]
    colors = ["#1f77b4" if m.system == "logd" else "#7f7f7f" for m in measured]
    hatches = ["" if m.fsync_before_ack else "//" for m in measured]
    fig, axes = plt.subplots(1, 3, figsize=(16, max(3.0, 0.8 * len(measured) + 1.6)))
    panels = (("produce (rec/s, higher is better)", [m.produce_rec_s or 0 for m in measured]),
              ("consume from the beginning (rec/s, higher is better)", [m.consume_rec_s or 0 for m in measured]))
    positions = list(range(len(measured)))
    for ax, (panel_title, values) in zip(axes[:2], panels):
        bars = ax.barh(positions, values, color=colors, edgecolor="black")
        for bar, hatch, value in zip(bars, hatches, values):
            bar.set_hatch(hatch)
            ax.text(value, bar.get_y() + bar.get_height() / 2, f" {value:,.0f}", va="center", fontsize=8)
        ax.set_title(panel_title, fontsize=10)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x / 1000:,.0f}k" if x else "0"))
        ax.margins(x=0.25)
    ax = axes[2]
    height = 0.38
    p50 = [m.latency.p50_ms if m.latency else 0 for m in measured]
    p99 = [m.latency.p99_ms if m.latency else 0 for m in measured]
    ax.barh([p - height / 2 for p in positions], p50, height, color="#9ecae1", edgecolor="black")
    ax.barh([p + height / 2 for p in positions], p99, height, color="#e6550d", edgecolor="black")
    for p, a, b in zip(positions, p50, p99):
        ax.text(a, p - height / 2, f" {a:.2f}", va="center", fontsize=8)
        ax.text(b, p + height / 2, f" {b:.2f}", va="center", fontsize=8)
    ax.set_title("end-to-end latency, ms: p50 (light), p99 (dark); log scale", fontsize=10)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.set_xlim(left=max(0.01, min([v for v in p50 if v > 0], default=0.1) / 3),
                right=max(p99 + [1.0]) * 6)
    for ax in axes:
        ax.set_yticks(positions)
        ax.set_yticklabels(names if ax is axes[0] else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
    fig.suptitle(title + "   (hatched: acknowledged before fsync)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
