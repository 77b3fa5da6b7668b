"""``rewardpilot status``: streams, consumer groups, consumers and dead letters."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from rewardpilot.cli.context import app_context, check_redis, stdout_console
from rewardpilot.status import collect_status


def _render(snapshot: dict) -> Table:
    transactions = snapshot["transactions"]
    table = Table(title=f"{transactions['stream']}: {transactions['length']} entries")
    for column in ("group", "lag", "pending", "oldest pending (s)", "consumer", "consumer pending", "idle (s)"):
        table.add_column(column, justify="left" if column in ("group", "consumer") else "right")
    for group in transactions["groups"]:
        oldest = group["oldest_pending_age_ms"]
        oldest_text = f"{oldest / 1000:.1f}" if oldest is not None else "-"
        consumers = group["consumers"] or [{"name": "-", "pending": "-", "idle_ms": None}]
        for index, consumer in enumerate(consumers):
            idle = consumer["idle_ms"]
            table.add_row(
                group["name"] if index == 0 else "",
                str(group["lag"]) if index == 0 else "",
                str(group["pending"]) if index == 0 else "",
                oldest_text if index == 0 else "",
                consumer["name"], str(consumer["pending"]),
                f"{idle / 1000:.1f}" if idle is not None else "-",
            )
    results = ", ".join(f"{run}: {count}" for run, count in snapshot["results"].items())
    table.caption = f"results {results}; dead letters: {snapshot['dead_letters']}; {_rate_text(snapshot.get('rate_limit'))}"
    return table


def _rate_text(rate_limit: dict | None) -> str:
    if rate_limit is None:
        return "orchestrator rate limit: not in use"
    return (
        f"orchestrator rate: {rate_limit['effective_rate']:.3g}/s effective of "
        f"{rate_limit['configured_rate']:.3g}/s configured, {rate_limit['tokens']:.1f} tokens"
    )


def status(
    ctx: typer.Context,
    job: str = typer.Option(None, "--job", help="Show the streams of this `rewardpilot run` job."),
    as_json: bool = typer.Option(False, "--json", help="Print the snapshot as JSON."),
) -> None:
    """Show stream lengths, group lag and pending entries, consumers, dead letters and the orchestrator rate."""
    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    snapshot = collect_status(client, context.keys(job))
    if as_json:
        typer.echo(json.dumps(snapshot))
        return
    stdout_console().print(_render(snapshot))
