"""``logd group list|describe|reset-offsets|delete``."""

from __future__ import annotations

from typing import Optional

import typer

from logd_sdk import Admin, Consumer, GroupNotEmptyError, TopicPartition

from ._common import API_TIMEOUT_MS, BootstrapOption, Output, OutputOption, parse_time_ms, print_json, print_table

app = typer.Typer(help="List, describe, reset and delete consumer groups.", no_args_is_help=True)


@app.command("list")
def list_(bootstrap: str = BootstrapOption, output: Output = OutputOption) -> None:
    """List the consumer groups."""
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        groups = admin.list_groups()
    if output is Output.json:
        print_json(groups)
    else:
        for group in groups:
            typer.echo(group)


@app.command("describe")
def describe(group: str = typer.Argument(...), bootstrap: str = BootstrapOption, output: Output = OutputOption) -> None:
    """Members, assignment, committed offset, end offset and lag of a group."""
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        description = admin.describe_group(group)
    if output is Output.json:
        print_json(description)
        return
    typer.echo(f"Group: {description.group_id}  State: {description.state}  Members: {len(description.members)}")
    owner = {tp: m.member_id for m in description.members for tp in m.assignment}
    # No committed offset: the lag is unknown ("-", as Kafka's tool shows it; the SDK's -1).
    print_table(["TOPIC", "PARTITION", "COMMITTED_OFFSET", "LOG_END_OFFSET", "LAG", "MEMBER"],
                [(tp.topic, tp.partition, o.committed_offset, o.log_end_offset,
                  None if o.committed_offset is None else o.lag, owner.get(tp))
                 for tp, o in description.offsets.items()])


@app.command("reset-offsets")
def reset_offsets(
    group: str = typer.Argument(...),
    topic: str = typer.Option(..., "--topic", "-t", help="Topic whose partitions are reset."),
    to_earliest: bool = typer.Option(False, "--to-earliest", help="To each log start offset."),
    to_latest: bool = typer.Option(False, "--to-latest", help="To each log end offset."),
    to_offset: Optional[int] = typer.Option(None, "--to-offset", help="To this offset."),
    to_time: Optional[str] = typer.Option(None, "--to-time", metavar="ISO8601|EPOCH_MS",
                                          help="To the first record at or after this time."),
    execute: bool = typer.Option(False, "--execute", help="Apply; without it, only show the plan."),
    bootstrap: str = BootstrapOption,
    output: Output = OutputOption,
) -> None:
    """Set a group's committed offsets for a topic (a dry run unless --execute)."""
    chosen = [flag for flag, given in (("--to-earliest", to_earliest), ("--to-latest", to_latest),
                                       ("--to-offset", to_offset is not None), ("--to-time", to_time is not None))
              if given]
    if len(chosen) != 1:
        raise ValueError("give exactly one of --to-earliest, --to-latest, --to-offset N, --to-time TIME")
    if to_offset is not None and to_offset < 0:
        raise ValueError(f"--to-offset must be >= 0, got {to_offset}")
    _check_inactive(bootstrap, group)
    plan = _plan(bootstrap, topic, to_earliest, to_latest, to_offset,
                 parse_time_ms(to_time, "--to-time") if to_time is not None else None)
    if execute:
        with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
            admin.reset_offsets(group, plan)
    if output is Output.json:
        print_json([{"topic": tp.topic, "partition": tp.partition, "new_offset": o} for tp, o in plan.items()])
    else:
        print_table(["TOPIC", "PARTITION", "NEW_OFFSET"], [(tp.topic, tp.partition, o) for tp, o in plan.items()])
        if not execute:
            typer.echo("Dry run: nothing changed; add --execute to apply.", err=True)


def _check_inactive(bootstrap: str, group: str) -> None:
    """Refuse a plan for a group with live members, dry run included, as Kafka's tool does:
    their commits would overwrite the reset anyway. (The broker refuses --execute itself.)"""
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        description = admin.describe_group(group)
    if description.members:
        raise GroupNotEmptyError(
            f"cannot reset offsets of group {group}: it has {len(description.members)} live member(s) "
            f"(state {description.state}); stop its consumers first")


def _plan(bootstrap: str, topic: str, to_earliest: bool, to_latest: bool, to_offset: int | None,
          to_time_ms: int | None) -> dict[TopicPartition, int]:
    with Consumer(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as consumer:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        earliest = consumer.beginning_offsets(partitions)
        latest = consumer.end_offsets(partitions)
        if to_earliest:
            return earliest
        if to_latest:
            return latest
        if to_offset is not None:  # clamped into each partition's readable range, as Kafka does
            return {tp: min(max(to_offset, earliest[tp]), latest[tp]) for tp in partitions}
        found = consumer.offsets_for_times({tp: to_time_ms for tp in partitions})  # type: ignore[misc]
        return {tp: latest[tp] if offset is None else offset for tp, offset in found.items()}


@app.command("delete")
def delete(group: str = typer.Argument(...), bootstrap: str = BootstrapOption) -> None:
    """Delete a group and its committed offsets (refused while it has members)."""
    with Admin(bootstrap, default_api_timeout_ms=API_TIMEOUT_MS) as admin:
        admin.delete_group(group)
    typer.echo(f"Deleted group {group}.")
