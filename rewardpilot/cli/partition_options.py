"""The ``--partitions`` option of publish, consume and run, and its check against Redis."""

from __future__ import annotations

import typer

from rewardpilot.cli.context import console
from rewardpilot.partitions import MAX_PARTITIONS, PARTITIONS_ENV, PartitionCountError, agree_count

PARTITIONS_HELP = (
    f"Streams to partition transactions over by user id, 1 to {MAX_PARTITIONS} (env {PARTITIONS_ENV}). "
    "Unset: the count stored for this prefix, or 1 (the single stream)."
)


def partitions_option():
    return typer.Option(None, "--partitions", envvar=PARTITIONS_ENV, min=1, max=MAX_PARTITIONS,
                        help=PARTITIONS_HELP, show_default=False)


def agreed_partitions(client, keys, requested: int | None) -> int:
    """Store or check the partition count for ``keys``; exit 2 with the reason when it differs."""
    try:
        return agree_count(client, keys, requested)
    except PartitionCountError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
