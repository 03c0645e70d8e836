"""A file system that can lose power: what was not fsynced may vanish (SQLite's crash VFS).

:class:`PowerLossFileSystem` is a :class:`logd.storage.files.FileSystem` (the engine's one
seam for writes) that performs every call on the real files, so the engine runs
normally, and keeps beside them a model of what a disk would still hold after a power
cut:

- a file's *durable* content is what it held at its last fsync; every write or
  truncation since is *pending*;
- a directory's *durable* entries are those at its last directory fsync; a creation,
  rename or unlink since then is pending.

``power_loss(target, rng)`` writes the post-cut disk into ``target``: walking the durable
directory entries from the root, each file gets its durable content plus a random
prefix of its pending operations, the last kept write torn at a random byte (the
prefix may be empty: everything unsynced lost). A rename or creation not followed by a
directory fsync is forgotten; an unlink not followed by one is undone. The choices come
from ``rng``, so a seed replays a cut exactly. (A real disk may also reorder writes
within a file; a torn prefix is the model SQLite and TigerBeetle test against.)

fsyncs are not passed to the disk (the model is what matters), which keeps tests fast.

Thread-safety: one lock guards the model; every method may be called from any thread.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from logd.storage.files import FileSystem


@dataclass(eq=False)
class Node:
    is_dir: bool
    durable: bytearray = field(default_factory=bytearray)  # files
    pending: list[tuple] = field(default_factory=list)  # files: ("w", position, bytes) | ("t", size)
    entries: dict[str, "Node"] = field(default_factory=dict)  # directories: the current entries
    durable_entries: dict[str, "Node"] = field(default_factory=dict)  # as of the last directory fsync


def _apply(content: bytearray, op: tuple, keep: int | None = None) -> None:
    """Apply one pending operation (a write cut to ``keep`` bytes when given)."""
    if op[0] == "t":
        del content[op[1]:]
        if len(content) < op[1]:
            content.extend(bytes(op[1] - len(content)))
        return
    _, position, data = op
    if keep is not None:
        data = data[:keep]
    if len(content) < position:
        content.extend(bytes(position - len(content)))
    content[position:position + len(data)] = data


class PowerCut(BaseException):
    """Raised by the call at which ``cut_at`` cut the power (a BaseException: the
    engine's error handling must not run, as it would not without power)."""


class PowerLossFileSystem(FileSystem):
    """The real file system plus the model of what survives a power cut (module docstring).

    Everything under ``root`` at construction counts as durable. Paths outside ``root``
    must not be used. ``cut_at(n, target, rng)`` cuts the power at the n-th mutating
    call from now (before it takes effect): the post-cut disk goes to ``target`` and that
    call raises :class:`PowerCut`; later calls work on the real files, unmodelled.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._tree = self._scan(self.root)
        self._fds: dict[int, Node] = {}
        self.fsyncs = 0
        self._cut: tuple[int, Path, random.Random] | None = None
        self._dead = False
        self.cut_stats: dict[str, int] | None = None

    def cut_at(self, calls: int, target: Path, rng: random.Random) -> None:
        assert calls >= 1
        self._cut = (calls, Path(target), rng)

    def _tick(self) -> None:
        """Count one mutating call; cut the power when it is the chosen one."""
        if self._cut is None:
            return
        with self._lock:
            if self._cut is None:
                return
            calls, target, rng = self._cut
            if calls > 1:
                self._cut = (calls - 1, target, rng)
                return
            self._cut = None
        self.cut_stats = self.power_loss(target, rng)
        self._dead = True
        raise PowerCut()

    @property
    def cut(self) -> bool:
        return self.cut_stats is not None

    def _scan(self, path: Path) -> Node:
        if path.is_dir():
            node = Node(True)
            for child in path.iterdir():
                node.entries[child.name] = self._scan(child)
            node.durable_entries = dict(node.entries)
            return node
        return Node(False, bytearray(path.read_bytes()))

    # -- model helpers (lock held) ---------------------------------------------------------

    def _parent_and_name(self, path: Path | str) -> tuple[Node, str]:
        relative = Path(os.path.abspath(path)).relative_to(self.root)
        node = self._tree
        for part in relative.parts[:-1]:
            node = node.entries[part]
        return node, relative.parts[-1]

    def _node(self, path: Path | str) -> Node:
        if Path(os.path.abspath(path)) == self.root:
            return self._tree
        parent, name = self._parent_and_name(path)
        return parent.entries[name]

    # -- the FileSystem interface ----------------------------------------------------------

    def open(self, path, flags: int, mode: int = 0o644) -> int:
        self._tick()
        if self._dead:
            return super().open(path, flags, mode)
        fd = super().open(path, flags, mode)
        with self._lock:
            parent, name = self._parent_and_name(path)
            node = parent.entries.get(name)
            if node is None:
                node = parent.entries[name] = Node(False)  # created (O_CREAT)
            elif flags & os.O_TRUNC:
                node.pending.append(("t", 0))
            self._fds[fd] = node
        return fd

    def close(self, fd: int) -> None:
        with self._lock:
            self._fds.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd: int, data, position: int) -> None:
        self._tick()
        if self._dead:
            return super().pwrite(fd, data, position)
        super().pwrite(fd, data, position)
        with self._lock:
            self._fds[fd].pending.append(("w", position, bytes(data)))

    def ftruncate(self, fd: int, size: int) -> None:
        self._tick()
        if self._dead:
            return super().ftruncate(fd, size)
        super().ftruncate(fd, size)
        with self._lock:
            self._fds[fd].pending.append(("t", size))

    def fsync(self, fd: int) -> None:
        self._tick()
        if self._dead:
            return
        with self._lock:
            node = self._fds[fd]
            for op in node.pending:
                _apply(node.durable, op)
            node.pending.clear()
            self.fsyncs += 1

    def rename(self, source, destination) -> None:
        self._tick()
        if self._dead:
            return super().rename(source, destination)
        super().rename(source, destination)
        with self._lock:
            source_parent, source_name = self._parent_and_name(source)
            target_parent, target_name = self._parent_and_name(destination)
            target_parent.entries[target_name] = source_parent.entries.pop(source_name)

    def unlink(self, path) -> None:
        self._tick()
        if self._dead:
            return super().unlink(path)
        super().unlink(path)
        with self._lock:
            parent, name = self._parent_and_name(path)
            parent.entries.pop(name, None)

    def mkdir(self, path) -> None:
        self._tick()
        if self._dead:
            return super().mkdir(path)
        path = Path(os.path.abspath(path))
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        super().mkdir(missing[0] if missing else path)
        with self._lock:
            for directory in reversed(missing):
                parent, name = self._parent_and_name(directory)
                parent.entries[name] = Node(True)

    def rmdir(self, path) -> None:
        self._tick()
        if self._dead:
            return super().rmdir(path)
        super().rmdir(path)
        with self._lock:
            parent, name = self._parent_and_name(path)
            parent.entries.pop(name, None)

    def fsync_dir(self, path) -> None:
        self._tick()
        if self._dead:
            return
        with self._lock:
            node = self._node(path)
            node.durable_entries = dict(node.entries)
            self.fsyncs += 1

    # -- the power cut ---------------------------------------------------------------------

    def power_loss(self, target: Path, rng: random.Random) -> dict[str, int]:
        """Write what the disk holds after a cut now into ``target`` (module docstring).
        Returns counts: files written, pending operations kept and dropped."""
        stats = {"files": 0, "kept": 0, "dropped": 0}
        with self._lock:
            self._materialize(self._tree, Path(target), rng, stats)
        return stats

    def _materialize(self, node: Node, path: Path, rng: random.Random, stats: dict[str, int]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name, child in sorted(node.durable_entries.items()):
            if child.is_dir:
                self._materialize(child, path / name, rng, stats)
                continue
            content = bytearray(child.durable)
            keep = rng.randint(0, len(child.pending))
            for op in child.pending[:keep]:
                _apply(content, op)
            if keep < len(child.pending):
                op = child.pending[keep]
                if op[0] == "w" and len(op[2]) > 1:
                    _apply(content, op, rng.randrange(len(op[2])))  # the torn write
            stats["kept"] += keep
            stats["dropped"] += len(child.pending) - keep
            (path / name).write_bytes(bytes(content))
            stats["files"] += 1
