"""``logd produce`` and ``logd consume``."""

from __future__ import annotations

import sys
import time
from typing import List, Optional

import typer

from logd_sdk import Consumer, Producer, Record, TopicPartition

from ._common import (
    API_TIMEOUT_MS,
    BootstrapOption,
    Output,
    OutputOption,
    parse_pairs,
    parse_time_ms,
    print_json,
    text_of,
)

FORMAT_FIELDS = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers")


def produce(
    topic: str = typer.Argument(...),
    key: Optional[str] = typer.Option(None, "--key", "-k", help="Key of every record."),
    partition: Optional[int] = typer.Option(None, "--partition", "-p", help="Partition (default: by key)."),
    header: Optional[List[str]] = typer.Option(None, "--header", "-H", metavar="K=V", help="Header, repeatable."),
    key_separator: Optional[str] = typer.Option(None, "--key-separator", metavar="SEP",
                                                help="Split each line at the first SEP into key and value "
                                                     "(a line without SEP ends the command)."),
    value: Optional[str] = typer.Option(None, "--value", "-v", help="Send this one value instead of stdin lines."),
    bootstrap: str = BootstrapOption,
    output: Output = OutputOption,
) -> None:
    """Produce one record per stdin line (or the --value). --output json prints each record's metadata."""
    if key is not None and key_separator is not None:
        raise ValueError("use either --key or --key-separator, not both")
    if key_separator == "":
        raise ValueError("--key-separator must not be empty")
    headers = [(k, v.encode()) for k, v in parse_pairs(header, "--header")] or None
    fixed_key = key.encode() if key is not None else None
    separator = key_separator.encode() if key_separator is not None else None
    lines = [value.encode()] if value is not None else _stdin_lines()
    with Producer(bootstrap, linger_ms=5, max_block_ms=API_TIMEOUT_MS, delivery_timeout_ms=30000) as producer:
        futures = []
        for number, line in enumerate(lines, 1):
            record_key = fixed_key
            if separator is not None:
                record_key, sep, line = line.partition(separator)
                if not sep:  # lines stream from stdin: the ones before were already sent
                    sent = f"lines 1-{number - 1} were sent, none after" if number > 1 else "nothing was sent"
                    raise ValueError(f"line {number} has no key separator {key_separator!r}; {sent}")
            futures.append(producer.send(topic, value=line, key=record_key, headers=headers, partition=partition))
        producer.flush()
        for future in futures:
            metadata = future.result()
            if output is Output.json:
                print_json(metadata)


def _stdin_lines():
    for line in sys.stdin.buffer:
        yield line[:-1] if line.endswith(b"\n") else line


