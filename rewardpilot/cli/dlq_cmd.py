"""``rewardpilot dlq list|redrive|purge``: the dead-letter stream."""

from __future__ import annotations

import json
import re
import shlex

import typer
from rich.table import Table
from rich.markup import escape

from rewardpilot.cli.context import app_context, check_job_exists, check_redis, console, stdout_console
from rewardpilot.streams import DEFAULT_PREFIX

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
    """List dead letters with their run, reason, error and attempts: a table, or with --json one JSON object per line.

    A letter that records no transaction_id shows the one in its payload, if any.
    """
    from consumer import dlq

    client, keys = _client_and_keys(ctx, job)
    letters = [(letter_id, letter.model_copy(update={"transaction_id": dlq.transaction_id_of(letter)}))
               for letter_id, letter in dlq.list_dead_letters(client, keys, limit=limit)]
    if as_json:
        for letter_id, letter in letters:
            typer.echo(json.dumps({"id": letter_id, "letter": letter.model_dump(mode="json")}))
        if not letters:
            # No lines is the correct JSON-lines output, so the note goes to stderr and stdout stays empty.
            console.print(f"no dead letters in {keys.dead_letters}", markup=False, soft_wrap=True, highlight=False)
        return
    table = Table(title=f"{escape(keys.dead_letters)}: {_letters(client.xlen(keys.dead_letters))}")
    for column in ("id", "run", "transaction", "reason", "error", "status", "attempts", "last failure"):
        table.add_column(column)
    for letter_id, letter in letters:
        table.add_row(letter_id, escape(letter.run), escape(letter.transaction_id or "-"), escape(letter.reason),
                      escape(f"{letter.error_type}: {letter.error[:120]}"), str(letter.http_status or "-"),
                      str(letter.attempts), letter.last_failure_at.isoformat(timespec="seconds"))
    stdout_console().print(table)


@app.command("redrive")
def redrive(
    ctx: typer.Context,
    ids: list[str] = typer.Argument(None, help="Dead-letter ids from `dlq list`."),
    all_letters: bool = typer.Option(
        False, "--all", help="Redrive every dead letter that can be redriven, each by its own run (with --run, "
        "only that run's).",
    ),
    job: str = typer.Option(None, "--job", help="The dead letters of this `rewardpilot run` job."),
    run: str = typer.Option(
        None, "--run", show_default=False,
        help="Only the dead letters of this run: live or a replay's run name, as `dlq list` shows. "
        "Unset: every run.",
    ),
) -> None:
    """Redrive dead letters, each by the run that wrote it.

    A live letter goes back onto the transactions stream with its
    transaction_id, and the live consumers process it again. A replay run's
    letter stays off that stream, where the live consumers would read it. Its
    outcome markers are deleted with the letter, and the `rewardpilot replay`
    command that processes its entry again is printed on stdout, one line per
    run. Exit status: 0 when done, 1 when a named letter is not found or
    cannot be redriven, 2 when the ids or --run are invalid.
    """
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
        report = dlq.redrive_letters(client, keys, None if all_letters else ids, run=run)
    except dlq.RunMismatchError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except dlq.RedriveError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None

    if report.new_ids or not report.replays:
        partitions = stored_count(client, keys)
        target = keys.transactions if partitions == 1 else f"the {partitions} partition streams {keys.transactions}:p*"
        console.print(f"redrove {_letters(len(report.new_ids))} onto {target}", markup=False, soft_wrap=True)
    for replay in report.replays:
        _print_replay_command(app_context(ctx).prefix, job, replay)
    remaining = client.xlen(keys.dead_letters)
    if all_letters and remaining:
        verb = "remains" if remaining == 1 else "remain"
        console.print(f"{_letters(remaining)} {verb}: {_kept_text(report, run)}. See `rewardpilot dlq list`.",
                      markup=False, soft_wrap=True)


def _print_replay_command(prefix: str, job: str | None, replay) -> None:
    """Print, for one replay run's released letters, the replay command that processes their entries again."""
    command = ["rewardpilot"]
    if prefix != DEFAULT_PREFIX:
        command += ["--prefix", prefix]
    command += ["replay", "--run", replay.run]
    if job:
        command += ["--job", job]
    command += ["--start", replay.start_id, "--end", replay.end_id]
    console.print(
        f"deleted {_letters(replay.letters)} of run {replay.run} and their outcome markers. A replay of the "
        f"run reads entries from the transactions stream, not dead letters, so run this command to process "
        f"them again, adding the --orchestrator, --wallet and --user options the run used. Other entries in "
        f"the range that already have an outcome in run {replay.run} are skipped.",
        markup=False, soft_wrap=True, highlight=False,
    )
    typer.echo(shlex.join(command))


def _kept_text(report, run: str | None) -> str:
    """Say why ``--all`` kept letters: they cannot be redriven, belong to other runs, or were added since."""
    reasons = []
    if report.unredrivable:
        reasons.append(f"{report.unredrivable} cannot be redriven (no payload, no partition to route them to, "
                       "or a replay entry no longer in the stream)")
    if report.other_runs:
        reasons.append(f"{report.other_runs} belong to other runs than {run}")
    reasons.append("any added since")
    return ", ".join(reasons)


@app.command("purge")
def purge(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    job: str = typer.Option(None, "--job", help="The dead letters of this `rewardpilot run` job."),
) -> None:
    """Delete every dead letter and its outcome markers, after confirmation. With none, exit 0 without asking.

    A marker is deleted only while it still contains the letter's entry id,
    so the marker of a later outcome stays. With the marker gone, a
    transaction published again under the same transaction_id gets
    processed. Dead letters added while the prompt waits are kept.
    """
    from consumer import dlq

    client, keys = _client_and_keys(ctx, job)
    count = client.xlen(keys.dead_letters)
    newest = dlq.newest_letter_id(client, keys)
    if count == 0 or newest is None:
        console.print(f"no dead letters to purge in {keys.dead_letters}", markup=False, soft_wrap=True)
        return
    if not yes and not typer.confirm(f"Delete {_letters(count)} from {keys.dead_letters}?"):
        raise typer.Exit(1)
    counts = dlq.purge(client, keys, through_id=newest)
    console.print(f"purged {_letters(counts.letters)}")
    markers = "1 outcome marker" if counts.markers == 1 else f"{counts.markers} outcome markers"
    console.print(f"deleted their {markers}, so a transaction published again under the same transaction_id "
                  "gets processed. Within the producer's dedup window, publish it with "
                  "`rewardpilot publish FILE --dedup-window 0`.", markup=False, soft_wrap=True, highlight=False)


def _letters(count: int) -> str:
    return "1 dead letter" if count == 1 else f"{count} dead letters"
