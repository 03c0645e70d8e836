"""`logd serve`'s configuration: precedence flag > env > file > default, rejection, printing, topic defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logd.broker import Broker
from logd.server.config import (
    SETTINGS, TOPIC_DEFAULT_KEYS, ServerConfigError, effective_config, env_var, render_config,
)

NO_FLAGS = {key: None for key in SETTINGS}


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "logd.toml"
    path.write_text(text)
    return path


def test_defaults():
    """With nothing given every setting has its documented default and says so."""
    config = effective_config(NO_FLAGS, {})
    assert config.data_dir == Path("logd-data") and config.listen == "127.0.0.1:7070"
    assert config.metrics_listen == "" and config.log_level == "INFO" and config.log_format == "text"
    assert config.flush_policy == "group" and config.retention_check_interval_ms == 5000
    assert config.topic_defaults == {} and set(config.sources.values()) == {"default"}
    assert config.serve_kwargs()["metrics_listen"] is None


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    """Each layer overrides the ones below it, key by key, and the source of each value is recorded."""
    path = _file(tmp_path, 'listen = "0.0.0.0:1111"\nlog_level = "debug"\nflush_policy = "never"\n'
                           '"log.retention.ms" = 1000\n"log.retention.bytes" = 2000\n')
    environ = {"LOGD_LISTEN": "0.0.0.0:2222", "LOGD_FLUSH_POLICY": "always", "LOGD_LOG_RETENTION_MS": "3000",
               "LOGD_METRICS_LISTEN": "127.0.0.1:9100"}
    flags = {**NO_FLAGS, "config": path, "listen": "0.0.0.0:3333"}
    config = effective_config(flags, environ)
    assert config.listen == "0.0.0.0:3333" and config.sources["listen"] == "flag --listen"
    assert config.flush_policy == "always" and config.sources["flush_policy"] == "env LOGD_FLUSH_POLICY"
    assert config.metrics_listen == "127.0.0.1:9100"
    assert config.log_level == "DEBUG" and config.sources["log_level"] == f"file {path}"
    assert config.data_dir == Path("logd-data") and config.sources["data_dir"] == "default"
    assert config.topic_defaults == {"log.retention.ms": "3000", "log.retention.bytes": "2000"}
    assert config.topic_config_defaults() == {"retention.ms": "3000", "retention.bytes": "2000"}
    assert config.sources["log.retention.bytes"] == f"file {path}"


def test_config_file_from_env_and_table_spelling(tmp_path):
    """LOGD_CONFIG names the file; dotted keys may be TOML tables, serve keys may use the flags' dashes, aliases work."""
    path = _file(tmp_path, 'data-dir = "/srv/logd"\n[log]\nsegment.ms = 60000\ncleanup.policy = "delete,compact"\n'
                           '[log.cleaner]\nmin.cleanable.ratio = 0.25\n')
    config = effective_config(NO_FLAGS, {"LOGD_CONFIG": str(path)})
    assert config.config_file == path and config.data_dir == Path("/srv/logd")
    assert config.topic_defaults == {"log.roll.ms": "60000", "log.cleanup.policy": "compact,delete",
                                     "log.cleaner.min.cleanable.ratio": "0.25"}


@pytest.mark.parametrize("text, named", [
    ('lissten = "x:1"\n', "'lissten'"),
    ('"log.retention.minutes" = 5\n', "'log.retention.minutes'"),
    ('listen = "nohost"\n', "'listen'"),
    ('listen = "h:70000"\n', "'listen'"),
    ('flush_policy = "sometimes"\n', "'flush_policy'"),
    ('retention_check_interval_ms = 0\n', "'retention_check_interval_ms'"),
    ('retention_check_interval_ms = true\n', "'retention_check_interval_ms'"),
    ('log_format = "xml"\n', "'log_format'"),
    ('"log.segment.bytes" = 100\n', "'log.segment.bytes'"),
    ('"log.cleanup.policy" = "forever"\n', "'log.cleanup.policy'"),
    ('"log.cleaner.min.cleanable.ratio" = 2\n', "'log.cleaner.min.cleanable.ratio'"),
    ('"message.max.bytes" = true\n', "'message.max.bytes'"),
    ('"log.roll.ms" = 5\n"log.segment.ms" = 6\n', "'log.segment.ms'"),
    ('listen = \n', "not valid TOML"),
])
def test_bad_file_keys_and_values_are_refused_naming_the_key(tmp_path, text, named):
    """Unknown keys, bad values, a key set twice and broken TOML raise ServerConfigError naming the key and file."""
    path = _file(tmp_path, text)
    with pytest.raises(ServerConfigError) as info:
        effective_config(NO_FLAGS, {}, path)
    assert named in str(info.value) and str(path) in str(info.value)


