"""The ``logd`` command line (typer): serve, topic, produce, consume, group.

``app`` is the console script's entry point (``logd.cli:app``). Every client command
takes ``--bootstrap HOST:PORT`` (env ``LOGD_BOOTSTRAP``); commands that print data take
``--output table|json``. Errors are one line on stderr and a non-zero exit: see
``_common.LogdGroup``, the only place that reports them.
"""

from __future__ import annotations

from typing import Optional

import typer

import logd

from . import _clients, _groups, _serve, _topics
from ._common import LogdGroup

app = typer.Typer(
    name="logd",
    cls=LogdGroup,
    help="logd: a Kafka-style partitioned commit log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"logd {logd.__version__}")
        raise typer.Exit(0)


@app.callback()
def main(version: Optional[bool] = typer.Option(None, "--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")) -> None:
    """logd: a Kafka-style partitioned commit log."""


app.command("serve")(_serve.serve)
app.add_typer(_topics.app, name="topic")
app.command("produce")(_clients.produce)
app.command("consume")(_clients.consume)
app.add_typer(_groups.app, name="group")

__all__ = ["app"]
