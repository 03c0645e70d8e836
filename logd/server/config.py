"""The server's config file (``logd serve --config FILE``): TOML with the flags' keys.

Example::

    data_dir = "/var/lib/logd"
    listen = "0.0.0.0:7070"
    log_level = "INFO"
    flush_policy = "group"            # group | always | never
    retention_check_interval_ms = 5000

Keys may also be spelled like the flags (``data-dir``). Unknown keys and values of the
wrong type are refused with a ``ServerConfigError`` naming the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from logd.broker.broker import FLUSH_POLICIES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ServerConfigError(ValueError):
    """The config file is unreadable or holds an unknown key or a bad value."""


def load_server_config(path: Path | str) -> dict:
    """Read ``path`` and return ``serve``'s keyword arguments (data_dir as a Path)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ServerConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ServerConfigError(f"config file {path} is not valid TOML: {exc}") from None
    config: dict = {}
    for spelled, value in raw.items():
        key = spelled.replace("-", "_")
        check = _CHECKS.get(key)
        if check is None:
            known = ", ".join(sorted(_CHECKS))
            raise ServerConfigError(f"config file {path}: unknown key {spelled!r}; known keys: {known}")
        problem = check(value)
        if problem:
            raise ServerConfigError(f"config file {path}: key {spelled!r}: {problem}")
        config[key] = Path(value) if key == "data_dir" else value
    return config


def _string(value) -> str | None:
    return None if isinstance(value, str) and value else f"{value!r} must be a non-empty string"


def _listen(value) -> str | None:
    if not isinstance(value, str) or ":" not in value:
        return f"{value!r} must be HOST:PORT"
    port = value.rsplit(":", 1)[1]
    return None if port.isdigit() and int(port) < 65536 else f"{value!r} has no valid port"


def _log_level(value) -> str | None:
    return None if isinstance(value, str) and value.upper() in LOG_LEVELS else f"{value!r} must be one of {', '.join(LOG_LEVELS)}"


def _flush_policy(value) -> str | None:
    return None if value in FLUSH_POLICIES else f"{value!r} must be one of {', '.join(FLUSH_POLICIES)}"


def _positive_int(value) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else f"{value!r} must be a positive integer (milliseconds)"


_CHECKS = {
    "data_dir": _string,
    "listen": _listen,
    "log_level": _log_level,
    "flush_policy": _flush_policy,
    "retention_check_interval_ms": _positive_int,
}
