"""``logd serve``'s configuration: flags, ``LOGD_*`` environment variables, a TOML file.

Every setting has one key, spelled the same in the file, with ``LOGD_`` in front, upper
case and ``_`` for ``.``, in the environment, and (for the serve settings) as a flag with
``-`` for ``_``. Precedence: flag > environment > file > default. The file is named by
``--config`` or ``LOGD_CONFIG``.

    key                               env var                                flag
    data_dir = "logd-data"            LOGD_DATA_DIR                          --data-dir
    listen = "127.0.0.1:7070"         LOGD_LISTEN                            --listen
    metrics_listen = ""  (off)        LOGD_METRICS_LISTEN                    --metrics-listen
    log_level = "INFO"                LOGD_LOG_LEVEL                         --log-level
    log_format = "text"  (| json)     LOGD_LOG_FORMAT                        --log-format
    flush_policy = "group"            LOGD_FLUSH_POLICY                      --flush-policy
    retention_check_interval_ms=5000  LOGD_RETENTION_CHECK_INTERVAL_MS       --retention-check-interval-ms
    producer_id_expiration_ms=86400000 LOGD_PRODUCER_ID_EXPIRATION_MS        --producer-id-expiration-ms

``producer_id_expiration_ms`` is Kafka's broker config ``producer.id.expiration.ms`` (an
idempotent producer idle that long is forgotten); the file also takes that spelling (its
environment variable is the same).

Broker-wide defaults of the topic configs, with Kafka's broker names (a topic's own
config wins over them; a topic without one follows the broker default, also after a
restart with another default, as in Kafka)::

    log.retention.ms                    -> retention.ms
    log.retention.bytes                 -> retention.bytes
    log.segment.bytes                   -> segment.bytes
    log.roll.ms (alias log.segment.ms)  -> segment.ms
    log.cleanup.policy                  -> cleanup.policy
    log.cleaner.delete.retention.ms     -> delete.retention.ms
    log.cleaner.min.compaction.lag.ms   -> min.compaction.lag.ms
    log.cleaner.min.cleanable.ratio     -> min.cleanable.dirty.ratio
    message.max.bytes                   -> max.message.bytes

In TOML a dotted key must be quoted (``"log.retention.ms" = 86400000``) or written as
tables (``[log] retention.ms = 86400000``): both are read the same way. Values may be
TOML integers, floats or strings. Serve keys may also be spelled like the flags
(``data-dir``).

Unknown file keys and bad values anywhere are refused with a :class:`ServerConfigError`
naming the key and where it came from. Unknown ``LOGD_*`` variables are not errors (the
CLI's clients read ``LOGD_BOOTSTRAP``) but are reported in ``ServerConfig.warnings``.

``effective_config(flags, environ)`` builds the configuration; ``render_config`` prints it
as a TOML file that ``--config`` accepts back, each line saying where its value came from.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from logd.broker.broker import FLUSH_POLICIES
from logd.broker.config import CONFIG_KEYS, TopicConfig, normalize_overrides
from logd.broker.errors import InvalidConfigError
from logd.broker.producer_state import DEFAULT_PRODUCER_ID_EXPIRATION_MS

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
ENV_PREFIX = "LOGD_"
CONFIG_ENV = "LOGD_CONFIG"
#: LOGD_* variables that belong to the CLI's client commands and the container health
#: check (``logd.server.health_check``), not to ``serve``.
CLIENT_ENV = frozenset({"LOGD_BOOTSTRAP", "LOGD_HEALTH_ADDRESS"})

#: Broker key -> the topic config key it is the default of (Kafka's names).
TOPIC_DEFAULT_KEYS: dict[str, str] = {
    "log.retention.ms": "retention.ms",
    "log.retention.bytes": "retention.bytes",
    "log.segment.bytes": "segment.bytes",
    "log.roll.ms": "segment.ms",
    "log.cleanup.policy": "cleanup.policy",
    "log.cleaner.delete.retention.ms": "delete.retention.ms",
    "log.cleaner.min.compaction.lag.ms": "min.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio": "min.cleanable.dirty.ratio",
    "message.max.bytes": "max.message.bytes",
}
#: Other spellings accepted for a key (the canonical one is printed).
ALIASES = {"log.segment.ms": "log.roll.ms", "producer.id.expiration.ms": "producer_id_expiration_ms"}
assert sorted(TOPIC_DEFAULT_KEYS.values()) == sorted(CONFIG_KEYS)


class ServerConfigError(ValueError):
    """A setting is unknown or has a bad value, or the config file is unreadable."""


# -- the serve settings -----------------------------------------------------------------

def _string(value: Any) -> str:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"{value!r} must be a non-empty string")
    return str(value)


def _address(value: Any, *, optional: bool = False) -> str:
    if optional and value in ("", None):
        return ""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"{value!r} must be HOST:PORT")
    host, port = value.rsplit(":", 1)
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} must be HOST:PORT with a port from 0 to 65535")
    return value


def _choice(choices: tuple[str, ...], fold: Callable[[str], str] = str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, str) and fold(value) in choices:
            return fold(value)
        raise ValueError(f"{value!r} must be one of {', '.join(choices)}")
    return parse


def _positive_int(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"{value!r} must be a positive integer (milliseconds)")


@dataclass(frozen=True)
class _Setting:
    default: Any
    parse: Callable[[Any], Any]
    help: str


SETTINGS: dict[str, _Setting] = {
    "data_dir": _Setting("logd-data", _string, "data directory"),
    "listen": _Setting("127.0.0.1:7070", _address, "gRPC listen address"),
    "metrics_listen": _Setting("", lambda v: _address(v, optional=True),
                               "Prometheus /metrics address; empty: off"),
    "log_level": _Setting("INFO", _choice(LOG_LEVELS, str.upper), " | ".join(LOG_LEVELS)),
    "log_format": _Setting("text", _choice(LOG_FORMATS, str.lower), "text | json"),
    "flush_policy": _Setting("group", _choice(FLUSH_POLICIES), " | ".join(FLUSH_POLICIES)),
    "retention_check_interval_ms": _Setting(5000, _positive_int, "how often retention and compaction run"),
    "producer_id_expiration_ms": _Setting(DEFAULT_PRODUCER_ID_EXPIRATION_MS, _positive_int,
                                          "forget an idempotent producer idle this long"),
}


def env_var(key: str) -> str:
    """The environment variable of a key: ``log.retention.ms`` -> ``LOGD_LOG_RETENTION_MS``."""
    return ENV_PREFIX + key.upper().replace(".", "_").replace("-", "_")


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


_ALL_KEYS = (*SETTINGS, *TOPIC_DEFAULT_KEYS, *ALIASES)
_KEY_OF_ENV = {env_var(key): key for key in _ALL_KEYS}


# -- the result -------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerConfig:
    """The effective configuration of ``logd serve``.

    ``topic_defaults``: broker key -> canonical value, only the keys that were set;
    ``sources``: key -> where its value came from (``default``, ``file PATH``,
    ``env LOGD_X``, ``flag --x``) for every serve key and every broker key.
    """

    data_dir: Path = Path("logd-data")
    listen: str = "127.0.0.1:7070"
    metrics_listen: str = ""
    log_level: str = "INFO"
    log_format: str = "text"
    flush_policy: str = "group"
    retention_check_interval_ms: int = 5000
    producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS
    topic_defaults: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    warnings: tuple[str, ...] = ()

    def topic_config_defaults(self) -> dict[str, str]:
        """The broker defaults as topic config keys (``retention.ms``), for the broker."""
        return {TOPIC_DEFAULT_KEYS[key]: value for key, value in self.topic_defaults.items()}

    def serve_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``logd.server.app.serve``."""
        return {
            "data_dir": self.data_dir, "listen": self.listen, "metrics_listen": self.metrics_listen or None,
            "log_level": self.log_level, "log_format": self.log_format, "flush_policy": self.flush_policy,
            "retention_check_interval_ms": self.retention_check_interval_ms,
            "producer_id_expiration_ms": self.producer_id_expiration_ms,
            "topic_defaults": self.topic_config_defaults(), "warnings": self.warnings,
        }


