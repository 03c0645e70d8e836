"""A topic-partition as the broker holds it: its log and the fetches waiting on it.

Long-polling fetches register a ``threading.Event`` on every partition they read; the
broker calls ``notify`` after each append, which sets them. A fetch registers *before*
its last read, so an append that lands between that read and the wait still wakes it.
A fetch over many partitions waits on one event, so any of them wakes it.

Thread-safe: ``_waiters`` is guarded by ``_waiters_lock``; ``notify`` reads the set's
truthiness without the lock first (a stale answer only means the appender skips a
wake-up for a fetch that registered after the append, and that fetch re-reads anyway).

The idempotent producers' state of the partition (``logd.broker.producer_state``) is
loaded on the first produce that needs it (``producer_state``), under
``_producer_state_lock``, so start-up does not pay for partitions nobody produces to
idempotently; once loaded it is attached to the log, which runs it on every append.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from logd.storage import PartitionLog

    from .producer_state import ProducerStateManager


class Partition:
    __slots__ = ("topic", "index", "log", "_waiters", "_waiters_lock", "_producer_state", "_producer_state_lock")

    def __init__(self, topic: str, index: int, log: "PartitionLog") -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self._waiters: set[threading.Event] = set()
        self._waiters_lock = threading.Lock()
        self._producer_state: "ProducerStateManager | None" = None
        self._producer_state_lock = threading.Lock()

    def producer_state(self, load: "Callable[[PartitionLog], ProducerStateManager]") -> "ProducerStateManager":
        """The producer state, loaded with ``load(log)`` (which attaches it) on first use."""
        state = self._producer_state
        if state is None:
            with self._producer_state_lock:
                if self._producer_state is None:
                    self._producer_state = load(self.log)
                state = self._producer_state
        return state

    def add_waiter(self, event: threading.Event) -> None:
        with self._waiters_lock:
            self._waiters.add(event)

    def remove_waiter(self, event: threading.Event) -> None:
        with self._waiters_lock:
            self._waiters.discard(event)

    @property
    def waiter_count(self) -> int:
        """How many fetches are waiting on this partition now (for tests and metrics)."""
        return len(self._waiters)

    def notify(self) -> None:
        """Wake every fetch waiting on this partition (new data, deletion, shutdown)."""
        if self._waiters:
            with self._waiters_lock:
                for event in self._waiters:
                    event.set()

    def __repr__(self) -> str:
        return f"Partition({self.topic!r}, {self.index})"
