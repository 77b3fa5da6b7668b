"""``rewardpilot status [--watch]``: streams or partitions, consumer groups, consumers and dead letters."""

from __future__ import annotations

import json
import shlex
import sys
import time

import typer
from rich.table import Table
from rich.text import Text
from rich.markup import escape

from rewardpilot.cli.context import app_context, check_job_exists, check_redis, console, program_name, stdout_console
from rewardpilot.cli.options import MAX_OPTION_SECONDS
from rewardpilot.streams import DEFAULT_PREFIX, LIVE_RUN

# Jobs named in the hint and in the `jobs` key of --json when the live streams are empty.
RECENT_JOBS_SHOWN = 3


def _unreachable_view(url: str, error: Exception, interval: float) -> Text:
    """Build the view a watch shows while Redis does not reply, with the redacted URL and the error."""
    from rewardpilot.connection import redact

    return Text(f"cannot reach Redis at {redact(url)}: {str(error).rstrip('.')}. "
                f"Trying again in {interval:g} s; press Ctrl-C to stop.", style="red")


def _render(snapshot: dict, job: str | None = None) -> Table:
    """Render a status snapshot: one row per partition and group when partitioned, else per group and consumer.

    ``job`` is the job whose streams the snapshot describes, None for the live streams.
    """
    if snapshot.get("partitions"):
        table = _partitions_table(snapshot["transactions"]["stream"], snapshot["partitions"])
    else:
        table = _stream_table(snapshot["transactions"])
    # A one-shot snapshot has no rate at all: it takes two readings, which only --watch makes.
    if "results_per_second" in snapshot:
        rate_text = _results_rate_text(snapshot["results_per_second"], snapshot.get("results_rate_seconds"))
    else:
        rate_text = "results/s: shown with --watch"
    # One line per figure: the caption wraps at the table's width, which a narrow table makes short.
    lines = [
        _results_text(snapshot["results"], job), rate_text,
        f"dead letters: {snapshot['dead_letters']}", _rate_text(snapshot.get("rate_limit"), job),
    ]
    if job is not None:
        lines.append(_expiry_text(snapshot.get("job_expiry")))
    table.caption = "\n".join(lines)
    return table


def _expiry_text(expiry: dict | None) -> str:
    """Return the line that gives when the job's keys expire: the time left, the UTC time and the job's --keep."""
    from rewardpilot.retention import age_text

    if expiry is None:
        return "job keys: no expiry set, so they stay until deleted"
    expires_at = expiry["expires_at"].replace("T", " ").replace("Z", " UTC")
    text = f"job expires in {_time_left_text(expiry['remaining_seconds'])}, at {expires_at}"
    if expiry.get("keep_seconds") is not None:
        text += f" (run --keep {age_text(expiry['keep_seconds'])})"
    return text


