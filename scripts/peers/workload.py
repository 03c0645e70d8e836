"""The comparison's workload: the same keyed JSON order records for every system.

Format of one record: the key is ``b"user-NNNNN"`` (10 bytes, one of ``users`` users); the
value is a JSON object of ~108 bytes (106-108), for example::

    {"order_id":1000000,"user_id":"user-05305","sku":"SKU-51750","quantity":1,"price":198.71,"ts":1700000000000}

Records are generated once per run from a fixed seed, so every system receives exactly
the same bytes in the same order. Generation is plain ``%``-formatting (valid JSON, about
1 µs a record) so that a million records are ready in a second or two.

Thread safety: a :class:`Workload` is immutable after :func:`generate` returns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_RECORDS = 1_000_000
DEFAULT_USERS = 10_000
DEFAULT_SEED = 7
FIRST_ORDER_ID = 1_000_000
FIRST_TS_MS = 1_700_000_000_000

_VALUE = b'{"order_id":%d,"user_id":"user-%05d","sku":"SKU-%05d","quantity":%d,"price":%d.%02d,"ts":%d}'


@dataclass(frozen=True)
class Workload:
    """``count`` records as parallel lists: ``keys[i]`` and ``values[i]`` are record i."""

    keys: list[bytes]
    values: list[bytes]
    users: int
    seed: int

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def value_bytes_mean(self) -> float:
        return sum(map(len, self.values)) / self.count if self.values else 0.0

    @property
    def payload_bytes(self) -> int:
        """Key plus value bytes of every record (what a user asked to store)."""
        return sum(map(len, self.keys)) + sum(map(len, self.values))


def generate(count: int = DEFAULT_RECORDS, users: int = DEFAULT_USERS, seed: int = DEFAULT_SEED) -> Workload:
    """``count`` order records keyed by user, deterministic for a given (count, users, seed)."""
    if count < 1 or users < 1:
        raise ValueError(f"count and users must be >= 1, got {count} and {users}")
    if users > 100_000:
        raise ValueError("users must be <= 100000 (keys are user-NNNNN)")
    rng = random.Random(seed)
    randrange, randint = rng.randrange, rng.randint
    keys: list[bytes] = []
    values: list[bytes] = []
    for i in range(count):
        user = randrange(users)
        cents = randint(99, 99_999)
        keys.append(b"user-%05d" % user)
        values.append(_VALUE % (FIRST_ORDER_ID + i, user, randrange(100_000), randint(1, 9),
                                cents // 100, cents % 100, FIRST_TS_MS + 3 * i))
    return Workload(keys=keys, values=values, users=users, seed=seed)
