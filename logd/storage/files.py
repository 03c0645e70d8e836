"""The file-system seam: every write, fsync, rename and unlink of the engine goes here.

The engine never calls ``os.write``/``os.fsync``/``os.rename``/``os.unlink`` directly; it
calls a :class:`FileSystem`. Tests (and a later reliability issue) substitute a subclass
that tears writes or fails the Nth fsync, the way TigerBeetle's testing storage and
SQLite's crash VFS do. Reads also go through it (``pread``) so faults can be injected
there too.

Thread-safety: :class:`FileSystem` is stateless; all methods may be called from any thread.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Callable

from logd.faults import crash_point

#: Told how many seconds each fsync of the real file system took, when set (the server's
#: metrics install it with ``set_fsync_observer``); None costs nothing.
_fsync_observer: Callable[[float], None] | None = None
#: Platforms without ``fdatasync`` (macOS) sync files with ``fsync``.
_FSYNC_ONLY = not hasattr(os, "fdatasync")
#: The descriptors ``fsync_dir`` has open (``fsync`` gives them a full fsync).
_directory_fds: set[int] = set()
#: Buffers per ``pwritev`` call (the kernel refuses more).
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024)  # -1: unknown


def set_fsync_observer(observer: Callable[[float], None] | None) -> Callable[[float], None] | None:
    """Install ``observer`` (process-wide; None removes it); returns the previous one."""
    global _fsync_observer
    previous, _fsync_observer = _fsync_observer, observer
    return previous


class FileSystem:
    """Thin wrappers around the ``os`` calls the engine uses (file descriptors, not objects)."""

    def open(self, path: Path | str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        """Write all of ``data`` at ``position`` (loops over short writes)."""
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, position)
            if written <= 0:
                raise OSError(f"pwrite wrote {written} bytes")
            view = view[written:]
            position += written

    def pwritev(self, fd: int, buffers: list, position: int) -> None:
        """Write ``buffers`` back to back at ``position``, as one ``pwrite`` of their
        concatenation would, without building it (``os.pwritev``; loops over short writes
        and ``IOV_MAX``). A subclass that overrides ``pwrite`` (a test's faulty file
        system) gets the concatenation through its ``pwrite`` instead."""
        if type(self).pwrite is not FileSystem.pwrite:
            self.pwrite(fd, b"".join(buffers), position)
            return
        remaining = sum(map(len, buffers))
        while remaining:
            written = os.pwritev(fd, buffers[:_IOV_MAX], position)
            if written <= 0:
                raise OSError(f"pwritev wrote {written} bytes")
            remaining -= written
            position += written
            if remaining:  # a short write, or more buffers than one call takes
                buffers = _after(buffers, written)

    def pread(self, fd: int, size: int, position: int) -> bytes:
        """Up to ``size`` bytes at ``position`` (fewer only at the end of the file)."""
        data = os.pread(fd, size, position)
        if len(data) == size or not data:
            return data
        parts = [data]
        got = len(data)
        while got < size:
            more = os.pread(fd, size - got, position + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def fsync(self, fd: int) -> None:
        """Make what was written through ``fd`` durable.

        A file gets ``fdatasync``: its data and its size, all that the engine's files need
        (their timestamps are never read), for one metadata write less than ``fsync`` when
        the file grew (a 118 KB append + sync: p50 0.24 ms against 0.29 ms here; Linux
        PostgreSQL syncs its WAL the same way). A directory gets ``fsync``: its entries are
        metadata that ``fdatasync`` need not flush.
        """
        sync = os.fsync if _FSYNC_ONLY or fd in _directory_fds else os.fdatasync
        observer = _fsync_observer
        if observer is None:
            sync(fd)
            return
        started = time.perf_counter()
        sync(fd)
        observer(time.perf_counter() - started)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def file_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def rename(self, source: Path | str, destination: Path | str) -> None:
        os.rename(source, destination)

    def unlink(self, path: Path | str) -> None:
        os.unlink(path)

    def mkdir(self, path: Path | str) -> None:
        os.makedirs(path, exist_ok=True)

    def rmdir(self, path: Path | str) -> None:
        os.rmdir(path)

    def fsync_dir(self, path: Path | str) -> None:
        """Make creations, renames and deletions inside ``path`` durable."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        _directory_fds.add(fd)
        try:
            self.fsync(fd)
        finally:
            _directory_fds.discard(fd)
            os.close(fd)


def _after(buffers: list, written: int) -> list[memoryview]:
    """What remains of ``buffers`` once their first ``written`` bytes are written."""
    views = [view for view in map(memoryview, buffers) if view.nbytes]
    done = 0
    while done < len(views) and written >= views[done].nbytes:
        written -= views[done].nbytes
        done += 1
    views = views[done:]
    if written:
        views[0] = views[0][written:]
    return views


#: The real file system, used unless a test passes another one.
OS_FILE_SYSTEM = FileSystem()


def read_file(fs: FileSystem, path: Path) -> bytes:
    """The whole content of a small file (checkpoints, index files)."""
    fd = fs.open(path, os.O_RDONLY)
    try:
        return fs.pread(fd, fs.file_size(fd), 0)
    finally:
        fs.close(fd)


def write_file_atomic(fs: FileSystem, path: Path, data: bytes,
                      crash_points: tuple[str, str] | None = None) -> None:
    """Replace ``path`` with ``data`` atomically: tmp + fsync + rename + directory fsync.

    ``crash_points``: the names (see :mod:`logd.faults`) of the step after the fsync of
    the tmp file and of the step after the rename, for the reliability suite.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        fs.pwrite(fd, data, 0)
        fs.fsync(fd)
    finally:
        fs.close(fd)
    if crash_points is not None:
        crash_point(crash_points[0])
    fs.rename(tmp, path)
    if crash_points is not None:
        crash_point(crash_points[1])
    fs.fsync_dir(path.parent)


def is_read_only_file_system(path: Path | str) -> bool:
    """True when ``path`` lies on a file system mounted read-only (statvfs ST_RDONLY)."""
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def unlink_if_exists(fs: FileSystem, path: Path) -> bool:
    try:
        fs.unlink(path)
    except FileNotFoundError:
        return False
    return True


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a broker with many partitions keeps
    one open log file per partition). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
