"""``rewardpilot dlq list|redrive|purge``: the dead-letter stream."""

from __future__ import annotations

import json
import re
import shlex

import typer
from rich.table import Table
from rich.markup import escape

from rewardpilot.cli.context import app_context, base_command, check_job_exists, check_redis, console, stdout_console

_STREAM_ID = re.compile(r"^(\d+)(?:-(\d+))?$")

app = typer.Typer(help="Inspect, redrive or purge dead letters.", no_args_is_help=True)


def _client_and_keys(ctx: typer.Context, job: str | None):
    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    keys = context.keys(job)
    check_job_exists(client, context, keys)
    return client, keys


# Rows the table shows when --limit is not given. --json prints every letter unless --limit is given.
TABLE_ROWS = 20


def _run_option():
    return typer.Option(
        None, "--run", show_default=False,
        help="Only the dead letters of this run: live or a replay's run name, as `dlq list` shows. "
        "Unset: every run.",
    )


@app.command("list")
def list_letters(
    ctx: typer.Context,
    limit: int = typer.Option(
        None, "--limit", min=1, show_default=False,
        help=f"Show at most this many, oldest first. Unset: {TABLE_ROWS} in the table, every one with --json.",
    ),
    job: str = typer.Option(None, "--job", help="The dead letters of this `rewardpilot run` job."),
    run: str = _run_option(),
    as_json: bool = typer.Option(
        False, "--json",
        help='Print JSON lines: one object per dead letter, {"id": ..., "letter": {...}}, or {"id": ..., '
        '"unreadable": {"error": ..., "data": ...}} for one whose JSON cannot be read; nothing on stdout '
        "when there are none.",
    ),
) -> None:
    """List dead letters with their run, reason, error and attempts: a table, or with --json one JSON object per line.

    A letter that records no transaction_id shows the one in its payload, if
    any. A letter whose JSON cannot be read is listed as unreadable, with
    the parse error, and left out under --run. When the table leaves letters
    out, a note on stderr gives how many.
    Exit status: 0 when listed, 2 when --run names a run that no dead letter has.
    """
    from consumer import dlq

    client, keys = _client_and_keys(ctx, job)
    total = client.xlen(keys.dead_letters) if run is None else _count_of_run(client, keys, run)
    row_limit = limit if limit is not None or as_json else TABLE_ROWS
    # A generator, so --json prints every letter without holding them all in memory.
    listed = ((letter_id, _with_transaction_id(dlq, letter))
              for letter_id, letter in dlq.list_letter_entries(client, keys, limit=row_limit, run=run))
    if as_json:
        printed = 0
        for letter_id, letter in listed:
            if isinstance(letter, dlq.UnreadableLetter):
                line = {"id": letter_id, "unreadable": {"error": letter.error, "data": letter.data}}
            else:
                line = {"id": letter_id, "letter": letter.model_dump(mode="json")}
            typer.echo(json.dumps(line))
            printed += 1
        if not printed:
            # No lines is the correct JSON-lines output, so the note goes to stderr and stdout stays empty.
            console.print(f"no dead letters in {keys.dead_letters}", markup=False, soft_wrap=True, highlight=False)
        return

    letters = list(listed)
    of_run = f" of run {run}" if run is not None else ""
    table = Table(title=escape(f"{keys.dead_letters}: {_letters(total)}{of_run}"))
    for column in ("id", "run", "transaction", "reason", "error", "status", "attempts", "last failure"):
        table.add_column(column)
    for letter_id, letter in letters:
        if isinstance(letter, dlq.UnreadableLetter):
            table.add_row(letter_id, "-", "-", "unreadable letter", escape(letter.error[:120]), "-", "-", "-")
            continue
        table.add_row(letter_id, escape(letter.run), escape(letter.transaction_id or "-"), escape(letter.reason),
                      escape(f"{letter.error_type}: {letter.error[:120]}"), str(letter.http_status or "-"),
                      str(letter.attempts), letter.last_failure_at.isoformat(timespec="seconds"))
    stdout_console().print(table)
    if len(letters) < total:
        console.print(f"showing the oldest {len(letters)} of {_letters(total)}{of_run}; pass --limit {total} "
                      "to show them all, or --json for every one as JSON lines",
                      markup=False, soft_wrap=True, highlight=False)


def _with_transaction_id(dlq, letter):
    """Return ``letter`` with the transaction_id of its payload when it records none; an unreadable one as is."""
    if isinstance(letter, dlq.UnreadableLetter):
        return letter
    return letter.model_copy(update={"transaction_id": dlq.transaction_id_of(letter)})


def _count_of_run(client, keys, run: str, through_id: str = "+") -> int:
    """Return how many dead letters up to ``through_id`` belong to ``run``; exit 2 when none does."""
    from consumer import dlq

    try:
        return dlq.count_run_letters(client, keys, run, through_id=through_id)
    except dlq.RunMismatchError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("redrive")
