"""Measurement helpers shared by every target: progress lines, pacing, latency probes.

End-to-end latency is measured in one process: a producer sends record i at the fixed
rate (record i is due ``i / rate_per_s`` seconds after the start; every record that is
due is sent at each wake-up) and notes ``perf_counter()`` just before handing it to the
client; a consumer, subscribed before the first send, notes ``perf_counter()`` when the
client gives it a batch. Records of one stream arrive in send order, so the j-th record
received is the j-th sent; its value is compared with the workload's to prove it. The
first ``warmup_s`` of sends are not counted (connections and caches warming up).

Thread safety: :class:`LatencyProbe` has one writer per side: ``mark_sent`` from the
producing thread, ``on_received`` from the consuming one; ``latencies_ms`` after both end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Awaitable, Callable, Iterable

PROGRESS_INTERVAL_S = 2.0


class StallError(Exception):
    """A phase made no progress within its stall timeout."""


class Progress:
    """Prints ``phase: n/total (rate)`` to stderr at most every PROGRESS_INTERVAL_S.

    ``update`` is meant to be called per chunk of records (thousands), not per record.
    """

    def __init__(self, system: str, phase: str, total: int, enabled: bool = True) -> None:
        self.system = system
        self.phase = phase
        self.total = total
        self.enabled = enabled
        self.started = time.perf_counter()
        self._next_print = self.started + PROGRESS_INTERVAL_S

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self.enabled and now >= self._next_print:
            self._next_print = now + PROGRESS_INTERVAL_S
            elapsed = now - self.started
            print(f"  [{self.system}] {self.phase}: {done:,}/{self.total:,} ({100.0 * done / self.total:.0f}%, "
                  f"{done / elapsed:,.0f} rec/s)", file=sys.stderr, flush=True)


def say(message: str) -> None:
    """A progress line on stderr (stdout holds the table and the JSON)."""
    print(message, file=sys.stderr, flush=True)


class LatencyProbe:
    """Send and receive times of the latency phase, matched by sequence number."""

    def __init__(self, keys: list[bytes], values: list[bytes], rate_per_s: float, warmup_s: float) -> None:
        assert len(keys) == len(values)
        self.keys = keys
        self.values = values
        self.count = len(values)
        self.warmup_count = min(int(rate_per_s * warmup_s), max(0, self.count - 1))
        self.sent = [0.0] * self.count
        self.received = [0.0] * self.count
        self.received_count = 0

    @property
    def complete(self) -> bool:
        return self.received_count >= self.count

    def mark_sent(self, index: int) -> None:
        self.sent[index] = time.perf_counter()

    def on_received(self, values: Iterable[bytes]) -> bool:
        """Note the arrival of the next records (in order); True once all arrived."""
        now = time.perf_counter()
        j = self.received_count
        expected, received = self.values, self.received
        for value in values:
            if j >= self.count or value != expected[j]:
                raise AssertionError(f"latency record {j}: unexpected value {bytes(value)[:60]!r}")
            received[j] = now
            j += 1
        self.received_count = j
        return j >= self.count

    def latencies_ms(self) -> list[float]:
        assert self.complete, f"only {self.received_count} of {self.count} latency records arrived"
        w = self.warmup_count
        return [(r - s) * 1000.0 for s, r in zip(self.sent[w:], self.received[w:])]


def latency_records(keys: list[bytes], values: list[bytes], rate_per_s: float,
                    seconds: float) -> tuple[list[bytes], list[bytes]]:
    """The workload's first ``rate * seconds`` keys and values (wrapping if it is smaller)."""
    count = max(1, int(rate_per_s * seconds))
    return [keys[i % len(keys)] for i in range(count)], [values[i % len(values)] for i in range(count)]


def run_paced(count: int, rate_per_s: float, send_range: Callable[[int, int], None]) -> None:
    """Call ``send_range(i, j)`` for records [i, j) as they come due at ``rate_per_s``."""
    started = time.perf_counter()
    sent = 0
    while sent < count:
        now = time.perf_counter()
        due = min(count, int((now - started) * rate_per_s) + 1)
        if due > sent:
            send_range(sent, due)
            sent = due
        else:
            time.sleep(started + sent / rate_per_s - now)  # pacing to the fixed rate


async def run_paced_async(count: int, rate_per_s: float, send_range: Callable[[int, int], Awaitable[None]]) -> None:
    """:func:`run_paced` for asyncio clients: ``await send_range(i, j)``."""
    started = time.perf_counter()
    sent = 0
    while sent < count:
        now = time.perf_counter()
        due = min(count, int((now - started) * rate_per_s) + 1)
        if due > sent:
            await send_range(sent, due)
            sent = due
        else:
            await asyncio.sleep(started + sent / rate_per_s - now)


def wait_until(done: Callable[[], bool], progress: Callable[[], int], stall_timeout_s: float,
               what: str, poll_s: float = 0.05) -> None:
    """Block until ``done()``; StallError if ``progress()`` stays unchanged for ``stall_timeout_s``."""
    last, last_change = progress(), time.monotonic()
    while not done():
        time.sleep(poll_s)  # a peer's own thread drives the work; there is no event to wait on
        current = progress()
        if current != last:
            last, last_change = current, time.monotonic()
        elif time.monotonic() - last_change > stall_timeout_s:
            raise StallError(f"{what}: stuck at {current:,} for {stall_timeout_s:.0f} s")


async def wait_event(done: asyncio.Event, progress: Callable[[], int], stall_timeout_s: float, what: str) -> None:
    """Await ``done``; StallError if ``progress()`` stands still for ``stall_timeout_s``."""
    last = progress()
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), stall_timeout_s)
        except asyncio.TimeoutError:
            if progress() == last:
                raise StallError(f"{what}: stuck at {last:,} for {stall_timeout_s:.0f} s") from None
            last = progress()
