"""Structured logs: text and JSON lines, extra fields, tracebacks; one handler however often configured."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from logd.server.logging_setup import configure_logging


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines(restore_root_logger):
    """Each record is one JSON object with time, level, logger, message, extra fields and the traceback."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    log = logging.getLogger("logd.test")
    log.debug("not shown")
    log.info("created topic %r", "orders", extra={"topic": "orders"})
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        log.exception("write failed")
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert first["level"] == "INFO" and first["logger"] == "logd.test"
    assert first["message"] == "created topic 'orders'" and first["topic"] == "orders"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "ERROR" and "RuntimeError: disk on fire" in second["exception"]


def test_text_lines_and_reconfiguration(restore_root_logger):
    """Text is `<time> <LEVEL> <logger>: <message>`; configuring again replaces logd's handler, not adds one."""
    first_stream, stream = io.StringIO(), io.StringIO()
    configure_logging("INFO", "text", first_stream)
    configure_logging("warning", "text", stream)
    log = logging.getLogger("logd.test")
    log.info("quiet")
    log.warning("retention deleted %d segments", 3)
    assert first_stream.getvalue() == ""
    (line,) = stream.getvalue().splitlines()
    assert re.fullmatch(r"\S+Z WARNING logd\.test: retention deleted 3 segments", line)


def test_bad_level_or_format_is_refused(restore_root_logger):
    """Unknown levels and formats raise ValueError naming the choices."""
    with pytest.raises(ValueError, match="DEBUG"):
        configure_logging("LOUD", "text")
    with pytest.raises(ValueError, match="text or json"):
        configure_logging("INFO", "xml")
