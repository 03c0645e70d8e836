"""Named crash points: places inside multi-step operations where a test makes logd die.

A multi-step operation on disk (roll a segment, delete segments, replace a checkpoint,
delete a topic, write metadata, swap a cleaned segment) calls ``crash_point(name)``
between its steps. Normally that does nothing. A test arms one point in two ways:

- **In a subprocess** (``logd serve``): the environment variable
  ``LOGD_CRASH_POINT=<name>`` or ``<name>:<n>`` makes the process SIGKILL itself at the
  first (or the n-th) time it reaches that point: no ``finally``, no flush, no clean
  shutdown, exactly as ``kill -9`` at that instant. The variable is read once, at import.
- **In-process**: ``set_hook(fn)`` installs ``fn(name)``, called at every point (armed or
  not); it typically raises a ``BaseException`` subclass such as :class:`CrashPointReached`
  so that ``except Exception`` handlers do not run, as they would not in a killed process.

Cost when nothing is armed: one function call and one global read per point.

Every point is listed in :data:`CRASH_POINTS` with the state a restarted broker must
reach (``old``: as if the operation never started, ``new``: as if it completed,
``either``: one or the other, never a mix); the reliability suite iterates over them.
``crash_point`` checks the name only when armed or hooked (a typo fails the test run).

Thread-safety: ``crash_point`` may be called from any thread; the hit counter of the
armed point is guarded by a lock.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

ENV_VAR = "LOGD_CRASH_POINT"

#: name -> (what has happened when it is reached, state after a crash there).
CRASH_POINTS: dict[str, tuple[str, str]] = {
    # PartitionLog._roll_locked (logd/storage/log.py)
    "roll.old_segment_synced": ("the full segment and its indexes are fsynced; no new file yet", "old"),
    "roll.new_segment_created": ("the new segment file exists; its directory entry is not fsynced", "either"),
    "roll.directory_synced": ("the new segment is durable; the checkpoint still names the old one", "new"),
    # PartitionLog._delete_leading_locked (retention and delete_records_before)
    "retention.start_offset_checkpointed": ("the new log start offset is in the checkpoint; "
                                            "no segment deleted yet", "new"),
    "retention.segment_deleted": ("one more leading segment unlinked (counts per segment)", "new"),
    "retention.segments_deleted": ("every doomed segment unlinked; directory not fsynced", "new"),
    # logd.storage.checkpoint.write_checkpoint (the partition's offsets checkpoint)
    "checkpoint.tmp_written": ("checkpoint.tmp written and fsynced, not renamed", "either"),
    "checkpoint.renamed": ("checkpoint.tmp renamed over checkpoint; directory not fsynced", "either"),
    # TopicManager.delete (logd/broker/topics.py)
    "topic_delete.marked": ("the deletion marker is written; the topic's metadata is still there", "old"),
    "topic_delete.metadata_removed": ("the topic's metadata file is removed (the commit point)", "new"),
    "topic_delete.directories_renamed": ("the partition directories are renamed to -delete", "new"),
    "topic_delete.partition_removed": ("one -delete directory removed (counts per partition)", "new"),
    # MetadataStore.write (logd/broker/metadata.py): create, create_partitions, alter
    "metadata.tmp_written": ("the new metadata is in a fsynced temporary file, not renamed", "old"),
    "metadata.renamed": ("the metadata file is replaced; directory not fsynced", "either"),
    # logd/storage/swap.py: the compaction swap (its own names, prefixed with "swap.")
    "swap.cleaned_partial": ("the cleaned log is written, its indexes are not", "old"),
    "swap.cleaned_written": ("every .cleaned file written and fsynced", "old"),
    "swap.swap_renamed": (".log.cleaned renamed to .log.swap, directory not fsynced", "new"),
    "swap.swap_committed": ("directory fsynced: the commit point", "new"),
    "swap.old_segment_deleted": ("the first old segment's files unlinked", "new"),
    "swap.old_segments_deleted": ("every old segment unlinked, directory fsynced", "new"),
    "swap.log_renamed": (".log.swap renamed to <base>.log", "new"),
    "swap.indexes_renamed": ("the index files renamed into place", "new"),
    "swap.swap_done": ("directory fsynced", "new"),
}


class CrashPointReached(BaseException):
    """Raised by :func:`raise_at` hooks: a simulated crash (not an ``Exception``, so that
    error handling does not run, as it would not in a killed process)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def parse_spec(spec: str) -> tuple[str, int]:
    """``"name"`` or ``"name:n"`` -> (name, n >= 1). Raises ValueError when malformed."""
    name, _, count = spec.strip().partition(":")
    hit = int(count) if count else 1
    if name not in CRASH_POINTS or hit < 1:
        raise ValueError(f"{ENV_VAR}={spec!r}: unknown crash point or bad count; "
                         f"known points: {', '.join(CRASH_POINTS)}")
    return name, hit


def _armed_from_env() -> tuple[str, int] | None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return None
    try:
        return parse_spec(spec)
    except ValueError as exc:
        # A typo must not silently disarm a crash test: refuse to run at all.
        print(f"logd: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_armed: tuple[str, int] | None = _armed_from_env()
_hits = 0
_hits_lock = threading.Lock()
_hook: Callable[[str], None] | None = None


def crash_point(name: str) -> None:
    """Mark step ``name`` of an operation (see the module docstring)."""
    if _armed is None and _hook is None:
        return
    _reached(name)


def _reached(name: str) -> None:
    global _hits
    assert name in CRASH_POINTS, f"unknown crash point {name!r}"
    hook = _hook
    if hook is not None:
        hook(name)
    armed = _armed
    if armed is None or armed[0] != name:
        return
    with _hits_lock:
        _hits += 1
        if _hits != armed[1]:
            return
    sys.stderr.write(f"logd: crash point {name} reached (hit {armed[1]}): SIGKILL\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def set_hook(hook: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Install ``hook(name)``, called at every crash point (None removes it); returns the
    previous hook. For in-process tests."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def raise_at(name: str, hit: int = 1) -> Callable[[str], None]:
    """A hook that raises :class:`CrashPointReached` the ``hit``-th time ``name`` is reached."""
    assert name in CRASH_POINTS, name
    seen = 0
    lock = threading.Lock()

    def hook(reached: str) -> None:
        nonlocal seen
        if reached != name:
            return
        with lock:
            seen += 1
            fire = seen == hit
        if fire:
            raise CrashPointReached(name)
    return hook


def armed() -> tuple[str, int] | None:
    """The point armed by the environment and its hit number, or None."""
    return _armed


__all__ = ["CRASH_POINTS", "ENV_VAR", "CrashPointReached", "armed", "crash_point", "parse_spec", "raise_at",
           "set_hook"]
