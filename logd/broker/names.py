"""Topic names (Kafka's rules) and the partition directory names built from them.

A topic name is 1-249 characters of ``[a-zA-Z0-9._-]``, not ``.`` or ``..``. Names that
start with ``__`` are internal: only the broker itself creates them (the group
coordinator keeps committed offsets in ``__consumer_offsets``).

A partition lives in ``<data-dir>/<topic>-<partition>/`` (as in Kafka). The last ``-``
separates the partition number, so every topic name maps to distinct directories.
"""

from __future__ import annotations

import re

MAX_TOPIC_NAME_LENGTH = 249
INTERNAL_PREFIX = "__"

_LEGAL = re.compile(r"[a-zA-Z0-9._-]+")
_PARTITION_DIR = re.compile(r"(?P<topic>[a-zA-Z0-9._-]+)-(?P<partition>0|[1-9][0-9]*)")


def topic_name_problem(name: str) -> str | None:
    """Why ``name`` is not a legal topic name, or None when it is (internal or not)."""
    if not name:
        return "a topic name must not be empty"
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return f"a topic name is at most {MAX_TOPIC_NAME_LENGTH} characters, this one has {len(name)}"
    if name in (".", ".."):
        return f"{name!r} is not a legal topic name"
    if not _LEGAL.fullmatch(name):
        return f"topic name {name!r} may only contain ASCII letters, digits, '.', '_' and '-'"
    return None


def is_internal(name: str) -> bool:
    return name.startswith(INTERNAL_PREFIX)


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_partition_dir_name(name: str) -> tuple[str, int] | None:
    """``(topic, partition)`` for a directory named like a partition's, else None."""
    match = _PARTITION_DIR.fullmatch(name)
    if match is None or topic_name_problem(match["topic"]) is not None:
        return None
    return match["topic"], int(match["partition"])