def consume(
    topic: str = typer.Argument(...),
    group: Optional[str] = typer.Option(None, "--group", "-g", help="Consumer group."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the log start offset."),
    partition: Optional[int] = typer.Option(None, "--partition", "-p", help="Only this partition."),
    offset: Optional[int] = typer.Option(None, "--offset", help="Start at this offset (each partition read)."),
    from_time: Optional[str] = typer.Option(None, "--from-time", metavar="ISO8601|EPOCH_MS",
                                            help="Start at the first record at or after this time."),
    max_messages: Optional[int] = typer.Option(None, "--max-messages", "-n", help="Stop after N records."),
    timeout_ms: Optional[int] = typer.Option(None, "--timeout-ms", help="Stop after MS without a new record."),
    format_: str = typer.Option("{value}", "--format", "-f",
                                help="Line template; fields: " + ", ".join("{%s}" % f for f in FORMAT_FIELDS)),
    bootstrap: str = BootstrapOption,
    output: Output = OutputOption,
) -> None:
    """Print records of a topic; replay from an offset (--offset) or a time (--from-time)."""
    starts = [name for name, given in (("--from-beginning", from_beginning), ("--offset", offset is not None),
                                       ("--from-time", from_time is not None)) if given]
    if len(starts) > 1:
        raise ValueError(f"choose one of {', '.join(starts)}")
    if max_messages is not None and max_messages < 0:
        raise ValueError("--max-messages must be >= 0")
    if timeout_ms is not None and timeout_ms < 0:
        raise ValueError("--timeout-ms must be >= 0")
    if offset is not None and offset < 0:
        raise ValueError(f"--offset must be >= 0, got {offset}")
    start_ms = parse_time_ms(from_time, "--from-time") if from_time is not None else None
    render = _renderer(format_, output)
    # An explicit --offset outside the log is the user's mistake to hear about
    # (OffsetOutOfRangeError, naming the range), not a silent jump to the end.
    reset = "earliest" if from_beginning else "none" if offset is not None else "latest"
    consumer = Consumer(bootstrap, group_id=group, auto_offset_reset=reset,
                        enable_auto_commit=group is not None, default_api_timeout_ms=API_TIMEOUT_MS)
    try:
        _position(consumer, topic, group, partition, offset, start_ms, from_beginning)
        _print_records(consumer, render, max_messages, timeout_ms)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _position(consumer: Consumer, topic: str, group: str | None, partition: int | None, offset: int | None,
              start_ms: int | None, from_beginning: bool) -> None:
    if group is not None and partition is None:
        if offset is not None or start_ms is not None:
            # The group decides which partitions this consumer gets (Kafka's console
            # consumer has the same rule); the group's committed offsets say where.
            raise ValueError("--offset and --from-time need --partition when used with --group")
        consumer.partitions_for_topic(topic)  # fail now if the topic does not exist
        consumer.subscribe([topic])
        return
    available = consumer.partitions_for_topic(topic)
    if partition is not None and partition not in available:
        raise ValueError(f"topic {topic!r} has no partition {partition} (it has {len(available)})")
    partitions = [TopicPartition(topic, p) for p in ([partition] if partition is not None else sorted(available))]
    consumer.assign(partitions)
    if offset is not None:
        for tp in partitions:
            consumer.seek(tp, offset)
    elif start_ms is not None:
        for tp, found in consumer.offsets_for_times({tp: start_ms for tp in partitions}).items():
            if found is None:
                consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found)
    elif from_beginning:
        consumer.seek_to_beginning()


def _renderer(template: str, output: Output):
    if output is Output.json:
        return lambda record: print_json(record)
    # A sample of each field's real type: "{offset:>8d}" is fine, "{value.x}" is not.
    sample = {name: 0 if name in ("partition", "offset", "timestamp_ms") else "" for name in FORMAT_FIELDS}
    try:
        template.format(**sample)
    except Exception as exc:  # whatever str.format raises: a one-line error, not a traceback
        raise ValueError(f"bad --format {template!r} ({exc}); fields: "
                         + ", ".join("{%s}" % f for f in FORMAT_FIELDS)) from None

    def render(record: Record) -> None:
        typer.echo(template.format(
            topic=record.topic, partition=record.partition, offset=record.offset,
            timestamp_ms=record.timestamp_ms, key=_show(record.key), value=_show(record.value),
            headers=",".join(f"{k}={_show(v)}" for k, v in record.headers)))
    return render


def _show(data: bytes | None) -> str:
    return "null" if data is None else text_of(data)  # type: ignore[return-value]


def _print_records(consumer: Consumer, render, max_messages: int | None, timeout_ms: int | None) -> None:
    printed = 0
    last_record = time.monotonic()
    while max_messages is None or printed < max_messages:
        wait_ms = 1000
        if timeout_ms is not None:
            wait_ms = int(max(0.0, timeout_ms / 1000.0 - (time.monotonic() - last_record)) * 1000)
        limit = None if max_messages is None else max_messages - printed
        records = consumer.poll(timeout_ms=wait_ms, max_records=limit)
        if records:
            last_record = time.monotonic()
            for record in records:
                render(record)
            printed += len(records)
            sys.stdout.flush()
        elif timeout_ms is not None and (time.monotonic() - last_record) * 1000 >= timeout_ms:
            return
