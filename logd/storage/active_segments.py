"""The process-wide cap on open active-segment files, and idle logs parking theirs.

Each partition log keeps its active segment's file open while it is used; with thousands
of partitions that would exhaust the descriptor limit. Every use of a log's active
segment ``touch``es the log in :data:`OPEN_ACTIVE_SEGMENTS`, an LRU shared by every log of
the process; past its capacity the least recently used idle logs are asked to close
their active file (``PartitionLog.park_if_idle``), which they reopen on their next use.
"""

from __future__ import annotations

import resource
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logd.storage.log import PartitionLog


class OpenActiveSegments:
    """The process-wide cap on open active-segment files (one per partition otherwise).

    Every use of a log's active segment ``touch``es the log here (most recent last). When
    more than ``capacity`` logs have their active file open, the least recently used idle
    ones are parked (:meth:`PartitionLog.park_if_idle`: file closed, reopened on next
    use), so a broker with thousands of partitions stays within its descriptor limit.
    The default capacity is half the soft RLIMIT_NOFILE at first use (the rest is for
    older segments' read handles, sockets and the like).

    Thread-safety: one lock guards the LRU; parking is attempted outside it, with a
    non-blocking acquire of the other log's lock, so no lock order is introduced.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._logs: OrderedDict[int, weakref.ref] = OrderedDict()

    def touch(self, log: "PartitionLog") -> None:
        key = id(log)
        with self._lock:
            if key in self._logs:
                self._logs.move_to_end(key)
                return
            self._logs[key] = weakref.ref(log)
            if self.capacity is None:
                self.capacity = _default_open_active_capacity()
            over = len(self._logs) - self.capacity
            if over <= 0:
                return
            # The least recently used ones (never ``log``: it is last), a few spare in
            # case some are busy.
            candidates = [self._logs.popitem(last=False) for _ in range(min(over + 2, len(self._logs) - 1))]
        parked = 0
        still_open = []
        for candidate_key, ref in candidates:
            candidate = ref()
            if candidate is None or candidate.closed:
                continue
            if parked < over and candidate.park_if_idle():
                parked += 1
            else:
                still_open.append((candidate_key, ref))
        if still_open:
            with self._lock:
                for candidate_key, ref in still_open:
                    self._logs[candidate_key] = ref

    def forget(self, log: "PartitionLog") -> None:
        with self._lock:
            self._logs.pop(id(log), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._logs)


def _default_open_active_capacity() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else max(32, soft // 2)


#: The cap shared by every log of the process.
OPEN_ACTIVE_SEGMENTS = OpenActiveSegments()


__all__ = ["OPEN_ACTIVE_SEGMENTS", "OpenActiveSegments"]
