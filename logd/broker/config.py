"""Topic configs: Kafka's keys, defaults and checks.

A topic stores only the keys set for it (its *overrides*, as canonical strings); every
other key takes the default below. ``TopicConfig`` is the typed view the broker and the
storage engine use. All parsing is strict: ``"1_000"``, ``" 5"`` or ``"+5"`` are refused,
as is any key that is not in the table; every failure is an ``InvalidConfigError`` whose
message names the key.

    key                        default       legal values
    retention.ms               604800000     -1 (keep forever) or >= 0
    retention.bytes            -1            -1 (no limit) or >= 0
    segment.bytes              1073741824    1024 .. 2147483647
    segment.ms                 604800000     >= 1
    cleanup.policy             delete        delete | compact | compact,delete
    delete.retention.ms        86400000      >= 0
    min.compaction.lag.ms      0             >= 0
    min.cleanable.dirty.ratio  0.5           0 .. 1
    max.message.bytes          1048588       61 (one empty batch header) .. 64 MiB
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Callable, Mapping

from logd_sdk import codec

from .errors import InvalidConfigError

_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """Every config of a topic, typed; attribute names are the keys with ``_`` for ``.``."""

    retention_ms: int = 604_800_000
    retention_bytes: int = -1
    segment_bytes: int = 1 << 30
    segment_ms: int = 604_800_000
    cleanup_policy: str = "delete"
    delete_retention_ms: int = 86_400_000
    min_compaction_lag_ms: int = 0
    min_cleanable_dirty_ratio: float = 0.5
    max_message_bytes: int = 1_048_588

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, str], defaults: "TopicConfig | None" = None) -> "TopicConfig":
        """The config with ``overrides`` (validated) applied over ``defaults`` (the
        broker-wide defaults; the built-in ones when None)."""
        parsed = {_attribute(key): _parse(key, value) for key, value in overrides.items()}
        return cls(**parsed) if defaults is None else replace(defaults, **parsed)

    def to_strings(self) -> dict[str, str]:
        """Every key with its value as a string, defaults included (for describe)."""
        return {key: _format(getattr(self, _attribute(key))) for key in _PARSERS}

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy


def normalize_overrides(overrides: Mapping[str, str]) -> dict[str, str]:
    """Validate ``overrides`` and return them as canonical strings (``"0.50"`` -> ``"0.5"``)."""
    return {key: _format(_parse(key, value)) for key, value in overrides.items()}


def _parse(key: str, value: str) -> object:
    parser = _PARSERS.get(key)
    if parser is None:
        known = ", ".join(sorted(_PARSERS))
        raise InvalidConfigError(f"unknown topic config {key!r}; known keys: {known}")
    if not isinstance(value, str):
        raise InvalidConfigError(f"topic config {key!r}: value must be a string, got {value!r}")
    return parser(key, value)


def _attribute(key: str) -> str:
    return key.replace(".", "_")


def _format(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _integer(minimum: int, maximum: int = _INT64_MAX, *, meaning: str = "") -> Callable[[str, str], int]:
    def parse(key: str, value: str) -> int:
        if not _INTEGER.fullmatch(value):
            raise InvalidConfigError(f"topic config {key!r}: {value!r} is not an integer")
        number = int(value)
        if not minimum <= number <= maximum:
            bounds = f"at least {minimum}" if maximum == _INT64_MAX else f"between {minimum} and {maximum}"
            raise InvalidConfigError(f"topic config {key!r}: {number} is out of range; it must be {bounds}{meaning}")
        return number
    return parse


def _ratio(key: str, value: str) -> float:
    if not _DECIMAL.fullmatch(value):
        raise InvalidConfigError(f"topic config {key!r}: {value!r} is not a number")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise InvalidConfigError(f"topic config {key!r}: {value!r} must be a number between 0 and 1")
    return number


def _cleanup_policy(key: str, value: str) -> str:
    parts = value.split(",")
    if not parts or len(set(parts)) != len(parts) or not set(parts) <= {"delete", "compact"}:
        raise InvalidConfigError(f"topic config {key!r}: {value!r} must be delete, compact or compact,delete")
    return ",".join(sorted(parts))  # "compact,delete" whichever order it came in


_PARSERS: dict[str, Callable[[str, str], object]] = {
    "retention.ms": _integer(-1, meaning=" (-1 keeps records forever)"),
    "retention.bytes": _integer(-1, meaning=" (-1 means no size limit)"),
    "segment.bytes": _integer(1024, (1 << 31) - 1),
    "segment.ms": _integer(1),
    "cleanup.policy": _cleanup_policy,
    "delete.retention.ms": _integer(0),
    "min.compaction.lag.ms": _integer(0),
    "min.cleanable.dirty.ratio": _ratio,
    "max.message.bytes": _integer(codec.HEADER_SIZE, codec.MAX_BATCH_BYTES),
}
assert set(map(_attribute, _PARSERS)) == {f.name for f in fields(TopicConfig)}

#: Every topic config key, in the order of the table above.
CONFIG_KEYS: tuple[str, ...] = tuple(_PARSERS)
