"""``rewardpilot run FILE``: the main job, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from itertools import islice
from pathlib import Path

import typer
from rich.table import Table
from rich.markup import escape

from rewardpilot.cli.context import app_context, check_redis, console, stdout_console
from rewardpilot.cli.options import age_seconds, check_cards, split_cards
from rewardpilot.cli.paths import RESULT_SUFFIXES, check_output_path, check_rejects_path
from rewardpilot.cli.partition_options import agreed_partitions, partitions_option
from rewardpilot.cli.output import cards_table, sample_table, write_results
from rewardpilot.cli.publish_cmd import (
    INPUT_FILE_HELP, LAYOUT_HELP, USER_HELP, check_user_option, exit_with_error, fx_rates_option, load_converter, load_layout_option,
    print_publish_summary, publish_progress_text, linger_option, publish_source, resume_text, shared_errors_as_json, unconverted_option,
)


def run(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help=INPUT_FILE_HELP),
    job: str = typer.Option(None, "--job", help="Job id (default: a new one per run, from the time)."),
    live: bool = typer.Option(False, "--live", help="Use the live streams instead of the job's own."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=256,
        help="asyncio workers consuming. One keeps each user's purchases in file order, so a file always gives "
        "the same results; more can settle a user's purchases out of order where caps apply.",
    ),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=10_000, help="Entries per micro-batch."),
    wallet: list[str] = typer.Option(None, "--wallet", help="Cards to judge users without a wallet against (repeat or comma-separate)."),
    output: Path = typer.Option(
        None, "--output", "-o",
        help="Write every result to FILE.csv (CSV, with the columns docs/results.md lists) or FILE.jsonl (JSON lines, "
        "with every field); other suffixes are rejected.",
    ),
    rejects: Path = typer.Option(None, "--rejects", help="Where rejected rows go (default: FILE.rejects.jsonl in the current directory)."),
    layout: Path = typer.Option(None, "--layout", help=LAYOUT_HELP),
    user: str = typer.Option(None, "--user", help=USER_HELP),
    fx_rates: Path = fx_rates_option(),
    unconverted_currency: str = unconverted_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    sample: int = typer.Option(10, "--sample", min=0, help="Recommendations to show in the sample table."),
    partitions: int = partitions_option(),
    linger_ms: int = linger_option(),
    demo_wallets: bool = typer.Option(
        False, "--demo-wallets",
        help="Store the wallets of the bundled example's demo users (demo-foodie, demo-traveler, demo-cashback, "
        "demo-student), as `make run` does: only on the first such run under the prefix, and only when no wallet "
        "is stored there yet (the README tells how to store them again).",
    ),
    keep: str = typer.Option(
        "30d", "--keep",
        help="How long the job stays in Redis (such as 12h or 7d): its streams, results, markers and cap spend "
        "then expire. A run under an existing job id sets this expiry on every key of the job, so it lengthens "
        "or shortens what earlier runs and replays of the job wrote. With --live, only the markers expire; "
        "the live streams and cap spend stay.",
    ),
) -> None:
    """Publish FILE, consume until drained, and print the summary.

    Exit status: 0 when every row was published and processed, and 1 when any
    row was rejected, any transaction went to the dead-letter stream, or any
    transaction got no result because the job id (or, with --live, the live
    run) already had an outcome for it (already_processed). It is
    2 when an option is invalid, when the file could not be read, or when the
    results could not be written to --output. The --output path and the
    rejects file (--rejects, or the default in the current directory) are
    checked before anything is published. It is 128 plus the
    signal number when SIGINT or SIGTERM stopped the run. A signal that
    arrives while the file is being published also stops publishing at the
    next chunk boundary. With --json, an error before the job starts is one
    JSON object on stdout: {"error": MESSAGE, "exit_code": 2}.
    """
    from consumer.settings import ConsumerSettings
    from producer.publisher import DEFAULT_DEDUP_WINDOW_SECONDS
    from rewardpilot import wallets
    from rewardpilot.job import job_keys, new_job_id, record_keep, record_run_wallet, summarise
    from rewardpilot.results import InvalidResultEntryError, read_results

    # With --json, an error found before the job starts is one JSON object on stdout.
    input_path = None if str(file) == "-" else file
    with shared_errors_as_json(as_json):
        check_output_path(output, "--output", suffixes=RESULT_SUFFIXES, input_path=input_path)
        check_rejects_path(rejects, file)
        keep_seconds = int(age_seconds(keep, "--keep"))
        run_wallet = check_cards(split_cards(wallet))
    check_user_option(user, as_json=as_json)
    if input_path is not None:
        # Checked before the job's keys are created, which a file that cannot be read would leave behind.
        # Without opening it: closing the read end of a named pipe would end its writer's input.
        try:
            input_path.stat()
            readable = os.access(input_path, os.R_OK)
        except OSError as exc:
            exit_with_error(f"cannot open {str(file)!r}: {exc.strerror}; check the path", as_json=as_json)
        if not readable:
            exit_with_error(f"cannot open {str(file)!r}: Permission denied; check the path", as_json=as_json)
    if os.environ.get("ORCHESTRATOR_URL"):
        # run always uses the in-process engine; consume and replay read this variable.
        console.print("[yellow]warning:[/yellow] ORCHESTRATOR_URL is set, but `run` recommends with the "
                      "in-process engine and never calls an orchestrator. To use one, publish with "
                      "`rewardpilot publish` and process with `rewardpilot consume --drain`.",
                      soft_wrap=True, highlight=False)
    # A job's publish markers live as long as the job, so running the same job id again within
    # --keep skips the rows already published. A marker must not outlive the job, or a new job
    # under the same id would find duplicates. On the live streams the usual 24 hours apply.
    dedup_window_seconds = min(DEFAULT_DEDUP_WINDOW_SECONDS, keep_seconds) if live else keep_seconds
    converter = load_converter(fx_rates, unconverted_currency, as_json=as_json)
    layout_config = load_layout_option(layout, as_json=as_json)
    context = app_context(ctx)
    with shared_errors_as_json(as_json):
        client = context.client()
        check_redis(client, context)

    job_given = job is not None
    if job_given and not job:
        exit_with_error("--job '' is empty; give a job id, or leave --job out for a new job", as_json=as_json)
    if job_given and live:
        exit_with_error(f"--job {job} and --live were both given, but --live works on the live streams, which "
                        "belong to no job; leave out one of them", as_json=as_json)
    job = job or new_job_id()
    keys = job_keys(context.prefix, job, live)
    if demo_wallets:
        created = wallets.ensure_demo_wallets(client, keys, _catalog())
        if created:
            console.print(f"stored demo wallets for {', '.join(created)} (remove one with "
                          f"`{context.command('wallet', 'delete')} USER`)", soft_wrap=True)
    console.print(f"job {job} on {context.describe_server()}")
    with shared_errors_as_json(as_json):
        agreed = agreed_partitions(client, keys, partitions)
    if not live:
        # Recorded before publishing, so `consume --job` keeps to it even if this run is stopped or killed.
        record_keep(client, keys, keep_seconds)
        # And the run's wallet, so `report --job` judges users without a stored wallet as these consumers do.
        record_run_wallet(client, keys, run_wallet, keep_seconds)
    settings = ConsumerSettings(keys=keys, workers=workers, batch_size=batch_size, wallet=run_wallet,
                                partitions=agreed,
                                result_ttl_seconds=keep_seconds, cap_ttl_seconds=None if live else keep_seconds)
    try:
        published, publish_seconds, stats, consume_seconds, wall_seconds, interrupted = asyncio.run(
            _publish_and_consume(context, client, keys, file, settings, layout=layout_config,
                                 rejects=rejects, user=user, converter=converter,
                                 dedup_window_seconds=dedup_window_seconds, as_json=as_json, linger_ms=linger_ms)
        )
    finally:
        if not live:
            # Every key of the job, including markers, cap spend and replay streams that earlier runs wrote
            # under another --keep, expires with this run's --keep. Else a marker that expired before the
            # job would let a later run add a second result for its transaction. A run that fails, such as
            # on a file it cannot read, leaves no key without expiry either.
            _expire_job(client, keys, keep_seconds)
    summary = summarise(job, published.published, stats, publish_seconds, consume_seconds, wall_seconds,
                        already_published=published.duplicates)

    results_stream = keys.results()
    output_failed = False
    if output:
        try:
            written = write_results(read_results(client, results_stream), output)
        except InvalidResultEntryError as exc:
            output_failed = True
            console.print(f"[red]error:[/red] --output {escape(repr(str(output)))}: {escape(str(exc))}",
                          soft_wrap=True, highlight=False)
        except OSError as exc:
            # The checks at the start passed, so something changed since (a full disk, a removed directory).
            # The summary is still printed, and the results stay in the job's stream.
            output_failed = True
            console.print(f"[red]error:[/red] --output {escape(repr(str(output)))}: the results could not be "
                          f"written: {escape(str(exc))}; the results stay in the job's stream until it expires, "
                          "so fix the path and read them with: "
                          f"{context.command('subscribe', *([] if live else ['--job', job]), '--from-start')}",
                          soft_wrap=True, highlight=False)
        else:
            console.print(f"wrote {written} results to {output}")

    if as_json:
        # The input's layout and warnings too, as `publish --json` gives them; the table shows them above.
        input_fields = {**_input_counts(published), "layout": published.layout, "warnings": published.warnings}
        typer.echo(json.dumps({**summary.as_dict(), "input": input_fields, "keep_seconds": keep_seconds,
                               "interrupted": interrupted}))
    else:
        _print_summary(summary, client, results_stream, sample, _input_counts(published))
        if not live:
            console.print(f"the job's keys expire in {keep} (--keep)")
    if summary.already_processed:
        _print_already_processed(summary, live)
    # soft_wrap: the command is meant to be copied, so it must not be cut at the console's width.
    if live:
        console.print(f"follow the live results with: {context.command('subscribe', '--from-start')}",
                      soft_wrap=True)
    else:
        console.print(f"follow this job's results with: {context.command('subscribe', '--job', job, '--from-start')}",
                      soft_wrap=True)

    if interrupted and published.stopped:
        processed = stats.results + stats.dead_letters + stats.duplicates
        again = "run the same command again" if job_given or live else f"run the same command again with --job {job}"
        resume = resume_text(published, dedup_window_seconds, f"{again} to publish and process the rest")
        console.print(f"[yellow]interrupted by {interrupted} while publishing:[/yellow] "
                      f"{escape(publish_progress_text(published))}, and {processed:,} transactions processed; "
                      f"{escape(resume)}", soft_wrap=True, highlight=False)
        raise typer.Exit(128 + signal.Signals[interrupted].value)
    if interrupted:
        processed = stats.results + stats.dead_letters + stats.duplicates
        resume = context.command("consume", "--drain", *([] if live else ["--job", job]))
        console.print(f"[yellow]interrupted by {interrupted}:[/yellow] {processed} of {published.published} "
                      f"transactions processed; the rest stay in the stream. Finish them with: {resume}",
                      soft_wrap=True)
        raise typer.Exit(128 + signal.Signals[interrupted].value)
    if output_failed:
        raise typer.Exit(2)
    if published.rejected or summary.failed or summary.already_processed:
        raise typer.Exit(1)


def _print_already_processed(summary, live: bool) -> None:
    """Explain why transactions of this run got no result, and what to do."""
    count = f"{summary.already_processed:,} of {summary.total_transactions:,} transactions"
    if live:
        console.print(f"[yellow]warning:[/yellow] {count} got no new result, because the live run already had "
                      "an outcome for them: an earlier run or consumer settled them, and their de-duplication "
                      "markers still exist. Their results are in the live results stream unless it was trimmed. "
                      "To process them again, run the file as a job (leave out --live).",
                      soft_wrap=True, highlight=False)
        return
    console.print(f"[yellow]warning:[/yellow] {count} got no result in this run, because job "
                  f"{escape(summary.job)} already had an outcome for them: their de-duplication markers from an "
                  "earlier run or consume of this job id still exist, so the job's results stream lacks them. "
                  "Run the file under a new job id (leave out --job) to get a result for every transaction.",
                  soft_wrap=True, highlight=False)


class _StopPublishingToo:
    """The pool as the signal handlers see it: a stop or abort also sets the publishing thread's ``stop`` event."""

    def __init__(self, pool, publishing: threading.Event) -> None:
        self.pool = pool
        self.publishing = publishing

    def stop(self) -> None:
        self.publishing.set()
        self.pool.stop()

    def abort(self) -> None:
        self.publishing.set()
        self.pool.abort()


