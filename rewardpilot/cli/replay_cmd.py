"""``rewardpilot replay``: process a range of transactions again as a named run."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from rewardpilot.cli.consume_cmd import call_options
from rewardpilot.cli.context import (
    app_context, base_command, check_job_exists, check_redis, console, stdout_console,
)
from rewardpilot.cli.options import check_cards, split_cards
from rewardpilot.streams import DEFAULT_PREFIX, entry_key

if TYPE_CHECKING:
    from consumer.shutdown import Interruption
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


def print_summary(summary: ReplaySummary, prefix: str = DEFAULT_PREFIX, job: str | None = None,
                  redis_url: str | None = None) -> None:
    """Print the replay's counts, the command that follows its results stream, and the comparison if any.

    ``prefix``, ``job`` and ``redis_url`` (``--redis-url``, if given) are
    the ones the replay ran with, so the printed command reads the same
    results stream.
    """
    out = stdout_console()
    # markup off: job ids and prefixes may contain brackets, and the command is copied as printed.
    out.print(f"run {summary.run}: {_counts_text(summary)}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"follow its results with: {subscribe_command(prefix, job, summary.run, redis_url)}",
              markup=False, highlight=False, soft_wrap=True)
    if summary.comparison is not None:
        out.print(comparison_table(summary.comparison))
    for note in duplicate_notes(summary):
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if summary.comparison is not None and summary.comparison.missing_live:
        out.print(f"{len(summary.comparison.missing_live)} replayed transactions have no live result to compare with")


def duplicate_notes(summary: ReplaySummary) -> list[str]:
    """Explain the entries skipped as duplicates, by cause, and what to do about each.

    An entry whose marker names itself was settled by an earlier replay under
    the same run name, and a new run name judges it again. An entry whose
    marker names another entry repeats that entry's transaction_id in the
    stream, and every run skips it, whatever its name. The note on earlier
    replays is about the comparison, so it comes only with one.
    """
    notes = []
    settled_before = summary.settled_before
    if settled_before and summary.comparison is not None:
        # The comparison reads the run's whole results stream, so it mixes in what earlier replays wrote.
        kept = "1 entry keeps its result" if settled_before == 1 else f"{settled_before} entries keep their results"
        notes.append(f"note: {kept} from an earlier replay of run {summary.run}, judged with the wallets, "
                     "valuations and catalog of that time, and the comparison includes them. To judge every "
                     "entry with the current rules, replay under a new --run name.")
    repeated = summary.repeated_transaction_ids
    if repeated:
        entries = "1 entry repeats" if repeated == 1 else f"{repeated} entries repeat"
        pronoun = "it" if repeated == 1 else "them"
        note = (f"note: {entries} the transaction_id of another entry in the stream, which run {summary.run} "
                f"settled first, and a run gives each transaction_id one outcome. The stream contains such a copy "
                "when a transaction was published again (with `publish --dedup-window 0`, or after the "
                "de-duplication window) or put back by `rewardpilot dlq redrive`. A new --run name skips "
                f"{pronoun} too.")
        if summary.comparison is not None:
            note += " The comparison uses the result of the entry settled first."
        notes.append(note)
    return notes


def _counts_text(summary: ReplaySummary) -> str:
    """Count the outcomes: new results and dead letters, and any entries that already had an outcome in the run."""
    results = "1 new result" if summary.results == 1 else f"{summary.results} new results"
    letters = "1 dead letter" if summary.dead_letters == 1 else f"{summary.dead_letters} dead letters"
    if not summary.duplicates:
        return f"{results}, {letters}"
    skipped = "1 entry" if summary.duplicates == 1 else f"{summary.duplicates} entries"
    return (f"{results}, {letters}; {skipped} got no new outcome because the run already had one for them "
            "(a result or a dead letter)")


def subscribe_command(prefix: str, job: str | None, run: str, redis_url: str | None = None) -> str:
    """Return the ``subscribe`` command that reads a replay run's results stream from the start, quoted for a shell."""
    command = base_command(prefix, redis_url)
    command += ["subscribe", "--run", run]
    if job is not None:
        command += ["--job", job]
    command.append("--from-start")
    return shlex.join(command)


