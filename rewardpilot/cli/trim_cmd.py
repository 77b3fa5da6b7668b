"""``rewardpilot trim``: remove old transactions that every consumer group is done with."""

from __future__ import annotations

import asyncio
import json

import typer

from rewardpilot.cli.context import app_context, check_redis, console, stdout_console
from rewardpilot.retention import InvalidAgeError, TrimReport, parse_age
from rewardpilot.retention import trim as trim_stream


def trim(
    ctx: typer.Context,
    older_than: str = typer.Option(..., "--older-than", help="Remove entries older than this age: 90s, 15m, 12h, 30d or 2w."),
    job: str = typer.Option(None, "--job", help="Trim the transactions stream of this `rewardpilot run` job."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be removed and remove nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Trim the transactions stream by MINID, never past an entry a consumer group has not read or acknowledged."""
    try:
        age = parse_age(older_than)
    except InvalidAgeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    context = app_context(ctx)
    check_redis(context.client(), context)
    stream = context.keys(job).transactions

    async def main() -> TrimReport:
        client = context.async_client()
        try:
            return await trim_stream(client, stream, age, dry_run=dry_run)
        finally:
            await client.aclose()

    report = asyncio.run(main())
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return

    verb = "would remove" if dry_run else "removed"
    out = stdout_console()
    out.print(f"{stream}: {verb} {report.removed} entries older than {report.min_id}")
    if report.held_back_by:
        out.print(f"consumer group {report.held_back_by!r} held the trim back to {report.min_id} "
                  f"(cutoff was {report.cutoff_id}): it has entries there it has not read or acknowledged")
