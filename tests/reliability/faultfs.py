"""A file system seam that fails chosen calls on chosen files (EIO, ENOSPC, torn writes).

``FaultInjectingFileSystem.fail(op, path_part, errno_, times=None, keep_bytes=None)``
makes the calls ``op`` ("pwrite", "fsync", "pread", "ftruncate") on files whose path
contains ``path_part`` raise ``OSError(errno_)``, ``times`` times (None: until
``clear``). For "pwrite", ``keep_bytes`` writes that many bytes first (a torn write).
``calls[op]`` counts the failures injected.

Thread-safety: rules and counters are guarded by a lock.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from logd.storage.files import FileSystem


@dataclass
class Rule:
    op: str
    path_part: str
    errno: int
    times: int | None
    keep_bytes: int | None


class FaultInjectingFileSystem(FileSystem):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[int, str] = {}
        self._rules: list[Rule] = []
        self.calls: Counter = Counter()

    def fail(self, op: str, path_part: str, errno_: int, times: int | None = None,
             keep_bytes: int | None = None) -> None:
        assert op in ("pwrite", "fsync", "pread", "ftruncate"), op
        with self._lock:
            self._rules.append(Rule(op, path_part, errno_, times, keep_bytes))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _fault(self, op: str, fd: int) -> Rule | None:
        with self._lock:
            path = self._paths.get(fd, "")
            for rule in self._rules:
                if rule.op == op and rule.path_part in path:
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times == 0:
                            self._rules.remove(rule)
                    self.calls[op] += 1
                    return rule
        return None

    def open(self, path: Path | str, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        with self._lock:
            self._paths[fd] = os.path.abspath(path)
        return fd

    def close(self, fd: int) -> None:
        with self._lock:
            self._paths.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd: int, data, position: int) -> None:
        rule = self._fault("pwrite", fd)
        if rule is not None:
            if rule.keep_bytes:
                super().pwrite(fd, memoryview(data)[:rule.keep_bytes], position)
            raise OSError(rule.errno, f"injected {os.strerror(rule.errno)} on write")
        super().pwrite(fd, data, position)

    def fsync(self, fd: int) -> None:
        rule = self._fault("fsync", fd)
        if rule is not None:
            raise OSError(rule.errno, f"injected {os.strerror(rule.errno)} on fsync")
        super().fsync(fd)

    def pread(self, fd: int, size: int, position: int) -> bytes:
        rule = self._fault("pread", fd)
        if rule is not None:
            raise OSError(rule.errno, f"injected {os.strerror(rule.errno)} on read")
        return super().pread(fd, size, position)

    def ftruncate(self, fd: int, size: int) -> None:
        rule = self._fault("ftruncate", fd)
        if rule is not None:
            raise OSError(rule.errno, f"injected {os.strerror(rule.errno)} on truncate")
        super().ftruncate(fd, size)
