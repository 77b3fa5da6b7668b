"""``rewardpilot dlq list|redrive|purge``: the dead-letter stream."""

from __future__ import annotations

import json
import re

import typer
from rich.table import Table
from rich.markup import escape

from rewardpilot.cli.context import app_context, check_job_exists, check_redis, console, stdout_console
from rewardpilot.streams import LIVE_RUN

_STREAM_ID = re.compile(r"^\d+(-\d+)?$")

app = typer.Typer(help="Inspect, redrive or purge dead letters.", no_args_is_help=True)


def _client_and_keys(ctx: typer.Context, job: str | None):
    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    keys = context.keys(job)
    check_job_exists(client, context, keys)
    return client, keys


@app.command("list")
def list_letters(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, help="Show at most this many, oldest first."),
    job: str = typer.Option(None, "--job", help="The dead letters of this `rewardpilot run` job."),
    as_json: bool = typer.Option(
        False, "--json",
        help='Print JSON lines: one object per dead letter, {"id": ..., "letter": {...}}, and nothing on stdout '
        "when there are none.",
    ),
) -> None:
    """List dead letters with their reason, error and attempts: a table, or with --json one JSON object per line."""
    from consumer import dlq

    client, keys = _client_and_keys(ctx, job)
    letters = list(dlq.list_dead_letters(client, keys, limit=limit))
    if as_json:
        for letter_id, letter in letters:
            typer.echo(json.dumps({"id": letter_id, "letter": letter.model_dump(mode="json")}))
        if not letters:
            # No lines is the correct JSON-lines output, so the note goes to stderr and stdout stays empty.
            console.print(f"no dead letters in {keys.dead_letters}", markup=False, soft_wrap=True, highlight=False)
        return
    table = Table(title=f"{escape(keys.dead_letters)}: {_letters(client.xlen(keys.dead_letters))}")
    for column in ("id", "transaction", "reason", "error", "status", "attempts", "last failure"):
        table.add_column(column)
    for letter_id, letter in letters:
        table.add_row(letter_id, escape(letter.transaction_id or "-"), escape(letter.reason),
                      escape(f"{letter.error_type}: {letter.error[:120]}"), str(letter.http_status or "-"),
                      str(letter.attempts), letter.last_failure_at.isoformat(timespec="seconds"))
    stdout_console().print(table)


@app.command("redrive")
def redrive(
    ctx: typer.Context,
    ids: list[str] = typer.Argument(None, help="Dead-letter ids from `dlq list`."),
    all_letters: bool = typer.Option(False, "--all", help="Redrive every dead letter that has a payload."),
    job: str = typer.Option(None, "--job", help="The dead letters of this `rewardpilot run` job."),
    run: str = typer.Option(LIVE_RUN, "--run", help="The run whose outcome markers are cleared."),
) -> None:
    """Put dead letters back onto the transactions stream, keeping each transaction_id."""
    from consumer import dlq
    from rewardpilot.partitions import stored_count

    if bool(ids) == all_letters:
        console.print("[red]error:[/red] name dead-letter ids or pass --all (not both)")
        raise typer.Exit(2)
    bad = [entry_id for entry_id in ids or () if not _STREAM_ID.match(entry_id)]
    if bad:
        console.print(f"[red]error:[/red] {', '.join(map(repr, bad))}: not a stream entry id; dead-letter ids look "
                      "like 1764806400000-0 (see `rewardpilot dlq list`)")
        raise typer.Exit(2)
    client, keys = _client_and_keys(ctx, job)
    try:
        new_ids = dlq.redrive(client, keys, None if all_letters else ids, run=run)
    except dlq.RedriveError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    partitions = stored_count(client, keys)
    target = keys.transactions if partitions == 1 else f"the {partitions} partition streams {keys.transactions}:p*"
    console.print(f"redrove {_letters(len(new_ids))} onto {target}")
    remaining = client.xlen(keys.dead_letters)
    if all_letters and remaining:
        verb = "remains" if remaining == 1 else "remain"
        console.print(f"{_letters(remaining)} {verb}: those that cannot be redriven (no payload, or no "
                      "partition to route them to) and any added since; see `rewardpilot dlq list`")


@app.command("purge")
def purge(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    job: str = typer.Option(None, "--job", help="The dead letters of this `rewardpilot run` job."),
) -> None:
    """Delete every dead letter, after confirmation. With none, exit 0 without asking."""
    from consumer import dlq

    client, keys = _client_and_keys(ctx, job)
    count = client.xlen(keys.dead_letters)
    if count == 0:
        console.print(f"no dead letters to purge in {keys.dead_letters}", markup=False, soft_wrap=True)
        return
    if not yes and not typer.confirm(f"Delete {_letters(count)} from {keys.dead_letters}?"):
        raise typer.Exit(1)
    console.print(f"purged {_letters(dlq.purge(client, keys))}")


def _letters(count: int) -> str:
    return "1 dead letter" if count == 1 else f"{count} dead letters"
