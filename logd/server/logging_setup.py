"""The broker's log output: one line per event, as text or JSON (``--log-format``).

Text (for people)::

    2026-11-28T04:40:01.123Z INFO logd.broker.topics: created topic 'orders' with 3 partitions, config {}

JSON (for log shippers: one object per line, keys in this order)::

    {"time": "2026-11-28T04:40:01.123Z", "level": "INFO", "logger": "logd.broker.topics",
     "message": "created topic 'orders' with 3 partitions, config {}"}

plus ``"exception"`` (the formatted traceback) when there is one, and any fields given
with ``log.info(..., extra={"topic": "orders"})``. Times are UTC with milliseconds.

What is logged at INFO (one line each): start (address, data dir, flush policy, metrics
endpoint), the recovery summary with the time it took, topic changes, group changes,
retention and cleaner actions, shutdown. Per-request events are DEBUG at most;
failures are WARNING or ERROR.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Attributes every LogRecord has; the others came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _utc_time(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message>``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": _utc_time(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) in
    ``log_format``; replaces handlers an earlier call installed. Returns the handler."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use {', '.join(LOG_LEVELS)}")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; use {' or '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_logd", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler._logd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
