"""``logd serve``: run a broker (``logd.server.app.serve``) in this process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def serve(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory [default: ./logd-data]."),
    listen: Optional[str] = typer.Option(None, "--listen", metavar="HOST:PORT", help="[default: 127.0.0.1:7070]"),
    metrics_listen: Optional[str] = typer.Option(None, "--metrics-listen", metavar="HOST:PORT",
                                                 help="Serve Prometheus /metrics here [default: off]."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE",
                                          help="TOML file with these settings (env LOGD_CONFIG)."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING or ERROR [default: INFO]."),
    log_format: Optional[str] = typer.Option(None, "--log-format", help="text or json [default: text]."),
    flush_policy: Optional[str] = typer.Option(None, "--flush-policy",
                                               help="group, always or never [default: group]."),
    retention_check_interval_ms: Optional[int] = typer.Option(
        None, "--retention-check-interval-ms", metavar="MS", help="How often retention and compaction run."),
    producer_id_expiration_ms: Optional[int] = typer.Option(
        None, "--producer-id-expiration-ms", metavar="MS",
        help="Forget an idempotent producer idle this long (Kafka's producer.id.expiration.ms) [default: 1 day]."),
    print_config: bool = typer.Option(False, "--print-config",
                                      help="Print the effective configuration (TOML) and exit."),
) -> None:
    """Run a logd broker until SIGTERM or Ctrl-C.

    Every setting also has a config-file key and an env variable LOGD_<KEY>; precedence
    flag > env > file > default (see --print-config).
    """
    from logd.server.app import serve as run_broker
    from logd.server.config import effective_config, render_config

    flags = {"data_dir": data_dir, "listen": listen, "metrics_listen": metrics_listen, "log_level": log_level,
             "log_format": log_format, "flush_policy": flush_policy,
             "retention_check_interval_ms": retention_check_interval_ms,
             "producer_id_expiration_ms": producer_id_expiration_ms, "config": config}
    settings = effective_config(flags, os.environ)  # ServerConfigError (a ValueError): one line
    if print_config:
        typer.echo(render_config(settings), nl=False)
        raise typer.Exit(0)
    raise typer.Exit(run_broker(**settings.serve_kwargs()))  # logs settings.warnings
