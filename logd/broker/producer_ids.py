"""Producer ids: unique, increasing across restarts, one fsync per block of ids.

As Kafka's ProducerIdManager does, ids are reserved in blocks: before handing out the
first id of a block, the end of the block is persisted to ``<data-dir>/producer_ids.json``
(``{"version": 1, "next_block_start": N}``, written atomically). After a restart issuing
resumes at that persisted end, so an id is never issued twice even after a crash; at
most one block's worth of ids is skipped.

Thread-safe.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from .files import write_atomically
from .metadata import MetadataError

BLOCK_SIZE = 1000
FILE_NAME = "producer_ids.json"


class ProducerIdManager:
    def __init__(self, data_dir: Path, block_size: int = BLOCK_SIZE) -> None:
        assert block_size >= 1
        self._path = data_dir / FILE_NAME
        self._block_size = block_size
        self._lock = threading.Lock()
        self._next_id = self._load()
        self._block_end = self._next_id  # nothing reserved yet in this process

    def next_producer_id(self) -> int:
        """A producer id never issued before by this data directory."""
        with self._lock:
            if self._next_id >= self._block_end:
                self._reserve_block_locked()
            producer_id = self._next_id
            self._next_id += 1
            return producer_id

    def _reserve_block_locked(self) -> None:
        end = self._next_id + self._block_size
        write_atomically(self._path, json.dumps({"version": 1, "next_block_start": end}).encode())
        self._block_end = end

    def _load(self) -> int:
        try:
            data = json.loads(self._path.read_bytes())
            return int(data["next_block_start"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            raise MetadataError(f"{self._path} is unreadable ({exc}); producer ids cannot be issued safely") from None
