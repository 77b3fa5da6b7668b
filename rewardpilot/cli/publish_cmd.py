"""``rewardpilot publish FILE|-``: validate transactions and publish them.

The first SIGINT or SIGTERM stops publishing at the next chunk boundary, and
the command exits with 128 plus the signal number after printing how far it
got. A second signal ends the process at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from rewardpilot.cli.context import app_context, check_redis, console
from rewardpilot.cli.partition_options import agreed_partitions, partitions_option
from rewardpilot.cli.paths import check_rejects_path

if TYPE_CHECKING:
    from consumer.shutdown import Interruption
    from producer import FileSummary
    from rewardpilot.fx import CurrencyConverter


INPUT_FILE_HELP = ("Transactions: CSV in the documented layout, a bank export (Chase, Amex and other presets), "
                   "TabFormer, OFX, Plaid JSON or CSV, or JSON lines; - for stdin (see docs/input-formats.md).")
LAYOUT_HELP = ("A layout file that maps the input's columns, or the name of a preset such as chase "
               "(see docs/input-formats.md). Unset: the layout is detected from the header.")
USER_HELP = "user_id for bank exports, OFX and Plaid files, which name no user (default: me)."
FX_RATES_HELP = (
    "CSV of exchange rates, header currency,usd_per_unit[,date]: the US dollars one unit buys. "
    "Non-USD amounts are converted with the latest rate on or before the transaction's date."
)
DEFAULT_LINGER_MS = 200
DEFAULT_MAX_BACKLOG = 100_000  # producer.publisher.DEFAULT_MAX_BACKLOG, which this module does not import
LINGER_HELP = (
    "Maximum milliseconds a row read from a pipe or terminal waits for more rows to join its chunk while input "
    "keeps arriving. A pause in the input sends the rows at once, and files are sent in chunks of 1,000 rows."
)
UNCONVERTED_HELP = (
    "What happens to a non-USD row with no rate: reject (default) sends it to the rejects file; "
    "keep publishes its amount unconverted, as if it were USD."
)


def fx_rates_option():
    return typer.Option(None, "--fx-rates", help=FX_RATES_HELP, dir_okay=False)


def linger_option():
    return typer.Option(DEFAULT_LINGER_MS, "--linger-ms", min=0, help=LINGER_HELP)


def unconverted_option():
    return typer.Option("reject", "--unconverted-currency", help=UNCONVERTED_HELP)


def exit_with_error(message: str, *, as_json: bool = False, exit_code: int = 2,
                    highlight: bool | None = None) -> NoReturn:
    """Print a fatal error as a red ``error:`` line on stderr and exit with ``exit_code``.

    With ``as_json`` the error is also one JSON object on stdout,
    ``{"error": message, "exit_code": exit_code}``, as for every command
    that fails under ``--json``.
    """
    if as_json:
        typer.echo(json.dumps({"error": message, "exit_code": exit_code}))
    # soft_wrap: a long path in the message is printed whole, not cut at the console's width.
    # escape: the message is plain text, and a value in it such as "[/x]" would otherwise be read as markup.
    console.print(f"[red]error:[/red] {escape(message)}", highlight=highlight, soft_wrap=True)
    raise typer.Exit(exit_code)


@contextlib.contextmanager
def shared_errors_as_json(as_json: bool) -> Iterator[None]:
    """With ``as_json``, turn the error that a shared helper prints before exiting into one JSON object on stdout.

    The helpers of ``rewardpilot.cli.context`` and ``partition_options``
    print ``error: ...`` on the shared console and raise ``typer.Exit``.
    Their output is captured here: on a non-zero exit, the text from the
    ``error:`` line on becomes the JSON error, and any other output goes
    to stderr as it would have.
    """
    if not as_json:
        yield
        return
    failure: typer.Exit | None = None
    soft_wrap = console.soft_wrap
    console.soft_wrap = True  # so a message is not cut into lines at the console's width
    try:
        with console.capture() as captured:
            try:
                yield
            except typer.Exit as exc:
                failure = exc
    finally:
        console.soft_wrap = soft_wrap
    output = captured.get()
    lines = Text.from_ansi(output).plain.splitlines()
    error_at = next((index for index, line in enumerate(lines) if line.startswith("error: ")), None)
    if failure is None or not failure.exit_code or error_at is None:
        sys.stderr.write(output)
        if failure is not None:
            raise failure
        return
    if error_at:
        sys.stderr.write("\n".join(lines[:error_at]) + "\n")
    message = "\n".join(lines[error_at:]).removeprefix("error: ").strip()
    exit_with_error(message, as_json=True, exit_code=failure.exit_code)


def load_converter(rates_path: Path | None, unconverted: str, *, as_json: bool = False) -> CurrencyConverter:
    """Build the currency converter from the command-line options; exit 2 on a bad rates file or policy."""
    from rewardpilot.fx import UNCONVERTED_POLICIES, CurrencyConverter, RatesFileError, load_rates

    policy = unconverted.lower()
    if policy not in UNCONVERTED_POLICIES:
        exit_with_error(f"--unconverted-currency {unconverted!r} is invalid; use {' or '.join(UNCONVERTED_POLICIES)}",
                        as_json=as_json)
    rates = None
    if rates_path is not None:
        try:
            rates = load_rates(rates_path)
        except RatesFileError as exc:
            exit_with_error(str(exc), as_json=as_json, highlight=False)
    return CurrencyConverter(rates, policy)


def load_layout_option(path: Path | None, *, as_json: bool = False):
    if path is None:
        return None
    from producer import InputError, load_layout

    try:
        return load_layout(path)
    except (InputError, OSError) as exc:
        exit_with_error(str(exc), as_json=as_json)


def check_user_option(user: str | None, *, as_json: bool = False) -> None:
    """Exit 2 naming --user when its value cannot be a user_id: empty, blank or too long."""
    if user is None:
        return
    from producer.readers import user_problem

    problem = user_problem(user)
    if problem is not None:
        value = user if len(user) <= 40 else user[:40] + "..."
        exit_with_error(
            f"--user {value!r} {problem}; give the user_id that the rows belong to, such as --user alice, "
            "or leave out --user for the default user_id 'me'",
            as_json=as_json, highlight=False,
        )


def publish_source(client, keys, source: Path, *, layout, rejects, progress: bool = True, user: str | None = None,
                   converter: CurrencyConverter | None = None, producer=None, as_json: bool = False,
                   linger_ms: int = DEFAULT_LINGER_MS):
    """Publish a file or stdin (``-``); return ``(FileSummary, seconds)``. Exits 2 on an unreadable file.

    ``linger_ms`` bounds how long a row from a pipe or terminal waits for a full chunk (``publish_file``).
    """
    from producer import InputError, InvalidOptionError, PartitionCountError, publish_file

    check_user_option(user, as_json=as_json)
    target = sys.stdin.buffer if str(source) == "-" else source
    started = time.perf_counter()
    try:
        summary = publish_file(client, keys, target, layout=layout, rejects_path=rejects,
                               progress=progress, console=console, user=user, converter=converter,
                               producer=producer, linger_seconds=linger_ms / 1000)
    except (InputError, InvalidOptionError, PartitionCountError, OSError) as exc:
        exit_with_error(str(exc), as_json=as_json)
    return summary, time.perf_counter() - started


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[Interruption]:
    """Set ``stop`` on the first SIGINT or SIGTERM and record that signal, then restore the previous handlers.

    A second signal ends the process at once with the default action, so
    rows not yet written to the rejects file are lost. Only the main thread
    may install signal handlers.

    Publishing checks the stop at each chunk and every 500 rows and, while
    a pipe or terminal sends nothing, every 0.1 s (``producer.lines.IDLE_POLL_SECONDS``).

    NOTE: an OFX or Plaid document is read whole first, so a pipe that stops
    sending in the middle of one is not interrupted by the first signal.
    """
    from consumer.shutdown import first_signal_stops

    with first_signal_stops(stop.set) as interruption:
        yield interruption


def duration_text(seconds: int) -> str:
    """Return a whole number of seconds in the largest unit that divides it, such as ``24h`` or ``7d``."""
    from rewardpilot.retention import age_text

    return age_text(seconds)


def publish_progress_text(summary: FileSummary) -> str:
    """Describe how far a stopped publish got, like ``0 rows published, of 500 read (3% of the 16,247 rows of a.csv)``.

    The share is by rows when the file was read whole before publishing,
    for the row-order check. Otherwise the row count is unknown, and the
    share is of the bytes read, which run up to one read block ahead of the
    rows. A share of 100% then shows nothing about the rows, so it is left out.
    """
    text = f"{summary.published:,} {'row' if summary.published == 1 else 'rows'} published"
    if summary.duplicates:
        text += f" and {summary.duplicates:,} already published"
    source = "stdin" if summary.source in ("-", "<stdin>") else summary.source
    if summary.total_rows:
        where = f"{summary.rows * 100 // summary.total_rows}% of the {summary.total_rows:,} rows of {source}"
    elif summary.size_bytes and summary.bytes_read < summary.size_bytes:
        where = f"about {summary.bytes_read * 100 // summary.size_bytes}% of {source}, by bytes read"
    else:
        where = f"from {source}"
    return f"{text}, of {summary.rows:,} read ({where})"


def resume_text(summary: FileSummary, window_seconds: int,
                action: str = "run the same command again to publish the rest") -> str:
    """Tell how to publish the rest of a stopped file, which depends on whether published rows are skipped."""
    if window_seconds > 0:
        return f"{action} (rows published in the last {duration_text(window_seconds)} are skipped as duplicates)"
    return ("the duplicate check is off (a dedup window of 0), so running the same command again would publish "
            f"these rows a second time; publish only the rows after line {summary.stopped_after_line}")


def print_publish_summary(summary) -> None:
    from producer import format_summary

    console.print(format_summary(summary))  # its "warning" rows list the input warnings
    for message in summary.first_rejects:
        console.print(f"[red]rejected:[/red] {message}", highlight=False)
    if summary.rejected > len(summary.first_rejects):
        console.print(f"... and {summary.rejected - len(summary.first_rejects)} more")
    if summary.rejects_path:
        # soft_wrap: the path is printed whole on one line, where the table folds it across lines.
        console.print(rejects_file_text(summary), soft_wrap=True, highlight=False)


def rejects_file_text(summary) -> str:
    """Return the rich markup line naming the rejects file in full, with its rejected rows or, when none, its other rows."""
    path = escape(summary.rejects_path)
    if summary.rejected:
        noun, where = ("row", "it is") if summary.rejected == 1 else ("rows", "every one is")
        return f"[yellow]{summary.rejected} {noun} rejected; {where} in {path}[/yellow]"
    recorded = summary.skipped + summary.duplicates
    noun, where = ("row", "it is") if recorded == 1 else ("rows", "every one is")
    return f"{recorded} {noun} skipped or already published; {where} in {path}, with the reason"


def publish(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help=INPUT_FILE_HELP),
    job: str = typer.Option(None, "--job", help="Publish onto this job's streams instead of the live ones."),
    layout: Path = typer.Option(None, "--layout", help=LAYOUT_HELP),
    rejects: Path = typer.Option(None, "--rejects", help="Where rejected rows go (default: FILE.rejects.jsonl in the current directory)."),
    user: str = typer.Option(None, "--user", help=USER_HELP),
    fx_rates: Path = fx_rates_option(),
    unconverted_currency: str = unconverted_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    partitions: int = partitions_option(),
    linger_ms: int = linger_option(),
    max_backlog: int = typer.Option(
        DEFAULT_MAX_BACKLOG, "--max-backlog", min=0,
        help="Wait while the consumer group has more unread entries than this, so Redis does not grow "
        "without bound when no consumer keeps up; 0 turns the wait off. Checked before each chunk of a file "
        "(1,000 rows), and a chunk that passes the check is sent whole, so the backlog can pass the limit by "
        "up to 1,000 rows.",
    ),
    dedup_window: str = typer.Option(
        None, "--dedup-window", show_default=False,
        help="How long a published transaction_id is remembered, so the same id is not published twice "
        "(such as 12h or 7d); 0 turns the check off. Default: 24h, and with --job the time until the job's "
        "keys expire, which also caps a longer window.",
    ),
) -> None:
    """Validate every row and publish the transactions with pipelined XADD.

    Exit status: 0 when every row was published or skipped with a reason, 1
    when any row was rejected, 2 when an option is invalid (such as a
    rejects file, given with --rejects or the default in the current
    directory, that cannot be written) or the file could not be read at
    all, and 128 plus the signal number (130 for SIGINT, 143 for SIGTERM)
    when a signal stopped publishing. With --json, a fatal error is one JSON object on
    stdout: {"error": MESSAGE, "exit_code": 2}.
    """
    from producer import Producer, exit_status
    from producer.publisher import DEFAULT_DEDUP_WINDOW_SECONDS
    from rewardpilot.job import publish_marker_seconds

    with shared_errors_as_json(as_json):
        check_rejects_path(rejects, file)
    check_user_option(user, as_json=as_json)
    requested_window = None if dedup_window is None else _dedup_window_seconds(dedup_window, as_json)
    converter = load_converter(fx_rates, unconverted_currency, as_json=as_json)
    layout_config = load_layout_option(layout, as_json=as_json)
    context = app_context(ctx)
    with shared_errors_as_json(as_json):
        client = context.client()
        check_redis(client, context)
        agreed_partitions(client, context.keys(job), partitions)
    job_seconds = _job_lifetime_seconds(client, context.keys(job)) if job is not None else None
    if job_seconds is None:
        window = DEFAULT_DEDUP_WINDOW_SECONDS if requested_window is None else requested_window
    else:
        window = publish_marker_seconds(requested_window, job_seconds)

    stop = threading.Event()
    producer = Producer(client, context.keys(job), dedup_window_seconds=window, stop=stop,
                        max_backlog=max_backlog or None)
    with stop_on_signals(stop) as interruption:
        summary, seconds = publish_source(client, context.keys(job), file, layout=layout_config, rejects=rejects,
                                          user=user, converter=converter, producer=producer, as_json=as_json,
                                          linger_ms=linger_ms)
    if job_seconds is not None:
        from rewardpilot.job import expire_job

        # Streams this publish created expire with the rest of the job.
        expire_job(client, context.keys(job), job_seconds, producer.partitions)
    interrupted = interruption.name if summary.stopped else None
    if as_json:
        typer.echo(json.dumps({**asdict(summary), "seconds": round(seconds, 3), "interrupted": interrupted},
                              default=str))
    else:
        print_publish_summary(summary)
        rate = summary.published / seconds if seconds > 0 else 0.0
        Console(stderr=True, emoji=False).print(f"published {summary.published} in {seconds:.2f} s ({rate:,.0f}/s)")
    if interrupted:
        # soft_wrap: one line, and the hint is meant to be read whole.
        console.print(f"[yellow]interrupted by {interrupted}:[/yellow] "
                      f"{escape(publish_progress_text(summary))}; {escape(resume_text(summary, window))}",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(interruption.exit_status)
    raise typer.Exit(exit_status(summary))


def _job_lifetime_seconds(client, keys) -> int:
    """Return the seconds a job's keys have left, and give a job with no expiry the default of ``run --keep``.

    A job made by ``rewardpilot run`` records its ``--keep``. Publishing to a
    job id that no run made (a new or mistyped id) would otherwise leave
    streams that never expire, so such a job gets ``DEFAULT_JOB_KEEP``, with
    a notice on stderr.
    """
    from rewardpilot.job import DEFAULT_JOB_KEEP_SECONDS, job_lifetime, record_keep

    lifetime = job_lifetime(client, keys)
    if lifetime is not None:
        return lifetime.remaining_seconds
    record_keep(client, keys, DEFAULT_JOB_KEEP_SECONDS)
    console.print(f"job {escape(repr(keys.job))} has no expiry yet (no `rewardpilot run` made it); its keys expire "
                  f"in {duration_text(DEFAULT_JOB_KEEP_SECONDS)}, the default of run --keep", highlight=False, soft_wrap=True)
    return DEFAULT_JOB_KEEP_SECONDS


def _dedup_window_seconds(text: str, as_json: bool) -> int:
    """Parse --dedup-window (``0`` or an age such as ``12h``) into seconds; exit 2 when it is invalid."""
    from rewardpilot.retention import InvalidAgeError, parse_age

    if text.strip() == "0":
        return 0
    try:
        return int(parse_age(text).total_seconds())
    except InvalidAgeError as exc:
        exit_with_error(f"--dedup-window: {exc}", as_json=as_json)
