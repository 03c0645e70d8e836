"""A history of sends and reads, and a checker in the spirit of Jepsen's queue checker.

The crash loop records every operation it performs against the broker:

- a **send**: the producer, the partition, a value unique to the whole run, and its
  outcome: ``ok`` with the acknowledged offset, ``unknown`` (timed out, broker
  unavailable: the record may or may not have been written, as in Kafka) or ``failed``
  (a definite, non-retriable refusal: it must never be read);
- a **poll**: what a consumer read during the run (partition, offset, value), in the
  order it read them, per consumer session;
- the **final read**: every record of every partition from offset 0 to the end, read
  after the last restart.

``check`` then verifies, and names every violation it finds:

1. *lost*: every acknowledged send is in the final read at its offset with its value;
2. *offset reuse*: one value per (partition, offset): no two acknowledged sends share an
   offset, and every record a poll returned during the run is still there, unchanged;
3. *gaps*: the final read of each partition is gap-free from 0 (no retention or
   compaction runs in the crash loop);
4. *non-contiguous polls*: within one consumer session each partition's polled offsets
   go up by exactly one;
5. *garbage*: every value read was sent by someone;
6. *read of a failed send*: a send that definitely failed is never read;
7. *duplicates*: a value appears at most once in the log (acknowledged sends may be
   duplicated by a retry until the broker deduplicates idempotent producers: reported
   separately so a test can tolerate them);
8. *reordered*: each producer's acknowledged sends to one partition have increasing
   offsets in send order.

Thread-safety: ``History`` may be appended to from any thread.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field

OK, UNKNOWN, FAILED = "ok", "unknown", "failed"


@dataclass
class Send:
    producer: str
    partition: int
    value: bytes
    seq: int  # order of the send within its producer
    status: str = UNKNOWN
    offset: int | None = None
    error: str = ""


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    value: bytes | None


class History:
    """Every send and poll of a run (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sends: list[Send] = []
        #: consumer session -> reads in the order the session returned them
        self.polls: dict[str, list[Read]] = defaultdict(list)

    def send(self, producer: str, partition: int, value: bytes, seq: int) -> Send:
        entry = Send(producer, partition, value, seq)
        with self._lock:
            self.sends.append(entry)
        return entry

    @staticmethod
    def complete(entry: Send, status: str, offset: int | None = None, error: str = "") -> None:
        entry.status, entry.offset, entry.error = status, offset, error

    def poll(self, session: str, reads: list[Read]) -> None:
        with self._lock:
            self.polls[session].extend(reads)

    def counts(self) -> Counter:
        return Counter(entry.status for entry in self.sends)


@dataclass
class CheckResult:
    anomalies: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    stats: dict[str, int] = field(default_factory=dict)
    tolerated: set[str] = field(default_factory=set)

    @property
    def valid(self) -> bool:
        return not any(v for k, v in self.anomalies.items() if k not in self.tolerated)

    def add(self, kind: str, message: str) -> None:
        self.anomalies[kind].append(message)

    def summary(self, limit: int = 8) -> str:
        lines = [f"stats: {dict(self.stats)}"]
        for kind, items in sorted(self.anomalies.items()):
            if items:
                tolerated = " (tolerated)" if kind in self.tolerated else ""
                lines.append(f"{kind}{tolerated}: {len(items)}: " + "; ".join(items[:limit]))
        return "\n".join(lines)


def check(history: History, final: dict[int, list[Read]], *, tolerate_duplicates: bool = False) -> CheckResult:
    """Check ``history`` against the ``final`` read of every partition (module docstring)."""
    result = CheckResult()
    if tolerate_duplicates:
        result.tolerated.add("duplicated")
    at: dict[tuple[int, int], bytes | None] = {}
    where: dict[bytes | None, list[tuple[int, int]]] = defaultdict(list)
    for partition, reads in final.items():
        expected = 0
        for read in reads:
            if read.offset != expected:
                result.add("gaps", f"p{partition}: offset {read.offset} follows {expected - 1}")
            expected = read.offset + 1
            at[(partition, read.offset)] = read.value
            where[read.value].append((partition, read.offset))
    sent = {entry.value: entry for entry in history.sends}
    acked_at: dict[tuple[int, int], Send] = {}
    for entry in history.sends:
        copies = where.get(entry.value, [])
        if entry.status == OK:
            key = (entry.partition, entry.offset)
            if key in acked_at:
                result.add("offset reuse", f"{entry.value!r} and {acked_at[key].value!r} both acked at {key}")
            acked_at[key] = entry
            if at.get(key, b"<missing>") != entry.value:
                result.add("lost", f"{entry.value!r} acked at p{key[0]}@{key[1]}, "
                                   f"log holds {at.get(key, '<nothing>')!r}")
        elif entry.status == FAILED and copies:
            result.add("read of a failed send", f"{entry.value!r} ({entry.error}) read at {copies}")
        if len(copies) > 1:
            result.add("duplicated", f"{entry.value!r} ({entry.status}) at {copies}")
    for value, places in where.items():
        if value not in sent:
            result.add("garbage", f"{value!r} at {places} was never sent")
    _check_polls(history, at, result)
    _check_order(history, result)
    counts = history.counts()
    result.stats = {"sends": len(history.sends), "acked": counts[OK], "unknown": counts[UNKNOWN],
                    "failed": counts[FAILED], "records": len(at),
                    "polled": sum(len(reads) for reads in history.polls.values()),
                    "unknown_present": sum(1 for e in history.sends if e.status == UNKNOWN and e.value in where)}
    return result


def _check_polls(history: History, at: dict[tuple[int, int], bytes | None], result: CheckResult) -> None:
    for session, reads in history.polls.items():
        last: dict[int, int] = {}
        for read in reads:
            key = (read.partition, read.offset)
            if at.get(key, b"<missing>") != read.value:
                result.add("offset reuse", f"{session} polled {read.value!r} at p{key[0]}@{key[1]}, "
                                           f"log now holds {at.get(key, '<nothing>')!r}")
            previous = last.get(read.partition)
            if previous is not None and read.offset != previous + 1:
                result.add("non-contiguous polls", f"{session}: p{read.partition} {previous} -> {read.offset}")
            last[read.partition] = read.offset


def _check_order(history: History, result: CheckResult) -> None:
    by_stream: dict[tuple[str, int], list[Send]] = defaultdict(list)
    for entry in history.sends:
        if entry.status == OK:
            by_stream[(entry.producer, entry.partition)].append(entry)
    for (producer, partition), entries in by_stream.items():
        entries.sort(key=lambda e: e.seq)
        for before, after in zip(entries, entries[1:]):
            if after.offset <= before.offset:
                result.add("reordered", f"{producer} p{partition}: {before.value!r}@{before.offset} sent before "
                                        f"{after.value!r}@{after.offset}")