def test_bad_env_and_flag_values_name_their_source():
    """A bad value from the environment names the variable; one from a flag names the flag."""
    with pytest.raises(ServerConfigError, match="LOGD_LOG_RETENTION_BYTES.*'log.retention.bytes'.*not an integer"):
        effective_config(NO_FLAGS, {"LOGD_LOG_RETENTION_BYTES": "lots"})
    with pytest.raises(ServerConfigError, match="--flush-policy"):
        effective_config({**NO_FLAGS, "flush_policy": "maybe"}, {})
    with pytest.raises(ServerConfigError, match="LOGD_LOG_ROLL_MS and LOGD_LOG_SEGMENT_MS"):
        effective_config(NO_FLAGS, {"LOGD_LOG_ROLL_MS": "1", "LOGD_LOG_SEGMENT_MS": "2"})
    with pytest.raises(ServerConfigError, match="cannot read config file"):
        effective_config({**NO_FLAGS, "config": "/nonexistent/logd.toml"}, {})


def test_unknown_env_vars_are_warnings_and_client_vars_ignored():
    """LOGD_BOOTSTRAP belongs to the client commands; another unknown LOGD_ variable is reported, not fatal."""
    config = effective_config(NO_FLAGS, {"LOGD_BOOTSTRAP": "h:1", "LOGD_LISTN": "h:2", "HOME": "/root"})
    assert config.listen == "127.0.0.1:7070"
    assert config.warnings == ("environment variable LOGD_LISTN is not a logd serve setting; ignored",)


def test_every_key_has_an_env_var():
    """Each serve key and broker key maps to LOGD_<KEY> and is read from it."""
    for key in (*SETTINGS, *TOPIC_DEFAULT_KEYS):
        assert env_var(key).startswith("LOGD_") and "." not in env_var(key)
    assert env_var("log.cleaner.min.cleanable.ratio") == "LOGD_LOG_CLEANER_MIN_CLEANABLE_RATIO"
    config = effective_config(NO_FLAGS, {env_var("message.max.bytes"): "2048", env_var("log_format"): "JSON"})
    assert config.topic_defaults == {"message.max.bytes": "2048"} and config.log_format == "json"


def test_rendered_config_is_a_config_file_with_sources(tmp_path):
    """--print-config's text parses as TOML, names each value's source, and read back gives the same settings."""
    config = effective_config({**NO_FLAGS, "listen": "0.0.0.0:7070"}, {"LOGD_LOG_RETENTION_MS": "1000"})
    text = render_config(config)
    assert "# flag --listen" in text and "# env LOGD_LOG_RETENTION_MS" in text
    parsed = tomllib.loads(text)
    assert parsed["listen"] == "0.0.0.0:7070" and parsed["log.retention.ms"] == 1000
    again = effective_config(NO_FLAGS, {}, _file(tmp_path, text))
    for key in SETTINGS:
        assert getattr(again, key) == getattr(config, key)
    assert again.topic_config_defaults()["retention.ms"] == "1000"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    listen_port=st.integers(0, 65535),
    level=st.sampled_from(["debug", "INFO", "Warning"]),
    policy=st.sampled_from(["group", "always", "never"]),
    interval=st.integers(1, 10**9),
    retention_ms=st.integers(-1, 10**12),
    ratio=st.floats(0, 1),
    cleanup=st.sampled_from(["delete", "compact", "compact,delete", "delete,compact"]),
)
def test_render_round_trip(tmp_path, listen_port, level, policy, interval, retention_ms, ratio, cleanup):
    """Any valid configuration, printed and read back as a file, is the same configuration."""
    environ = {"LOGD_LISTEN": f"::1:{listen_port}", "LOGD_LOG_LEVEL": level, "LOGD_FLUSH_POLICY": policy,
               "LOGD_RETENTION_CHECK_INTERVAL_MS": str(interval), "LOGD_LOG_RETENTION_MS": str(retention_ms),
               "LOGD_LOG_CLEANER_MIN_CLEANABLE_RATIO": repr(ratio), "LOGD_LOG_CLEANUP_POLICY": cleanup}
    config = effective_config(NO_FLAGS, environ)
    again = effective_config(NO_FLAGS, {}, _file(tmp_path, render_config(config)))
    for key in SETTINGS:
        assert getattr(again, key) == getattr(config, key)
    assert config.topic_config_defaults().items() <= again.topic_config_defaults().items()


def test_topic_defaults_apply_to_topics_without_their_own(tmp_path):
    """Broker-wide defaults fill the keys a topic did not set; a topic's own value wins; a restart with new defaults applies them."""
    broker = Broker(tmp_path, topic_defaults={"retention.ms": "1000", "segment.bytes": "4096"}).open()
    try:
        broker.create_topic("plain", 1)
        broker.create_topic("own", 1, {"retention.ms": "5"})
        assert broker.describe_topic("plain").config["retention.ms"] == "1000"
        assert broker.describe_topic("plain").config["segment.bytes"] == "4096"
        assert broker.describe_topic("own").config["retention.ms"] == "5"
        assert broker.topics.require("plain").partitions[0].log.config.segment_bytes == 4096
    finally:
        broker.close()
    broker = Broker(tmp_path, topic_defaults={"retention.ms": "2000"}).open()
    try:
        assert broker.describe_topic("plain").config["retention.ms"] == "2000"
        assert broker.describe_topic("plain").config["segment.bytes"] == str(1 << 30)
        assert broker.describe_topic("own").config["retention.ms"] == "5"
    finally:
        broker.close()
