"""The partition's checkpoint file: log start offset, recovery point, clean-shutdown flag.

One small text file ``checkpoint`` in the partition directory, replaced atomically
(tmp + fsync + rename + directory fsync) whenever one of its values changes::

    logd-checkpoint 1 <log_start_offset> <recovery_offset> <recovery_segment>
                      <recovery_position> <clean_shutdown 0|1> <crc32 hex>

(one line; the CRC covers everything before it). Every batch below ``recovery_offset``,
i.e. below byte ``recovery_position`` of segment ``recovery_segment`` (a base offset), was
fsynced and checked, and the index files hold all their entries below that position, so
recovery verifies only from there on. ``clean_shutdown`` is 1 when the log was closed
cleanly (then the recovery point is the end of the log and nothing needs scanning).

A missing or unreadable checkpoint makes recovery verify the whole log (and log a warning).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

from logd.storage.files import FileSystem, read_file, write_file_atomic

logger = logging.getLogger("logd.storage")

CHECKPOINT_FILE = "checkpoint"
_MAGIC = "logd-checkpoint"
_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    log_start_offset: int
    recovery_offset: int
    recovery_segment: int
    recovery_position: int
    clean_shutdown: bool


def write_checkpoint(fs: FileSystem, directory: Path, checkpoint: Checkpoint) -> None:
    body = (
        f"{_MAGIC} {_VERSION} {checkpoint.log_start_offset} {checkpoint.recovery_offset} "
        f"{checkpoint.recovery_segment} {checkpoint.recovery_position} "
        f"{int(checkpoint.clean_shutdown)}"
    )
    line = f"{body} {zlib.crc32(body.encode()):08x}\n"
    write_file_atomic(fs, directory / CHECKPOINT_FILE, line.encode(),
                      crash_points=("checkpoint.tmp_written", "checkpoint.renamed"))


def read_checkpoint(fs: FileSystem, directory: Path) -> Checkpoint | None:
    """The checkpoint, or None if it is missing or invalid (a warning is logged)."""
    path = directory / CHECKPOINT_FILE
    try:
        text = read_file(fs, path).decode("ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("%s: unreadable checkpoint (%s); recovering the whole log", path, exc)
        return None
    body, _, crc = text.strip().rpartition(" ")
    fields = body.split(" ")
    try:
        if zlib.crc32(body.encode()) != int(crc, 16) or fields[:2] != [_MAGIC, str(_VERSION)]:
            raise ValueError("bad CRC or header")
        values = [int(field) for field in fields[2:]]
        if len(values) != 5 or min(values[:4]) < 0 or values[4] not in (0, 1):
            raise ValueError("bad fields")
    except ValueError as exc:
        logger.warning("%s: invalid checkpoint (%s); recovering the whole log", path, exc)
        return None
    return Checkpoint(values[0], values[1], values[2], values[3], bool(values[4]))
