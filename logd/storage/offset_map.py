"""The cleaner's offset map: key digest -> latest offset, in a fixed amount of memory.

Kafka's ``SkimpyOffsetMap``: an open-addressing hash table in one preallocated buffer,
so memory does not depend on the number of keys. Each slot is 24 bytes::

    digest  16 bytes  blake2b-128 of the record key (all zeros: empty slot)
    offset   8 bytes  i64 little-endian, the latest offset seen for that key

Collisions of two keys' digests are treated as the same key (probability ~2^-128 per
pair). Probing is linear from ``digest mod slots``. The map reports ``full`` once
``load_factor`` of the slots are used, which keeps probes short; the cleaner then ends
its pass and cleans the rest in a later one.

Thread-safety: none; one cleaner thread owns a map.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct

DIGEST_BYTES = 16
SLOT_BYTES = DIGEST_BYTES + 8
_EMPTY = bytes(DIGEST_BYTES)
_OFFSET = struct.Struct("<q")
_NOT_EMPTY = b"\x01" + bytes(DIGEST_BYTES - 1)


def key_digest(key: bytes) -> bytes:
    """The 16-byte digest the map stores for ``key`` (never the empty-slot marker)."""
    digest = hashlib.blake2b(key, digest_size=DIGEST_BYTES).digest()
    return _NOT_EMPTY if digest == _EMPTY else digest


class OffsetMap:
    """A fixed-capacity map from key digests to offsets (see the module docstring)."""

    def __init__(self, memory_bytes: int, load_factor: float = 0.75) -> None:
        assert 0 < load_factor < 1
        self.slots = max(2, memory_bytes // SLOT_BYTES)
        #: Entries the map accepts before it reports ``full`` (at least one).
        self.capacity = max(1, int(self.slots * load_factor))
        self._table = bytearray(self.slots * SLOT_BYTES)
        self.size = 0
        #: The largest offset put since the last ``clear`` (-1 if none).
        self.latest_offset = -1

    @property
    def memory_bytes(self) -> int:
        return len(self._table)

    @property
    def full(self) -> bool:
        return self.size >= self.capacity

    def clear(self) -> None:
        if self.size:
            # ctypes calls release the GIL: zeroing 16 MiB does not stall request threads.
            ctypes.memset((ctypes.c_char * len(self._table)).from_buffer(self._table), 0, len(self._table))
        self.size = 0
        self.latest_offset = -1

    def put(self, digest: bytes, offset: int) -> None:
        """Map ``digest`` to ``offset`` (a new key only while not ``full``)."""
        table, slots = self._table, self.slots
        slot = int.from_bytes(digest[:8], "little") % slots
        while True:
            position = slot * SLOT_BYTES
            stored = table[position:position + DIGEST_BYTES]
            if stored == digest:
                break
            if stored == _EMPTY:
                assert self.size < self.capacity, "put of a new key into a full offset map"
                table[position:position + DIGEST_BYTES] = digest
                self.size += 1
                break
            slot = slot + 1 if slot + 1 < slots else 0
        _OFFSET.pack_into(table, position + DIGEST_BYTES, offset)
        if offset > self.latest_offset:
            self.latest_offset = offset

    def get(self, digest: bytes) -> int:
        """The offset mapped to ``digest``, or -1."""
        table, slots = self._table, self.slots
        slot = int.from_bytes(digest[:8], "little") % slots
        while True:
            position = slot * SLOT_BYTES
            stored = table[position:position + DIGEST_BYTES]
            if stored == digest:
                return _OFFSET.unpack_from(table, position + DIGEST_BYTES)[0]
            if stored == _EMPTY:
                return -1
            slot = slot + 1 if slot + 1 < slots else 0

    def __len__(self) -> int:
        return self.size