# -- building it ------------------------------------------------------------------------

def effective_config(flags: Mapping[str, Any], environ: Mapping[str, str],
                     config_file: Path | str | None = None) -> ServerConfig:
    """The configuration from ``flags`` (serve key -> value, None = not given; the key
    ``config`` names the file), ``environ`` and the file (``config_file``, else
    ``flags["config"]``, else ``LOGD_CONFIG``). Raises ServerConfigError."""
    unknown_flags = sorted(set(flags) - set(SETTINGS) - {"config"})
    assert not unknown_flags, f"not serve settings: {unknown_flags}"
    path = config_file or flags.get("config") or environ.get(CONFIG_ENV) or None
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path is not None:
        path = Path(path)
        layers.append((f"file {path}", read_config_file(path)))
    env_values, warnings = _from_environ(environ)
    layers.append(("env", env_values))
    layers.append(("flag", {key: value for key, value in flags.items() if key != "config" and value is not None}))

    values: dict[str, Any] = {key: setting.default for key, setting in SETTINGS.items()}
    sources = {key: "default" for key in (*SETTINGS, *TOPIC_DEFAULT_KEYS)}
    topic_defaults: dict[str, str] = {}
    for origin, layer in layers:  # lowest precedence first: later layers overwrite
        for key, value in layer.items():
            where = _where(origin, key)
            canonical = ALIASES.get(key, key)
            if canonical in SETTINGS:
                values[canonical] = _parse_setting(canonical, value, where)
            else:
                topic_defaults[canonical] = _parse_topic_default(canonical, value, where)
            sources[canonical] = where
    return ServerConfig(
        **{**values, "data_dir": Path(values["data_dir"])},
        topic_defaults=topic_defaults, sources=sources, config_file=path, warnings=tuple(warnings),
    )


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The file's keys (canonical spelling: ``data_dir``, ``log.retention.ms``) -> raw values."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ServerConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ServerConfigError(f"config file {path} is not valid TOML: {exc}") from None
    found: dict[str, Any] = {}
    for spelled, value in _flatten(raw):
        key = spelled.replace("-", "_") if spelled.replace("-", "_") in SETTINGS else spelled
        if key not in _ALL_KEYS:
            known = ", ".join(sorted((*SETTINGS, *TOPIC_DEFAULT_KEYS)))
            raise ServerConfigError(f"config file {path}: unknown key {spelled!r}; known keys: {known}")
        canonical = ALIASES.get(key, key)
        if any(ALIASES.get(other, other) == canonical for other in found):
            raise ServerConfigError(f"config file {path}: key {spelled!r} is set twice")
        found[key] = value
    return found


