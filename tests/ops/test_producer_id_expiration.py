"""`logd serve`'s producer_id_expiration_ms (Kafka's producer.id.expiration.ms): read, printed, handed to the broker."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from logd.broker.producer_state import DEFAULT_PRODUCER_ID_EXPIRATION_MS
from logd.server import app
from logd.server.config import ServerConfigError, effective_config, render_config

from .helpers import NO_FLAGS, write_config

KEY = "producer_id_expiration_ms"


def test_default_is_kafkas_one_day():
    """Unset, it is Kafka's default: one day."""
    config = effective_config(NO_FLAGS, {})
    assert config.producer_id_expiration_ms == DEFAULT_PRODUCER_ID_EXPIRATION_MS == 86_400_000
    assert config.sources[KEY] == "default" and config.serve_kwargs()[KEY] == 86_400_000


@pytest.mark.parametrize("text", ['producer_id_expiration_ms = 60000\n', '"producer.id.expiration.ms" = 60000\n',
                                  '[producer.id.expiration]\nms = "60000"\n', 'producer-id-expiration-ms = 60000\n'])
def test_file_takes_the_setting_and_kafkas_spelling(tmp_path, text):
    """The file key, its dashed spelling and Kafka's dotted name (quoted or as tables) all set it."""
    path = write_config(tmp_path, text)
    config = effective_config(NO_FLAGS, {}, path)
    assert config.producer_id_expiration_ms == 60_000 and config.sources[KEY] == f"file {path}"


def test_precedence_flag_over_env_over_file(tmp_path):
    """The flag beats LOGD_PRODUCER_ID_EXPIRATION_MS, which beats the file, each recorded as the source."""
    path = write_config(tmp_path, '"producer.id.expiration.ms" = 1000\n')
    environ = {"LOGD_PRODUCER_ID_EXPIRATION_MS": "2000"}
    config = effective_config({**NO_FLAGS, "config": path}, environ)
    assert config.producer_id_expiration_ms == 2000 and config.sources[KEY] == "env LOGD_PRODUCER_ID_EXPIRATION_MS"
    config = effective_config({**NO_FLAGS, "config": path, KEY: 3000}, environ)
    assert config.producer_id_expiration_ms == 3000 and config.sources[KEY] == "flag --producer-id-expiration-ms"


@pytest.mark.parametrize("text, message", [
    ('producer_id_expiration_ms = 0\n', "positive integer"),
    ('"producer.id.expiration.ms" = -5\n', "positive integer"),
    ('producer_id_expiration_ms = "soon"\n', "positive integer"),
    ('producer_id_expiration_ms = 1\n"producer.id.expiration.ms" = 2\n', "set twice"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, text, message):
    """Zero, negative, non-numeric values and both spellings at once raise ServerConfigError naming the key."""
    with pytest.raises(ServerConfigError, match=message) as info:
        effective_config(NO_FLAGS, {}, write_config(tmp_path, text))
    assert "producer" in str(info.value)
    with pytest.raises(ServerConfigError, match="LOGD_PRODUCER_ID_EXPIRATION_MS"):
        effective_config(NO_FLAGS, {"LOGD_PRODUCER_ID_EXPIRATION_MS": "0"})


def test_print_config_round_trip(tmp_path):
    """--print-config's text carries the value and its source, and read back gives the same value."""
    config = effective_config(NO_FLAGS, {"LOGD_PRODUCER_ID_EXPIRATION_MS": "45000"})
    text = render_config(config)
    assert tomllib.loads(text)[KEY] == 45_000 and "# env LOGD_PRODUCER_ID_EXPIRATION_MS" in text
    assert effective_config(NO_FLAGS, {}, write_config(tmp_path, text)).producer_id_expiration_ms == 45_000


def test_cli_flag_reaches_print_config(tmp_path):
    """`logd serve --producer-id-expiration-ms` is a flag of the CLI, shown by --print-config with its source."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGD_")}
    result = subprocess.run([sys.executable, "-m", "logd.cli", "serve", "--producer-id-expiration-ms", "1234",
                             "--print-config"], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)[KEY] == 1234
    assert "# flag --producer-id-expiration-ms" in result.stdout


def test_serve_hands_it_to_the_broker(tmp_path, monkeypatch):
    """``serve(**serve_kwargs())`` builds a BrokerServer whose Broker expires producer ids after the configured time."""
    built = []

    class Recording(app.BrokerServer):
        def start(self):
            built.append(self)
            raise RuntimeError("not started in this test")

    monkeypatch.setattr(app, "BrokerServer", Recording)
    monkeypatch.setattr(app, "configure_logging", lambda *args: None)  # keep pytest's logging as it is
    monkeypatch.setattr(app, "raise_open_file_limit", lambda: None)
    config = effective_config({**NO_FLAGS, "data_dir": str(tmp_path / "data"), "listen": "127.0.0.1:0",
                               KEY: 90_000}, {})
    assert app.serve(**config.serve_kwargs()) == 1  # start failed, as arranged
    (server,) = built
    assert server.broker.producer_id_expiration_ms == 90_000