def _time_left_text(seconds: int) -> str:
    """Return whole seconds in their two largest units, rounded down, such as ``6 d 23 h``, ``7 d`` or ``45 s``."""
    parts = []
    for name, size in (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count or parts:
            parts.append((count, name))
        if len(parts) == 2:
            break
    nonzero_parts = [f"{count} {name}" for count, name in parts if count]
    return " ".join(nonzero_parts) or "0 s"


def _results_text(results: dict[str, int], job: str | None) -> str:
    """Return the result counts per run, such as ``results live: 12`` or ``results of job J: 12``.

    A job's own results are keyed ``job``, or ``live`` in snapshots made before that key existed.
    """
    from rewardpilot.status import JOB_RESULTS  # imports redis, which `--help` does not need

    parts = []
    for run, count in results.items():
        if job is not None and run in (JOB_RESULTS, LIVE_RUN):
            parts.append(f"of job {job}: {count}")
        else:
            parts.append(f"{run}: {count}")
    return "results " + ", ".join(parts)


def _stream_table(transactions: dict) -> Table:
    table = Table(title=f"{escape(transactions['stream'])}: {transactions['length']} entries")
    for column in ("group", "lag", "pending", "oldest pending (s)", "consumer", "consumer pending", "idle (s)"):
        table.add_column(column, justify="left" if column in ("group", "consumer") else "right")
    for group in transactions["groups"]:
        consumers = group["consumers"] or [{"name": "-", "pending": "-", "idle_ms": None}]
        for index, consumer in enumerate(consumers):
            idle = consumer["idle_ms"]
            table.add_row(
                escape(group["name"]) if index == 0 else "",
                _count_text(group["lag"]) if index == 0 else "",
                str(group["pending"]) if index == 0 else "",
                _seconds_text(group["oldest_pending_age_ms"]) if index == 0 else "",
                escape(consumer["name"]), str(consumer["pending"]), _seconds_text(idle),
            )
    return table


def _partitions_table(base_stream: str, partitions: list[dict]) -> Table:
    """Render one row per partition and consumer group, with the group's lease holder on that partition."""
    total = sum(partition["length"] for partition in partitions)
    table = Table(title=f"{escape(base_stream)}:p0 to p{len(partitions) - 1}: {total} entries in {len(partitions)} partitions")
    for column in ("partition", "entries", "group", "lag", "pending", "oldest pending (s)", "lease holder",
                   "pending by consumer"):
        table.add_column(column, justify="left" if column in ("group", "lease holder", "pending by consumer") else "right")
    for partition in partitions:
        groups = partition["groups"] or [None]
        for index, group in enumerate(groups):
            first = index == 0
            cells = [str(partition["partition"]) if first else "", str(partition["length"]) if first else ""]
            if group is None:
                cells += ["-", "-", "-", "-", "-", "-"]
            else:
                holder = group.get("lease_holder")
                by_consumer = ", ".join(f"{c['name']}: {c['pending']}" for c in group["consumers"]) or "-"
                cells += [escape(group["name"]), _count_text(group["lag"]), str(group["pending"]),
                          _seconds_text(group["oldest_pending_age_ms"]), escape(holder or "free"), escape(by_consumer)]
            table.add_row(*cells)
    return table


def _count_text(value) -> str:
    return "-" if value is None else str(value)


def _seconds_text(milliseconds: int | None) -> str:
    return "-" if milliseconds is None else f"{milliseconds / 1000:.1f}"


def _results_rate_text(rate: float | None, seconds: float | None) -> str:
    """Return the results rate line, naming the seconds the rate averages over.

    For its first minute a watch has only the readings since it started, so
    the line names those seconds rather than "the last minute".
    """
    from rewardpilot.status import RATE_WINDOW_SECONDS  # imports redis, which `--help` does not need

    if rate is None:
        return "results/s: - (needs two refreshes)"
    if seconds is None:
        return f"results/s: {rate:,.1f}"
    span = f"{seconds:.1f}" if seconds < 10 else f"{seconds:,.0f}"
    if seconds < RATE_WINDOW_SECONDS:
        return f"results/s over the {span} s since the watch started: {rate:,.1f}"
    return f"results/s over the last {span} s: {rate:,.1f}"


def _add_rate(snapshot: dict, reading) -> None:
    """Put a ``RateReading`` (or None before the second refresh) into a snapshot's rate keys."""
    snapshot["results_per_second"] = None if reading is None else round(reading.per_second, 3)
    snapshot["results_rate_seconds"] = None if reading is None else round(reading.seconds, 3)


def _jobs_hint(jobs: dict, prefix: str) -> str:
    """Return the line that names recent jobs when the live streams are empty, with the command to see one."""
    count = jobs["count"]
    found = f"{count} job has" if count == 1 else f"{count} jobs have"
    if not jobs["complete"]:
        found = f"at least {found}"
    recent = ", ".join(jobs["recent"])
    order = "" if count == 1 else ", most recent first"
    prefix_option = "" if prefix == DEFAULT_PREFIX else f" --prefix {shlex.quote(prefix)}"
    command = f"{program_name()}{prefix_option} status --job {shlex.quote(jobs['recent'][0])}"
    return (f"the live streams are empty, but {found} streams under prefix {prefix!r} "
            f"({recent}{order}). See one with: {command}")


def _print_jobs_hint(jobs: dict | None, prefix: str) -> None:
    if jobs and jobs["count"]:
        # soft_wrap and no markup: the command is copied as printed, and job ids may contain brackets.
        console.print(_jobs_hint(jobs, prefix), soft_wrap=True, markup=False, highlight=False)


def _no_consumer_hint(snapshot: dict, prefix: str, job: str | None) -> str | None:
    """Return the line that gives the consume command when the transactions have entries but no group, else None."""
    streams = snapshot["partitions"] or [snapshot["transactions"]]
    entries = sum(stream["length"] for stream in streams)
    if not entries or any(stream["groups"] for stream in streams):
        return None
    name = snapshot["transactions"]["stream"]
    if snapshot["partitions"]:
        name = f"{name}:p0 to p{len(streams) - 1}"
    prefix_option = "" if prefix == DEFAULT_PREFIX else f" --prefix {shlex.quote(prefix)}"
    job_option = "" if job is None else f" --job {shlex.quote(job)}"
    command = f"{program_name()}{prefix_option} consume{job_option}"
    noun = "entry" if entries == 1 else "entries"
    return (f"no consumer has read {name} yet ({entries} {noun}, no consumer group). "
            f"Start one with: {command}")


def _print_stranded_warning(snapshot: dict) -> None:
    """Print the warning about transactions streams outside the stored partition count, if any."""
    warning = snapshot.get("stranded_warning")
    if warning:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True, highlight=False)


