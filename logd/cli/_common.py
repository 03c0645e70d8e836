"""What every CLI command shares: the error boundary, options, parsing and printing.

The error boundary is :class:`LogdGroup`, the root command's class: it runs the whole
command line and turns every expected failure (a typed ``LogdError``, ``ValueError``,
``NotImplementedError``, ``OSError``, a click usage error) into one line on stderr and a
non-zero exit; nothing else in the CLI catches errors to print them.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from datetime import datetime
from typing import Any, Iterable, Sequence

import typer
from typer.core import TyperGroup

from logd_sdk import LogdError, TopicPartition

BOOTSTRAP_ENV = "LOGD_BOOTSTRAP"
DEFAULT_BOOTSTRAP = "127.0.0.1:7070"
#: How long a command keeps retrying an unreachable broker.
API_TIMEOUT_MS = 5000
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_FAILURE) -> None:
    """Print one error line on stderr and exit with ``code``."""
    first_line = " ".join(str(message).split()) or "unknown error"
    typer.echo(f"logd: error: {first_line}", err=True)
    sys.exit(code)


class LogdGroup(TyperGroup):
    """The root command: runs without click's standalone handling, reports errors itself."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args=args, prog_name=prog_name or "logd", standalone_mode=False, **extra)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            fail("interrupted", EXIT_INTERRUPTED)
        except typer.TyperException as exc:  # click's usage errors (typer vendors click)
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
                sys.exit(EXIT_USAGE)
            fail(exc.format_message() if hasattr(exc, "format_message") else str(exc),  # type: ignore[attr-defined]
                 getattr(exc, "exit_code", EXIT_USAGE))
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(EXIT_FAILURE)
        except LogdError as exc:
            fail(f"{type(exc).__name__}: {exc}")
        except NotImplementedError as exc:
            fail(str(exc) or "not implemented yet")
        except (ValueError, OSError) as exc:
            fail(str(exc))
        sys.exit(result if isinstance(result, int) else 0)


def _silence_stdout() -> None:
    """After EPIPE (``logd consume | head``) further writes must not raise again at exit."""
    try:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class Output(str, enum.Enum):
    table = "table"
    json = "json"


BootstrapOption = typer.Option(DEFAULT_BOOTSTRAP, "--bootstrap", envvar=BOOTSTRAP_ENV, metavar="HOST:PORT",
                               help="Broker address (env LOGD_BOOTSTRAP).")
OutputOption = typer.Option(Output.table, "--output", "-o", help="table or json.")


# -- parsing ---------------------------------------------------------------------------------

def parse_pairs(items: Iterable[str] | None, what: str) -> list[tuple[str, str]]:
    """``K=V`` strings as (K, V) pairs, split at the first '='."""
    pairs = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        pairs.append((key, value))
    return pairs


def parse_time_ms(text: str, flag: str) -> int:
    """Epoch milliseconds from ``EPOCH_MS`` digits or an ISO 8601 date-time.

    A date-time without a zone is local time (as Kafka's tools read it).
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"{flag} must be ISO 8601 (e.g. 2024-05-01T12:00:00Z) or epoch milliseconds, "
                         f"got {text!r}") from None
    return int(moment.timestamp() * 1000)


# -- printing --------------------------------------------------------------------------------

def text_of(data: bytes | None) -> str | None:
    """Bytes as text for people and JSON: UTF-8, undecodable bytes as backslash escapes."""
    return None if data is None else data.decode("utf-8", errors="backslashreplace")


def to_jsonable(value: Any) -> Any:
    """SDK dataclasses as JSON with the same field names; TopicPartition-keyed dicts become
    lists of objects carrying "topic" and "partition"; bytes become text."""
    if isinstance(value, TopicPartition):
        return {"topic": value.topic, "partition": value.partition}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        if value and all(isinstance(k, TopicPartition) for k in value):
            rows = []
            for tp, item in value.items():
                row = {"topic": tp.topic, "partition": tp.partition}
                converted = to_jsonable(item)
                row.update(converted if isinstance(converted, dict) else {"value": converted})
                rows.append(row)
            return rows
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return text_of(bytes(value))
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable(value), ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Left-aligned columns separated by two spaces; None prints as '-'."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in [list(headers), *cells]:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
