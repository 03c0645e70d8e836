"""Reference-counted file handles and the LRU of read handles of older segments.

A broker with a thousand partitions must not keep every segment open: only the active
segment's log file stays open; an older segment is opened on its first read and kept in
a small process-wide LRU (:class:`HandleCache`). A read in flight holds a reference, so a
handle evicted or a segment deleted meanwhile is closed only when the read is done (on
POSIX the unlinked file stays readable through an open descriptor): a reader never sees
another file's bytes.

Thread-safety: both classes are safe to use from any thread. Lock order: a log's lock may
be held while taking the cache lock, then a handle's lock; never the reverse.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from logd.storage.files import OS_FILE_SYSTEM, FileSystem


class Handle:
    """An open file descriptor with a reference count; the owner holds the first reference."""

    __slots__ = ("fd", "_fs", "_lock", "_refs")

    def __init__(self, fs: FileSystem, fd: int) -> None:
        self.fd = fd
        self._fs = fs
        self._lock = threading.Lock()
        self._refs = 1

    def acquire(self) -> bool:
        """Take a reference; False if the handle is already closed."""
        with self._lock:
            if self._refs == 0:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        """Drop a reference; the last one closes the descriptor."""
        with self._lock:
            self._refs -= 1
            assert self._refs >= 0, "handle released more often than acquired"
            if self._refs:
                return
        self._fs.close(self.fd)


class HandleCache:
    """LRU of read-only handles keyed by file path, at most ``capacity`` owned at once."""

    def __init__(self, capacity: int = 128, fs: FileSystem = OS_FILE_SYSTEM) -> None:
        assert capacity > 0
        self.capacity = capacity
        self._fs = fs
        self._lock = threading.Lock()
        self._handles: OrderedDict[Path, Handle] = OrderedDict()

    def acquire(self, path: Path, fs: FileSystem | None = None) -> Handle:
        """A referenced read handle on ``path`` (opened if needed); ``release()`` it after use."""
        with self._lock:
            handle = self._handles.get(path)
            if handle is not None and handle.acquire():
                self._handles.move_to_end(path)
                return handle
            opener = fs or self._fs
            handle = Handle(opener, opener.open(path, os.O_RDONLY))
            handle.acquire()
            self._handles[path] = handle
            evicted = []
            while len(self._handles) > self.capacity:
                evicted.append(self._handles.popitem(last=False)[1])
        for old in evicted:
            old.release()
        return handle

    def discard(self, path: Path) -> None:
        """Forget ``path`` (its segment was deleted or rewritten); closes when unused."""
        with self._lock:
            handle = self._handles.pop(path, None)
        if handle is not None:
            handle.release()

    def __len__(self) -> int:
        with self._lock:
            return len(self._handles)


#: Shared by every log that is not given its own cache.
DEFAULT_HANDLE_CACHE = HandleCache()
