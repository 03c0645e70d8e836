"""A fault-injecting file system for the storage tests (the seam is logd.storage.files)."""

from __future__ import annotations

import threading

from logd.storage.files import FileSystem


class FaultyFileSystem(FileSystem):
    """Fails the Nth fsync from now, or tears the next pwrite after K bytes.

    ``fail_fsync_after(n)``: the (n+1)th fsync from now raises OSError (EIO), and so does
    every later one. ``tear_next_write(k)``: the next pwrite writes only its first ``k``
    bytes, then raises.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fsyncs_left: int | None = None
        self._tear_after: int | None = None
        self.fsync_calls = 0

    def fail_fsync_after(self, successful: int) -> None:
        with self._lock:
            self._fsyncs_left = successful

    def tear_next_write(self, keep_bytes: int) -> None:
        with self._lock:
            self._tear_after = keep_bytes

    def fsync(self, fd: int) -> None:
        with self._lock:
            self.fsync_calls += 1
            if self._fsyncs_left is not None:
                if self._fsyncs_left == 0:
                    raise OSError(5, "injected fsync failure")
                self._fsyncs_left -= 1
        super().fsync(fd)

    def pwrite(self, fd: int, data, position: int) -> None:
        with self._lock:
            tear, self._tear_after = self._tear_after, None
        if tear is not None:
            super().pwrite(fd, memoryview(data)[:tear], position)
            raise OSError(5, "injected torn write")
        super().pwrite(fd, data, position)