def redrive(
    ctx: typer.Context,
    ids: list[str] = typer.Argument(None, help="Dead-letter ids from `dlq list`."),
    all_letters: bool = typer.Option(
        False, "--all", help="Redrive every dead letter that can be redriven, each by its own run (with --run, "
        "only that run's).",
    ),
    job: str = typer.Option(None, "--job", help="The dead letters of this `rewardpilot run` job."),
    run: str = _run_option(),
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

    if ids and all_letters:
        console.print("[red]error:[/red] dead-letter ids and --all were both given; give the ids to redrive "
                      "those letters, or --all alone to redrive every one", soft_wrap=True)
        raise typer.Exit(2)
    if not ids and not all_letters:
        every = f"every dead letter of run {run}" if run is not None else "every dead letter"
        console.print(f"[red]error:[/red] no dead letters named; give their ids (see `rewardpilot dlq list`), "
                      f"or --all to redrive {escape(every)}", soft_wrap=True)
        raise typer.Exit(2)
    bad = [entry_id for entry_id in ids or () if not _is_stream_id(entry_id)]
    if bad:
        from rewardpilot.replay import MAX_SEQUENCE

        console.print(f"[red]error:[/red] {escape(', '.join(map(repr, bad)))}: not a stream entry id; both parts "
                      f"of an id (milliseconds-sequence) are whole numbers from 0 to {MAX_SEQUENCE} (2^64 - 1), "
                      "and dead-letter ids look like 1764806400000-0 (see `rewardpilot dlq list`)",
                      soft_wrap=True, highlight=False)
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
        context = app_context(ctx)
        _print_replay_command(context.prefix, job, replay, context.redis_url)
    remaining = client.xlen(keys.dead_letters)
    if all_letters and remaining:
        verb = "remains" if remaining == 1 else "remain"
        console.print(f"{_letters(remaining)} {verb}: {_kept_text(report, run)}. See `rewardpilot dlq list`.",
                      markup=False, soft_wrap=True)


def _is_stream_id(text: str) -> bool:
    """Return True for ``MILLISECONDS[-SEQUENCE]`` with both parts at most 2^64 - 1, as XADD and XRANGE take them."""
    from rewardpilot.replay import MAX_SEQUENCE

    match = _STREAM_ID.match(text)
    if match is None:
        return False
    # The length is checked before int(), which raises ValueError on more than 4,300 digits.
    parts = [part.lstrip("0") or "0" for part in match.groups() if part is not None]
    return all(len(part) <= 20 and int(part) <= MAX_SEQUENCE for part in parts)


def _print_replay_command(prefix: str, job: str | None, replay, redis_url: str | None = None) -> None:
    """Print, for one replay run's released letters, the replay command that processes their entries again."""
    command = base_command(prefix, redis_url)
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
    run: str = _run_option(),
) -> None:
    """Delete every dead letter (with --run, every one of that run) and its outcome markers, after confirmation.

    A marker is deleted only while it still contains the letter's entry id,
    so the marker of a later outcome stays. With the marker gone, a
    transaction published again under the same transaction_id gets
    processed. Dead letters added while the prompt waits are kept. With
    --run, a letter whose JSON cannot be read names no run, so it is kept.
    Exit status: 0 when purged or when there is nothing to purge (no
    prompt), 1 when the prompt is declined, 2 when --run names a run that
    no dead letter has.
    """
    from consumer import dlq

    client, keys = _client_and_keys(ctx, job)
    newest = dlq.newest_letter_id(client, keys)
    if run is None:
        count = client.xlen(keys.dead_letters)
        if count == 0 or newest is None:
            console.print(f"no dead letters to purge in {keys.dead_letters}", markup=False, soft_wrap=True)
            return
    else:
        count = _count_of_run(client, keys, run, newest or "+")
    of_run = f" of run {run}" if run is not None else ""
    if not yes and not typer.confirm(f"Delete {_letters(count)}{of_run} from {keys.dead_letters}?"):
        raise typer.Exit(1)
    counts = dlq.purge(client, keys, through_id=newest, run=run)
    console.print(f"purged {_letters(counts.letters)}{of_run}", markup=False)
    markers = "1 outcome marker" if counts.markers == 1 else f"{counts.markers} outcome markers"
    console.print(f"deleted their {markers}, so a transaction published again under the same transaction_id "
                  "gets processed. Within the producer's dedup window, publish it with "
                  "`rewardpilot publish FILE --dedup-window 0`.", markup=False, soft_wrap=True, highlight=False)


def _letters(count: int) -> str:
    return "1 dead letter" if count == 1 else f"{count} dead letters"