def _flatten(table: Mapping[str, Any], prefix: str = ""):
    """``{"log": {"retention": {"ms": 1}}}`` -> ``("log.retention.ms", 1)``."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _from_environ(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    values: dict[str, str] = {}
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or name in CLIENT_ENV:
            continue
        key = _KEY_OF_ENV.get(name)
        if key is None:
            warnings.append(f"environment variable {name} is not a logd serve setting; ignored")
            continue
        canonical = ALIASES.get(key, key)
        if any(ALIASES.get(other, other) == canonical for other in values):
            raise ServerConfigError(f"environment variables {env_var(canonical)} and {name} both set {canonical!r}")
        values[key] = environ[name]
    return values, warnings


def _where(origin: str, key: str) -> str:
    if origin == "env":
        return f"env {env_var(key)}"
    if origin == "flag":
        return f"flag {flag(key)}"
    return origin


def _parse_setting(key: str, value: Any, where: str) -> Any:
    try:
        return SETTINGS[key].parse(value)
    except ValueError as exc:
        raise ServerConfigError(f"{_describe(key, where)}: {exc}") from None


def _parse_topic_default(key: str, value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ServerConfigError(f"{_describe(key, where)}: {value!r} must be a number or a string")
    topic_key = TOPIC_DEFAULT_KEYS[key]
    try:
        return normalize_overrides({topic_key: value if isinstance(value, str) else repr(value)})[topic_key]
    except InvalidConfigError as exc:
        # The topic-level message names the topic key; say which broker key was wrong.
        reason = str(exc).split(": ", 1)[-1]
        raise ServerConfigError(f"{_describe(key, where)}: {reason} (the default of topic config {topic_key!r})") \
            from None


def _describe(key: str, where: str) -> str:
    if where.startswith("file "):
        return f"config file {where[5:]}: key {key!r}"
    if where.startswith("env "):
        return f"environment variable {where[4:]} (key {key!r})"
    return f"{where[5:]} (key {key!r})"


# -- printing it ------------------------------------------------------------------------

def render_config(config: ServerConfig) -> str:
    """The effective configuration as a TOML file (accepted back by ``--config``);
    each line says where its value came from."""
    lines = ["# logd serve: effective configuration (precedence: flag > env > file > default)", ""]
    for key in SETTINGS:
        value = getattr(config, key)
        lines.append(_line(key, str(value) if isinstance(value, Path) else value,
                           config.sources.get(key, "default")))
    lines += ["", "# Broker-wide defaults of the topic configs (a topic's own config wins)"]
    built_in = TopicConfig().to_strings()
    for key, topic_key in TOPIC_DEFAULT_KEYS.items():
        value = config.topic_defaults.get(key, built_in[topic_key])
        lines.append(_line(json.dumps(key), _toml_scalar(value), config.sources.get(key, "default")))
    return "\n".join(lines) + "\n"


def _toml_scalar(value: str) -> int | float | str:
    if re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    try:
        return float(value)
    except ValueError:
        return value


def _line(key: str, value: Any, source: str) -> str:
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return f"{key + ' = ' + text:<45} # {source}"


# -- the file alone (kept for callers of the first version) -----------------------------

def load_server_config(path: Path | str) -> dict:
    """Only the serve settings of the file at ``path``, parsed (``data_dir`` a Path)."""
    path = Path(path)
    config: dict[str, Any] = {}
    for key, value in read_config_file(path).items():
        if key in SETTINGS:
            parsed = _parse_setting(key, value, f"file {path}")
            # (the log level as written: this function's first version returned it so)
            config[key] = Path(parsed) if key == "data_dir" else value if key == "log_level" else parsed
    return config
