"""``logd topic create|list|describe|alter|delete``."""

from __future__ import annotations

from typing import List, Optional

import typer

from logd_sdk import Admin

from ._common import API_TIMEOUT_MS, BootstrapOption, Output, OutputOption, parse_pairs, print_json, print_table

app = typer.Typer(help="Create, list, describe, alter and delete topics.", no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Topic name: 1-249 of [a-zA-Z0-9._-]."),
    partitions: int = typer.Option(1, "--partitions", "-p", help="Number of partitions."),
    config: Optional[List[str]] = typer.Option(None, "--config", "-c", metavar="KEY=VALUE",
                                               help="Topic config, repeatable (e.g. retention.ms=86400000)."),
    bootstrap: str = BootstrapOption,
) -> None:
    """Create a topic."""
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        admin.create_topic(name, partitions=partitions, config=dict(parse_pairs(config, "--config")))
    typer.echo(f"Created topic {name}.")


@app.command("list")
def list_(bootstrap: str = BootstrapOption, output: Output = OutputOption) -> None:
    """List the topics."""
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        names = admin.list_topics()
    if output is Output.json:
        print_json(names)
    else:
        for name in names:
            typer.echo(name)


@app.command("describe")
def describe(name: str = typer.Argument(...), bootstrap: str = BootstrapOption, output: Output = OutputOption) -> None:
    """Partitions (log start offset, end offset, size) and configs of a topic."""
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        description = admin.describe_topic(name)
    if output is Output.json:
        print_json(description)
        return
    typer.echo(f"Topic: {description.name}  Partitions: {len(description.partitions)}")
    typer.echo("Configs: " + ", ".join(f"{k}={v}" for k, v in description.config.items()))
    print_table(["PARTITION", "LOG_START_OFFSET", "LOG_END_OFFSET", "SIZE_BYTES"],
                [(p.partition, p.log_start_offset, p.log_end_offset, p.size_bytes) for p in description.partitions])


@app.command("alter")
def alter(
    name: str = typer.Argument(...),
    config: Optional[List[str]] = typer.Option(None, "--config", "-c", metavar="KEY=VALUE",
                                               help="Config to change, repeatable; other keys are kept."),
    partitions: Optional[int] = typer.Option(None, "--partitions", "-p", help="Grow the topic to N partitions."),
    bootstrap: str = BootstrapOption,
) -> None:
    """Change some configs of a topic (and/or grow its partitions)."""
    pairs = parse_pairs(config, "--config")
    if not pairs and partitions is None:
        raise ValueError("give at least one --config KEY=VALUE (or --partitions N)")
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        if pairs:
            admin.alter_topic_config(name, dict(pairs))
        if partitions is not None:
            admin.create_partitions(name, total=partitions)
    typer.echo(f"Altered topic {name}.")


@app.command("delete")
def delete(name: str = typer.Argument(...), bootstrap: str = BootstrapOption) -> None:
    """Delete a topic and its data."""
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        admin.delete_topic(name)
    typer.echo(f"Deleted topic {name}.")
