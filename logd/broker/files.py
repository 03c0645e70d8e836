"""Crash-safe small-file writes for the broker's metadata.

``write_atomically`` is the classic sequence: write a temporary file in the same
directory, fsync it, rename it over the target, fsync the directory. After a crash the
target holds either the old or the new content, never a mix; a leftover ``*.tmp`` file is
garbage that the next start removes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename, creation or deletion inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new bytes."""
    # A short random name: ``path.name`` may already be near the 255-byte limit.
    tmp = path.with_name(f".{uuid.uuid4().hex}{TMP_SUFFIX}")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Unlink ``path`` (if present) and make the removal durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