async def _publish_and_consume(context, client, keys, file, settings, *, layout, rejects, dedup_window_seconds: int,
                               user=None, converter=None, as_json: bool = False, linger_ms: int):
    """Consume while the file is published, so backpressure never stalls the job; then drain.

    A stop signal stops the pool and, while the file is still being
    published, stops publishing at the next chunk boundary. The pool then
    does not drain the group, and the run counts as interrupted.

    Returns ``(published, publish_seconds, stats, consume_seconds,
    wall_seconds, interrupted)``. Both durations start when publishing
    starts: ``consume_seconds`` ends at the last settled outcome and
    ``wall_seconds`` when the pool stopped.

    While a pipe or terminal sends nothing, publishing checks the stop
    every 0.1 s. NOTE: an OFX or Plaid document from a pipe is read whole
    first, so a signal while it waits for the rest of one is not seen.
    """
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    from consumer.build import partitioned
    from consumer.pool import ConsumerPool
    from producer.publisher import Producer
    from consumer.shutdown import install_signal_handlers
    from rewardpilot.job import seconds_to_last_outcome

    started = time.monotonic()
    async_client = context.async_client(block_ms=settings.block_ms)
    transport = None
    if settings.partitions > 1:
        settings, transport = partitioned(async_client, settings)
    pool = ConsumerPool(async_client, settings, transport=transport)
    stop_publishing = threading.Event()
    interruption = install_signal_handlers(_StopPublishingToo(pool, stop_publishing))
    consuming = asyncio.create_task(pool.run())
    try:
        producer = Producer(client, keys, dedup_window_seconds=dedup_window_seconds, stop=stop_publishing)
        published, publish_seconds = await asyncio.to_thread(
            publish_source, client, keys, file, layout=layout, rejects=rejects, user=user, converter=converter,
            producer=producer, as_json=as_json, linger_ms=linger_ms,
        )
        print_publish_summary(published)
    except BaseException:
        # Stop, not abort: the workers settle the batches in hand (none, when the
        # file could not be read at all) within the grace period.
        pool.stop()
        await asyncio.gather(consuming, return_exceptions=True)
        raise

    if not published.stopped:
        pool.enable_drain()
    progress = Progress(
        TextColumn("consuming"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )
    task = progress.add_task("consume", total=published.published, rate="")
    with progress:
        while not consuming.done():
            done = pool.stats.results + pool.stats.dead_letters + pool.stats.duplicates
            elapsed = time.monotonic() - started
            progress.update(task, completed=done, rate=f"{done / elapsed:,.0f} tx/s" if elapsed else "")
            await asyncio.wait({consuming}, timeout=0.2)
        done = pool.stats.results + pool.stats.dead_letters + pool.stats.duplicates
        progress.update(task, completed=done)

    stats = consuming.result()
    ended = time.monotonic()
    await pool.recommender.aclose()
    await pool.client.aclose()
    # The signal's name when one stopped publishing or stopped the pool before the job's stream was drained, else None.
    interrupted = interruption.name if published.stopped or not pool.drained else None
    consume_seconds = seconds_to_last_outcome(stats, started, ended)
    return published, publish_seconds, stats, consume_seconds, ended - started, interrupted


def _input_counts(published) -> dict:
    """Return the input counts of the run summary.

    Every row read is counted once: ``published`` (entries this run added
    to the stream), ``rejected``, ``skipped``, ``unpublished`` after a stop,
    or ``already_published`` in the run summary (``JobSummary``), which
    ``publish --json`` calls ``duplicates``. ``future_dated`` and
    ``past_dated`` count published rows dated more than a day ahead or
    before 1970, named as in ``publish --json``, and so are ``oldest_first``
    and ``out_of_order`` (see ``FileSummary``). ``rejects_file`` is the
    file this run wrote the rejected, skipped and already published rows
    to, or None when it wrote none.
    """
    counts = {
        "rows_read": published.rows,
        "published": published.published,
        "rejected": published.rejected,
        "skipped": published.skipped,
        "converted_to_usd": published.converted,
        "future_dated": published.future_dated,
        "first_future_line": published.first_future_line,
        "past_dated": published.past_dated,
        "first_past_line": published.first_past_line,
        "oldest_first": published.oldest_first,
        "out_of_order": published.out_of_order,
        "first_out_of_order_line": published.first_out_of_order_line,
        "rejects_file": published.rejects_path,
    }
    if published.stopped:
        counts["unpublished"] = published.unpublished  # read, but a stop signal came before they were published
    return counts


def _expire_job(client, keys, keep_seconds: int) -> None:
    """Give every key of the job the --keep expiry; on a Redis error, warn instead of hiding the run's own error."""
    import redis

    from rewardpilot.job import expire_job_keys

    try:
        expire_job_keys(client, keys, keep_seconds)
    except redis.RedisError as exc:
        console.print(f"[yellow]warning:[/yellow] could not give job {escape(repr(keys.job))}'s keys their "
                      f"--keep expiry: {escape(str(exc))}. Run the same command again once Redis is reachable; "
                      "it publishes nothing twice and sets the expiry.", soft_wrap=True, highlight=False)


def _print_summary(summary, client, results_stream: str, sample: int, input_counts: dict) -> None:
    from rewardpilot.results import InvalidResultEntryError, read_results

    out = stdout_console()
    table = Table(title=f"Job {escape(summary.job)}", show_header=False)
    table.add_column("field")
    table.add_column("value", justify="right")
    for field, value in {**input_counts, **summary.as_dict()}.items():
        if field != "consumer" and value is not None:
            table.add_row(field, escape(str(value)))
    out.print(table)

    try:
        if summary.successful:
            out.print(cards_table(read_results(client, results_stream)))
        if summary.successful and sample:
            out.print(sample_table(list(islice(read_results(client, results_stream), sample))))
    except InvalidResultEntryError as exc:
        # Only an entry written by something other than a consumer can fail here, so the summary is still right.
        console.print(f"[yellow]warning:[/yellow] the results tables are left out: {escape(str(exc))}",
                      soft_wrap=True, highlight=False)


def _catalog():
    from rewardpilot.engine import RulesEngine

    return RulesEngine.default().catalog
