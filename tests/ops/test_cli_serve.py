"""`logd serve` end to end: its config flags, --print-config, a JSON-logging broker with a metrics endpoint."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import tomllib

from logd.server.health_check import check_health

from .helpers import scrape, value

LOGD = [sys.executable, "-m", "logd.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {key: val for key, val in os.environ.items() if not key.startswith("LOGD_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def test_print_config_shows_precedence(tmp_path):
    """--print-config prints flag over env over file over default, each with its source, and starts nothing."""
    config = tmp_path / "logd.toml"
    config.write_text('listen = "127.0.0.1:1111"\nlog_level = "WARNING"\n"log.retention.ms" = 1000\n')
    result = subprocess.run(
        [*LOGD, "serve", "--config", str(config), "--listen", "127.0.0.1:3333", "--flush-policy", "always",
         "--print-config"],
        env=_env(LOGD_LISTEN="127.0.0.1:2222", LOGD_LOG_LEVEL="ERROR", LOGD_METRICS_LISTEN="127.0.0.1:9999"),
        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["listen"] == "127.0.0.1:3333" and printed["flush_policy"] == "always"
    assert printed["log_level"] == "ERROR" and printed["metrics_listen"] == "127.0.0.1:9999"
    assert printed["log.retention.ms"] == 1000 and printed["data_dir"] == "logd-data"
    assert re.search(r'^"log.retention.ms" = 1000 +# file ', result.stdout, re.M)
    assert not (tmp_path / "logd-data").exists()


def test_bad_setting_is_one_line_naming_the_key(tmp_path):
    """A bad env value or flag stops `logd serve` before it starts, with one line naming the key."""
    result = subprocess.run([*LOGD, "serve", "--data-dir", str(tmp_path / "d")],
                            env=_env(LOGD_MESSAGE_MAX_BYTES="ten"), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "LOGD_MESSAGE_MAX_BYTES" in result.stderr
    result = subprocess.run([*LOGD, "serve", "--log-format", "xml", "--data-dir", str(tmp_path / "d")],
                            env=_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "--log-format" in result.stderr


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def test_serve_with_metrics_and_json_logs(tmp_path):
    """`logd serve --metrics-listen --log-format json` logs JSON, serves /metrics and health, and stops cleanly on SIGTERM."""
    process = subprocess.Popen(
        [*LOGD, "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--retention-check-interval-ms", "60000"],
        env=_env(LOGD_LOG_RETENTION_MS="5000", LOGD_SERVICE_HOST="10.0.0.1"), stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True).start()
    try:
        started, warned = None, []
        while started is None:
            line = lines.get(timeout=20)
            assert line is not None, "logd serve exited early"
            entry = json.loads(line)  # every line, the unknown variable's warning too
            if "listening on" in entry["message"]:
                started = entry["message"]
            if "LOGD_SERVICE_HOST" in entry["message"]:
                warned.append(entry["level"])
        assert warned == ["WARNING"]
        grpc_address, metrics_address = re.search(r"listening on (\S+),.*http://(\S+)/metrics", started).groups()
        assert check_health(grpc_address) == "SERVING"
        samples = scrape(metrics_address)
        assert value(samples, "logd_broker_serving") == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    rest = []
    while (line := lines.get(timeout=10)) is not None:
        rest.append(json.loads(line)["message"])
    assert any("stopped" in message for message in rest), rest