def _print_no_consumer_hint(snapshot: dict, prefix: str, job: str | None) -> None:
    hint = _no_consumer_hint(snapshot, prefix, job)
    if hint:
        console.print(hint, soft_wrap=True, markup=False, highlight=False)


def _jobs_if_live_empty(client, snapshot: dict, prefix: str, job: str | None) -> dict | None:
    """Return the jobs under the prefix when the live streams are shown and empty, else None (no look-up)."""
    from rewardpilot.status import find_jobs, live_streams_empty

    if job is not None or not live_streams_empty(snapshot):
        return None
    return find_jobs(client, prefix, limit=RECENT_JOBS_SHOWN)


def _rate_text(rate_limit: dict | None, job: str | None = None) -> str:
    """Return the orchestrator rate line: the rates only while a consumer used the bucket within the last minute.

    For a job the label notes that the live consumers, replays and other jobs share this bucket.
    """
    label = "orchestrator rate limit"
    if job is not None:
        label += " (one for the whole prefix)"
    if rate_limit is None:
        return f"{label}: not in use"
    # A snapshot without `active` (made by an older version) is shown with its rates, as it was then.
    if not rate_limit.get("active", True):
        return f"{label}: idle, last used {_duration_text(rate_limit['idle_seconds'])} ago"
    return (
        f"{label}: {rate_limit['effective_rate']:.3g}/s effective of "
        f"{rate_limit['configured_rate']:.3g}/s configured, {rate_limit['tokens']:.1f} tokens"
    )