def replay(
    ctx: typer.Context,
    start: str = typer.Option(..., "--start", help="First entry, by publish time, not purchase time: a stream entry id (1700000000000-0) or an ISO 8601 time (UTC when no offset)."),
    end: str = typer.Option(None, "--end", help="Last entry, inclusive, by publish time, in the same forms. Unset: the end of the stream.", show_default=False),
    user: str = typer.Option(None, "--user", help="Only this user's transactions.", show_default=False),
    run: str = typer.Option(..., "--run", help="Run name; results go to this run's own results stream."),
    compare: bool = typer.Option(False, "--compare", help="Report where the replay differs from the live results."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    job: str = typer.Option(None, "--job", help="Replay the streams of this `rewardpilot run` job."),
    workers: int = typer.Option(1, "--workers", min=1, max=256, help="asyncio workers. 1 recommends each user's transactions in stream order. More are faster, but on a single stream they may settle a user's transactions out of order, which moves capped bonuses, and --compare lists those transactions as differences."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=10_000, help="XREADGROUP COUNT: entries per micro-batch."),
    wallet: list[str] = typer.Option(None, "--wallet", help="Cards to judge users without a wallet against (repeat or comma-separate)."),
    orchestrator: str = typer.Option(None, "--orchestrator", help="Orchestrator URL (env ORCHESTRATOR_URL). Unset: the in-process engine.", show_default=False),
    rate: str = typer.Option(None, "--rate", help="Rate limit of this replay's recommender calls alone, such as 100/min; it never changes the live consumers' rate. With --orchestrator, the calls also count against the live consumers' shared rate limit. Unset: only that shared limit, if any.", show_default=False),
) -> None:
    """Process a range of the transactions stream again, through the run's own consumer group.

    --start and --end select entries by the time they were published (the
    stream entry id), not by purchase time. Exits 1 when entries were
    dead-lettered (see `rewardpilot dlq list`), 2 for an invalid option,
    130 after Ctrl-C and 143 after SIGTERM; running the same command again
    finishes a stopped replay.
    """
    from consumer.errors import InvalidRateLimitError
    from consumer.shutdown import Interruption
    from rewardpilot.job import job_lifetime
    from rewardpilot.replay import InvalidReplayError, replay_async

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    # Before the replay, which would create the job's stream and partition count for a mistyped id.
    check_job_exists(client, context, context.keys(job))
    options = call_options(orchestrator, rate, None, None, None, None, None, None)
    cards = check_cards(split_cards(wallet))
    # What a replay of a job writes must not outlive the job, or a new job under the
    # same id and run name would skip its transactions as already processed.
    lifetime = job_lifetime(client, context.keys(job))
    ttl_seconds = lifetime.remaining_seconds if lifetime is not None else None

    interruption = Interruption()
    stopped: list[ReplaySummary] = []  # the counts of a replay that a signal cancelled

    async def main() -> ReplaySummary:
        # SIGTERM cancels the replay as asyncio.run's own handler does for Ctrl-C, so the
        # replay stops at an await, never inside a socket write.
        loop = asyncio.get_running_loop()
        replay_task = asyncio.current_task()

        def on_sigterm() -> None:
            interruption.signum = interruption.signum or signal.SIGTERM
            replay_task.cancel()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        client = context.async_client(block_ms=200)
        try:
            return await replay_async(
                client, context.keys(job), start=start, end=end, user=user, run=run, workers=workers,
                batch_size=batch_size, wallet=cards, options=options, compare=compare, ttl_seconds=ttl_seconds,
                on_cancelled=stopped.append,
            )
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            await client.aclose()

    try:
        summary = asyncio.run(main())
    except (InvalidReplayError, InvalidRateLimitError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except BaseException as exc:
        # A replay stopped by a signal or an error may have created its results stream without expiry.
        if ttl_seconds is not None:
            _expire_with_job(client, context.keys(job))
        if isinstance(exc, KeyboardInterrupt):
            interruption.signum = interruption.signum or signal.SIGINT
        if interruption.signum is not None and isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            _report_stopped(stopped[0] if stopped else None, interruption, as_json)
            raise typer.Exit(interruption.exit_status) from None
        raise
    if ttl_seconds is not None:
        _expire_with_job(client, context.keys(job))

    if summary.delivered and summary.starts_after_first_entry:
        _warn_mid_stream_start(_streams_label(client, context.keys(job)), summary)
    if as_json:
        typer.echo(json.dumps({**summary.as_dict(), "interrupted": None}))
    else:
        print_summary(summary, context.prefix, job, context.redis_url)
    if ttl_seconds is not None:
        expires = datetime.now(timezone.utc) + timedelta(seconds=ttl_seconds)
        console.print(f"the job's keys expire at {expires:%Y-%m-%d %H:%M} UTC, and this replay's results, "
                      "de-duplication markers and cap spend expire with them", soft_wrap=True, highlight=False)
    if not summary.delivered:
        _explain_empty_range(client, context.keys(job), summary)
    if summary.dead_letters:
        listing = "rewardpilot dlq list" + (f" --job {job}" if job else "")
        count = "1 entry was" if summary.dead_letters == 1 else f"{summary.dead_letters} entries were"
        console.print(f"{count} dead-lettered; see them with `{escape(listing)}`", soft_wrap=True, highlight=False)
        raise typer.Exit(1)


def _report_stopped(summary: ReplaySummary | None, interruption: Interruption, as_json: bool) -> None:
    """Say on stderr how far a replay stopped by a signal got and how to finish it. With --json, print its counts too.

    ``summary`` is None when the signal came before the replay began, and
    --json then prints the message as an error object. The JSON summary
    names the signal in ``interrupted``, as ``run --json`` does.
    """
    done = "" if summary is None else f" after {_counts_text(summary)}"
    message = (f"replay stopped by {interruption.name}{done}; run the same command again to finish it, "
               "because entries that already have an outcome are skipped")
    if as_json:
        if summary is None:
            typer.echo(json.dumps({"error": message, "exit_code": interruption.exit_status}))
        else:
            typer.echo(json.dumps({**summary.as_dict(), "interrupted": interruption.name}))
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _expire_with_job(client, keys) -> None:
    """Make every key of the job, and so what this replay wrote, expire no later than the job's keys.

    The replay's markers and cap spend got the job's remaining TTL when the
    replay started, so those written later would outlive the job by up to
    the replay's run time. EXPIRE LT cuts them back and leaves shorter TTLs
    as they are. When the job's keys expired during the replay, what it
    wrote expires in one second.
    """
    import redis

    from rewardpilot.job import expire_job_keys, job_lifetime

    try:
        lifetime = job_lifetime(client, keys)
        expire_job_keys(client, keys, lifetime.remaining_seconds if lifetime is not None else 1, only_shorten=True)
    except redis.RedisError as exc:
        console.print(f"[yellow]warning:[/yellow] could not give this replay's keys the expiry of job "
                      f"{escape(repr(keys.job))}: {escape(str(exc))}; its results stream may never expire and its "
                      "markers may outlive the job. Run the same replay again once Redis is reachable: it adds "
                      "no results and sets the expiry.", soft_wrap=True, highlight=False)


def _streams_label(client, keys) -> str:
    """Name the transactions stream, or the range of partition streams when the prefix is partitioned."""
    from rewardpilot.partitions import stored_count

    partitions = stored_count(client, keys)
    return keys.transactions if partitions == 1 else f"{keys.transactions}:p0 to p{partitions - 1}"


def _warn_mid_stream_start(stream: str, summary: ReplaySummary) -> None:
    """Warn that a replay which starts after the stream's first entry does not rebuild the live cap state.

    A replay counts spend under caps from zero, so purchases published
    before ``start`` in a period that is still running are missing from it.
    """
    console.print(
        f"warning: the replay starts at {summary.start_id}, after the first entry of {escape(stream)} "
        f"({summary.first_entry_id}, published {_publish_time(summary.first_entry_id)}). Spend under caps "
        "and top-category spend in periods that began before the start are counted from zero, so cards "
        "with caps may be recommended differently from the live run, and --compare lists those as "
        "differences. To rebuild the live cap state, start at the first entry of the earliest cap period "
        "of interest.", soft_wrap=True, highlight=False,
    )


@dataclass
class _StreamSpan:
    """Length, first and last entry ids and entries added of a replay's transactions streams, over all partitions.

    ``added`` is XINFO STREAM's entries-added summed over the streams, or
    None when the server does not report it (Redis before 7.0).
    """

    names: list[str]
    length: int = 0
    first_id: str | None = None
    last_id: str | None = None
    last_generated_id: str | None = None
    added: int | None = 0

    @property
    def removed(self) -> int | None:
        """Count the entries trimmed or deleted since the streams were created, when the server reports it."""
        return None if self.added is None else self.added - self.length


def _stream_span(client, keys) -> _StreamSpan:
    from rewardpilot.partitions import partition_streams, stored_count

    span = _StreamSpan(partition_streams(keys, stored_count(client, keys)))
    for stream in span.names:
        if not client.exists(stream):
            continue
        info = client.xinfo_stream(stream)
        span.length += info["length"]
        if span.added is not None:
            span.added = span.added + info["entries-added"] if "entries-added" in info else None
        span.last_generated_id = _latest(span.last_generated_id, _text(info["last-generated-id"]))
        if info["length"]:
            first = _text(client.xrange(stream, count=1)[0][0])
            last = _text(client.xrevrange(stream, count=1)[0][0])
            span.first_id = first if span.first_id is None else min(span.first_id, first, key=entry_key)
            span.last_id = _latest(span.last_id, last)
    return span


def _latest(current: str | None, candidate: str) -> str:
    return candidate if current is None else max(current, candidate, key=entry_key)


def _explain_empty_range(client, keys, summary: ReplaySummary) -> None:
    """Say why a replay found nothing in its range: an empty stream, a trimmed range, or publish times.

    --start and --end are times of publishing (stream ids), not purchase times,
    and a user who reads them as purchase dates gets an empty replay.
    """
    span = _stream_span(client, keys)
    where = escape(_streams_label(client, keys))
    if not span.length:
        console.print(f"no entries to replay: {where} is empty{_emptied_text(span)}", soft_wrap=True, highlight=False)
        return

    published = (f"--start and --end are times of publishing, not purchase dates, and {where} holds entries "
                 f"published from {_publish_time(span.first_id)} to {_publish_time(span.last_id)}")
    if summary.end_id is not None and entry_key(summary.end_id) < entry_key(span.first_id):
        console.print(f"no entries in the range: it ends before the first entry of {where}, {span.first_id} "
                      f"(published {_publish_time(span.first_id)}), {_before_first_text(span)}. {published}",
                      soft_wrap=True, highlight=False)
        return
    console.print(f"no entries in the range: {published}", soft_wrap=True, highlight=False)


def _emptied_text(span: _StreamSpan) -> str:
    """Explain an empty stream: never created, never written, or emptied by trimming."""
    if span.last_generated_id in (None, "0-0"):
        return ": nothing was published to it"
    if span.removed is None:
        return (f": its entries were trimmed or deleted; the last one published was {span.last_generated_id} "
                f"({_publish_time(span.last_generated_id)})")
    noun = "entry" if span.removed == 1 else "entries"
    return (f": all {span.removed} {noun} published to it were trimmed or deleted; the last one was "
            f"{span.last_generated_id} ({_publish_time(span.last_generated_id)})")


def _before_first_text(span: _StreamSpan) -> str:
    """Say whether entries before the first one were removed, so that the range may have been trimmed."""
    if span.removed is None:
        return "so the range was trimmed or nothing was published in it"
    if span.removed == 0:
        return "and no entry was ever trimmed or deleted from it, so nothing was published in the range"
    noun = "entry" if span.removed == 1 else "entries"
    return (f"and {span.removed} {noun} of it were trimmed or deleted, so the range was trimmed or nothing was "
            "published in it")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _publish_time(entry_id) -> str:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    moment = datetime.fromtimestamp(int(text.partition("-")[0]) / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
