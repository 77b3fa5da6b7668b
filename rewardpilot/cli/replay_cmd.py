"""``rewardpilot replay``: process a range of transactions again as a named run."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from rewardpilot.cli.consume_cmd import call_options
from rewardpilot.cli.context import app_context, check_redis, console, stdout_console
from rewardpilot.cli.options import check_cards, split_cards

if TYPE_CHECKING:
    from rewardpilot.replay import Comparison, ReplaySummary


def comparison_table(comparison: Comparison) -> Table:
    table = Table(title=f"Replay vs live: {len(comparison.differences)} of {comparison.compared} differ")
    table.add_column("transaction")
    table.add_column("user")
    table.add_column("live card")
    table.add_column("replay card")
    table.add_column("live (USD)", justify="right")
    table.add_column("replay (USD)", justify="right")
    table.add_column("change (USD)", justify="right")
    for row in comparison.differences:
        table.add_row(escape(row.transaction_id), escape(row.user_id), escape(row.live_card), escape(row.replay_card),
                      f"{row.live_value_usd:,.2f}", f"{row.replay_value_usd:,.2f}", f"{row.change_usd:+,.2f}")
    table.caption = (f"rewards: live {comparison.live_total_usd:,.2f}, replay {comparison.replay_total_usd:,.2f}, "
                     f"change {comparison.total_change_usd:+,.2f} USD")
    return table


def print_summary(summary: ReplaySummary) -> None:
    out = stdout_console()
    out.print(f"run {summary.run}: {summary.results} new results, {summary.duplicates} already present, "
              f"{summary.dead_letters} dead letters; results stream follows with "
              f"`rewardpilot subscribe --run {summary.run} --from-start`")
    if summary.comparison is None:
        return
    out.print(comparison_table(summary.comparison))
    if summary.comparison.missing_live:
        out.print(f"{len(summary.comparison.missing_live)} replayed transactions have no live result to compare with")


def replay(
    ctx: typer.Context,
    start: str = typer.Option(..., "--start", help="First entry: a stream id (1700000000000-0) or ISO 8601 time (UTC when no offset)."),
    end: str = typer.Option(None, "--end", help="Last entry, inclusive, in the same forms. Unset: the end of the stream.", show_default=False),
    user: str = typer.Option(None, "--user", help="Only this user's transactions.", show_default=False),
    run: str = typer.Option(..., "--run", help="Run name; results go to this run's own results stream."),
    compare: bool = typer.Option(False, "--compare", help="Report where the replay differs from the live results."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    job: str = typer.Option(None, "--job", help="Replay the streams of this `rewardpilot run` job."),
    workers: int = typer.Option(2, "--workers", min=1, max=256, help="asyncio workers."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=10_000, help="XREADGROUP COUNT: entries per micro-batch."),
    wallet: list[str] = typer.Option(None, "--wallet", help="Cards to judge users without a wallet against (repeat or comma-separate)."),
    orchestrator: str = typer.Option(None, "--orchestrator", help="Orchestrator URL (env ORCHESTRATOR_URL). Unset: the in-process engine.", show_default=False),
    rate: str = typer.Option(None, "--rate", help="Shared rate limit of orchestrator calls, such as 100/min.", show_default=False),
) -> None:
    """Process a range of the transactions stream again, through the run's own consumer group."""
    from consumer.errors import InvalidRateLimitError
    from rewardpilot.job import job_lifetime
    from rewardpilot.replay import InvalidReplayError, replay_async

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    options = call_options(orchestrator, rate, None, None, None, None, None, None)
    cards = check_cards(split_cards(wallet))
    # What a replay of a job writes must not outlive the job, or a new job under the
    # same id and run name would skip its transactions as already processed.
    lifetime = job_lifetime(client, context.keys(job))
    ttl_seconds = lifetime.remaining_seconds if lifetime is not None else None

    async def main() -> ReplaySummary:
        client = context.async_client(block_ms=200)
        try:
            return await replay_async(
                client, context.keys(job), start=start, end=end, user=user, run=run, workers=workers,
                batch_size=batch_size, wallet=cards, options=options, compare=compare, ttl_seconds=ttl_seconds,
            )
        finally:
            await client.aclose()

    try:
        summary = asyncio.run(main())
    except (InvalidReplayError, InvalidRateLimitError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        print_summary(summary)
    if ttl_seconds is not None:
        expires = datetime.now(timezone.utc) + timedelta(seconds=ttl_seconds)
        console.print(f"the job's keys expire at {expires:%Y-%m-%d %H:%M} UTC, and this replay's results, "
                      "de-duplication markers and cap spend expire with them", soft_wrap=True, highlight=False)
    if not summary.delivered:
        _explain_empty_range(client, context.keys(job).transactions, summary)


def _explain_empty_range(client, stream: str, summary: ReplaySummary) -> None:
    """Say that a replay found nothing in its range, and when the stream's entries were published.

    --start and --end are times of publishing (stream ids), not purchase times,
    and a user who reads them as purchase dates gets an empty replay.
    """
    first = client.xrange(stream, count=1)
    last = client.xrevrange(stream, count=1)
    if not first:
        console.print(f"no entries to replay: {escape(stream)} is empty", soft_wrap=True)
        return
    span = f"{_publish_time(first[0][0])} to {_publish_time(last[0][0])}"
    console.print(f"no entries in the range: --start and --end are times of publishing, not purchase dates, "
                  f"and {escape(stream)} holds entries published from {span}", soft_wrap=True)


def _publish_time(entry_id) -> str:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    moment = datetime.fromtimestamp(int(text.partition("-")[0]) / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