def _duration_text(seconds: float) -> str:
    """Return ``seconds`` as ``45 s``, ``3 min`` or ``2.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status(
    ctx: typer.Context,
    job: str = typer.Option(None, "--job", help="Show the streams of this `rewardpilot run` job."),
    as_json: bool = typer.Option(
        False, "--json",
        help="Print the snapshot as JSON. Its `jobs` key is null unless the live streams are shown and empty: "
        f"then it has the jobs found under the prefix (count, up to {RECENT_JOBS_SHOWN} recent ids, and whether "
        "the key scan finished). With --job, the job's result count is `results.job`, and `job_expiry` has "
        "`remaining_seconds`, `expires_at` (UTC) and the run's `keep_seconds`, or is null when the job's keys "
        "do not expire (always null without --job). `rate_limit.active` is "
        "false when no consumer used the orchestrator rate limit in the last minute. "
        "`results_per_second` is the rate of new live results (the job's results with --job), averaged "
        "over `results_rate_seconds`. A rate takes two readings, so a single snapshot has both null. With "
        "--watch, each refresh prints one JSON line, and the rate is known from the second line on: "
        "`status --watch --json --count 2` ends with a line that has it.",
    ),
    watch: bool = typer.Option(
        False, "--watch",
        help="Refresh the view until interrupted (Ctrl-C), with the results per second over the last minute "
        "(during the first minute, since the watch started). With --json, print one JSON line per refresh.",
    ),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes with --watch."),
    count: int = typer.Option(0, "--count", help="With --watch, stop after this many refreshes; 0 runs until interrupted."),
) -> None:
    """Show stream lengths (per partition, with lease holders, when partitioned), group lag and pending entries, consumers, dead letters and the orchestrator rate."""
    # NaN passes "interval <= 0", because every comparison with NaN is false.
    if not (0 < interval <= MAX_OPTION_SECONDS):
        raise typer.BadParameter(f"--interval {interval} must be a positive, finite number of seconds "
                                 f"up to {MAX_OPTION_SECONDS:,} ({MAX_OPTION_SECONDS // 86_400} days)")
    if count < 0:
        raise typer.BadParameter(f"--count {count} must be 0 (no limit) or more")
    if count and not watch:
        raise typer.BadParameter(f"--count {count} only applies with --watch; add --watch")

    from rewardpilot.status import collect_status

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    keys = context.keys(job)
    check_job_exists(client, context, keys)
    if not watch:
        snapshot = collect_status(client, keys)
        snapshot["jobs"] = _jobs_if_live_empty(client, snapshot, context.prefix, job)
        if as_json:
            _add_rate(snapshot, None)
            typer.echo(json.dumps(snapshot))
            return
        stdout_console().print(_render(snapshot, job))
        _print_stranded_warning(snapshot)
        _print_jobs_hint(snapshot["jobs"], context.prefix)
        _print_no_consumer_hint(snapshot, context.prefix, job)
        return

    try:
        if as_json:
            _watch_json(client, context, keys, job, interval, count)
        else:
            _watch_views(client, context, keys, job, interval, count)
    except KeyboardInterrupt:
        return


def _refreshes(client, keys, interval: float, count: int, on_first):
    """Yield each refresh's snapshot with its results rate, or the error of a refresh that could not reach Redis.

    ``on_first`` is called with the first snapshot read, once. ``count``
    0 refreshes until interrupted.
    """
    import redis

    from rewardpilot.status import ResultRate, collect_status

    rate = ResultRate()
    refreshes = 0
    first = True
    while True:
        try:
            snapshot = collect_status(client, keys)
            _add_rate(snapshot, rate.sample(client, keys.results(LIVE_RUN)))
            if first:
                on_first(snapshot)
                first = False
            result = snapshot
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # A watch outlives a Redis restart: it shows the error and tries again at the next refresh.
            result = exc
        yield result
        refreshes += 1
        if count and refreshes >= count:
            return
        time.sleep(interval)


def _watch_views(client, context, keys, job: str | None, interval: float, count: int) -> None:
    """Show a table per refresh: redrawn in place on a terminal, printed in turn otherwise."""
    from rich.live import Live

    def print_hints(snapshot: dict) -> None:
        # Looked up once: a key scan on every refresh would load the server for a hint.
        _print_jobs_hint(_jobs_if_live_empty(client, snapshot, context.prefix, job), context.prefix)
        _print_no_consumer_hint(snapshot, context.prefix, job)
        _print_stranded_warning(snapshot)

    def views():
        for result in _refreshes(client, keys, interval, count, print_hints):
            if isinstance(result, Exception):
                yield _unreachable_view(context.url(), result, interval)
            else:
                yield _render(result, job)

    out = stdout_console()
    if not out.is_terminal:
        # Redrawing in place needs a terminal. A pipe or a file gets one view per
        # refresh, flushed, so a reader or a kill by `timeout` loses none of them.
        for view in views():
            out.print(view)
            sys.stdout.flush()
        return

    with Live(console=out, auto_refresh=False) as live:
        for view in views():
            live.update(view, refresh=True)


def _watch_json(client, context, keys, job: str | None, interval: float, count: int) -> None:
    """Print one JSON snapshot line per refresh, and a refresh that cannot reach Redis as an error on stderr.

    ``jobs`` is looked up on the first refresh only, and every line repeats that lookup.
    """
    first_lookup: dict = {}

    def look_up_jobs(snapshot: dict) -> None:
        first_lookup["jobs"] = _jobs_if_live_empty(client, snapshot, context.prefix, job)

    for result in _refreshes(client, keys, interval, count, look_up_jobs):
        if isinstance(result, Exception):
            console.print(_unreachable_view(context.url(), result, interval), soft_wrap=True)
            continue
        result["jobs"] = first_lookup.get("jobs")
        typer.echo(json.dumps(result))
        sys.stdout.flush()
