"""``rewardpilot subscribe``: print results as JSON lines as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import sys
from typing import TYPE_CHECKING, Iterator

import typer
from rich.markup import escape

from rewardpilot.cli.context import app_context, check_job_exists, check_redis, console, program_name
from rewardpilot.streams import JOB_ID_PATTERN, LIVE_RUN, entry_key

if TYPE_CHECKING:
    import redis

    from consumer.shutdown import Interruption
    from rewardpilot.cli.context import AppContext
    from rewardpilot.results import InvalidResultEntryError
    from rewardpilot.streams import StreamKeys

# A stream entry id as XREAD takes it: <milliseconds>-<sequence>, or <milliseconds> alone.
_ENTRY_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_MAX_ID_PART = 2**64 - 1
# Runs listed in the hint for a missing results stream, and the SCAN calls spent finding them.
HINT_RUNS = 5
HINT_SCAN_MAX_CALLS = 100
# The longest XREAD BLOCK while following, so a stop signal that comes during a read is
# acted on within about a second.
FOLLOW_BLOCK_MS = 1000
# Invalid results entries that get a warning line each. Later ones are only counted.
REPORTED_INVALID_ENTRIES = 10


def check_entry_id(value: str) -> str:
    """Return ``value`` when it is a stream entry id, else exit 2 naming it and the accepted forms.

    ``rewardpilot.results.subscribe_entries`` turns a millisecond alone into
    the id after every entry of that millisecond.
    """
    match = _ENTRY_ID.match(value)
    if match is None or any(int(part) > _MAX_ID_PART for part in match.groups() if part is not None):
        console.print(f"[red]error:[/red] --from {escape(repr(value))} is not a stream entry id; use "
                      "<milliseconds>-<sequence> (such as 1700000000000-0) to start after that result, "
                      "<milliseconds> alone to start after every result of that millisecond, "
                      "or --from-start for the whole stream",
                      soft_wrap=True)
        raise typer.Exit(2)
    return value


def check_run(run: str) -> str:
    """Return ``run`` when it is ``live`` or a run name that replay accepts, else exit 2 naming it and the rule."""
    from consumer.settings import RUN_NAME_PATTERN, RUN_NAME_RULE

    if run != LIVE_RUN and not RUN_NAME_PATTERN.fullmatch(run):
        console.print(f"[red]error:[/red] run name {escape(repr(run))} is invalid; {RUN_NAME_RULE}, "
                      f"or leave --run out to follow the live results", soft_wrap=True)
        raise typer.Exit(2)
    return run


def start_id(from_start: bool, from_id: str | None) -> str:
    """Return the id to read after: "0" with --from-start, the checked --from id, else "$" (new results only)."""
    if from_start and from_id is not None:
        console.print("[red]error:[/red] --from-start and --from are alternatives; give one of them")
        raise typer.Exit(2)
    if from_start:
        return "0"
    if from_id is not None:
        return check_entry_id(from_id)
    return "$"


def check_idle_timeout(seconds: float | None) -> float | None:
    """Exit 2 unless ``seconds`` is unset, zero or positive. Infinity waits as long as unset does."""
    if seconds is None:
        return None
    if math.isnan(seconds) or seconds < 0:
        console.print(f"[red]error:[/red] --idle-timeout {seconds} is invalid; give seconds of 0 or more "
                      "(0 exits once a read finds no new result), or leave it out to wait until interrupted",
                      soft_wrap=True)
        raise typer.Exit(2)
    return seconds


def list_runs(client: redis.Redis, keys: StreamKeys) -> tuple[list[str], int]:
    """Return up to HINT_RUNS run names that have a results stream under ``keys``, and how many were found.

    The names come from a bounded SCAN, so the count is a lower bound when the
    prefix has many keys.
    """
    base = keys.results()
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", base) + ":*"
    runs: set[str] = set()
    cursor = 0
    for _ in range(HINT_SCAN_MAX_CALLS):
        cursor, names = client.scan(cursor=cursor, match=pattern, count=1000, _type="stream")
        for raw in names:
            name = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            run = name[len(base) + 1:]
            if ":" not in run:
                runs.add(run)
        if int(cursor) == 0:
            break
    return sorted(runs)[:HINT_RUNS], len(runs)


def list_jobs_with_run(client: redis.Redis, keys: StreamKeys, run: str) -> tuple[list[str], int]:
    """Return up to HINT_RUNS job ids that have a results stream for ``run``, and how many were found.

    The ids come from a bounded SCAN, so the count is a lower bound when the
    prefix has many keys. ``run`` must be a checked run name, which has no
    SCAN pattern characters.
    """
    prefix_pattern = re.sub(r"([*?\[\]\\])", r"\\\1", keys.prefix)
    suffix = f":results:{run}"
    start = len(keys.prefix) + len("job:")
    jobs: set[str] = set()
    cursor = 0
    for _ in range(HINT_SCAN_MAX_CALLS):
        cursor, names = client.scan(cursor=cursor, match=f"{prefix_pattern}job:*{suffix}", count=1000,
                                    _type="stream")
        for raw in names:
            name = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            job = name[start:-len(suffix)]
            if JOB_ID_PATTERN.fullmatch(job):
                jobs.add(job)
        if int(cursor) == 0:
            break
    return sorted(jobs)[:HINT_RUNS], len(jobs)


def hint_missing_stream(client: redis.Redis, keys: StreamKeys, run: str) -> None:
    """Print a hint on stderr when the run's results stream does not exist yet."""
    stream = keys.results(run)
    if client.exists(stream):
        return
    program = program_name()
    where = f" of job {keys.job!r}" if keys.job else ""
    job_option = f" --job {keys.job}" if keys.job else ""
    if run == LIVE_RUN:
        message = (f"hint: no results stream {stream!r}{where} yet; results appear once `{program} consume"
                   f"{job_option}` processes published transactions. Waiting for them.")
    else:
        jobs, job_count = list_jobs_with_run(client, keys, run) if keys.job is None else ([], 0)
        if jobs:
            message = _run_in_jobs_hint(run, stream, jobs, job_count)
        else:
            found, count = list_runs(client, keys)
            known = f"runs with results here: {', '.join(found)}" if found else "no run has results here yet"
            if count > len(found):
                known += f", and {count - len(found)} more"
            message = (f"hint: no results stream for run {run!r}{where} ({stream}); {known}. Check the name, or "
                       f"start the run with `{program} replay{job_option} --run {run} --start T`. "
                       "Waiting for results.")
    console.print(escape(message), soft_wrap=True)


def _run_in_jobs_hint(run: str, stream: str, jobs: list[str], count: int) -> str:
    """Return the hint for a run that has no results stream outside a job but has one in ``count`` jobs."""
    if count == 1:
        holders = f"job {jobs[0]} has one"
    else:
        listed = ", ".join(jobs)
        if count > len(jobs):
            listed += f", and {count - len(jobs)} more"
        holders = f"jobs {listed} have one"
    return (f"hint: no results stream for run {run!r} outside a job ({stream}), but {holders}: "
            f"add --job {jobs[0]} to follow it. Waiting for results.")


@contextlib.contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[Interruption]:
    """Record the first SIGINT or SIGTERM and set ``stop``, then restore the previous handlers.

    A second signal ends the process at once with the default action. The
    handlers are installed with ``signal.signal``, not the loop's
    ``add_signal_handler``, so the first signal is recorded even while a
    write to a full stdout pipe blocks the loop, and the check before the
    next printed line finds it. They also replace an inherited SIG_IGN: a background job of a
    non-interactive shell starts with SIGINT ignored. ``stop`` is set by a
    loop callback (``call_soon_threadsafe``), which also wakes a loop
    waiting in its selector, and not from the handler itself, which can run
    in the middle of the loop's own code.
    """
    from consumer.shutdown import first_signal_stops

    with first_signal_stops(lambda: loop.call_soon_threadsafe(stop.set)) as interruption:
        yield interruption


class InvalidEntries:
    """Report results entries that are not valid results: one warning each for the first few, then a count.

    ``last_id`` is the id of the last one seen, to resume after it.
    """

    def __init__(self, stream: str):
        self.stream = stream
        self.count = 0
        self.first_id: str | None = None
        self.last_id: str | None = None

    def skip(self, error: InvalidResultEntryError) -> None:
        self.count += 1
        self.first_id = self.first_id or error.result_id
        self.last_id = error.result_id
        if self.count <= REPORTED_INVALID_ENTRIES:
            console.print(f"warning: skipped results entry {error.result_id} of {self.stream}, which is not a valid "
                          f"result: {error.reason}. The entry stays on the stream; --from {error.result_id} starts "
                          "after it.", markup=False, soft_wrap=True, highlight=False)
        if self.count == REPORTED_INVALID_ENTRIES:
            console.print(f"warning: {REPORTED_INVALID_ENTRIES} invalid results entries so far; further ones are "
                          "skipped and counted, and the count is printed at exit.", markup=False, soft_wrap=True,
                          highlight=False)

    def print_summary(self) -> None:
        if not self.count:
            return
        if self.count == 1:
            skipped = f"1 results entry of {self.stream} that is not a valid result ({self.first_id})"
        else:
            skipped = (f"{self.count} results entries of {self.stream} that are not valid results "
                       f"({self.first_id} to {self.last_id})")
        console.print(f"warning: skipped {skipped}.", markup=False, soft_wrap=True, highlight=False)


async def follow_results(context: AppContext, stream: str, start: str, user: str | None,
                         idle_timeout: float | None, reconnect_timeout: float) -> None:
    """Print the stream's results after ``start`` as JSON lines, reconnecting after a dropped connection.

    Each line is the result's JSON with its results-stream id first, as
    ``result_id``, so ``--from`` with the last one resumes without repeats.
    An entry that is not a valid result is skipped with a warning on stderr
    naming its id and what is wrong (``InvalidEntries``), and the number
    skipped is printed at exit.
    After ``reconnect_timeout`` seconds without a reply from Redis, exits 1
    with an error naming the server and the last ``result_id`` printed.
    A SIGINT or SIGTERM stops it after the line being printed, and it exits
    with 128 plus the signal number. The signal only sets an event that is
    checked between lines and between reads, so no task is cancelled inside
    a Redis command: with redis-py 8.2.0 on Python 3.11, such a
    cancellation was seen to be lost, and the first Ctrl-C did nothing.
    """
    from rewardpilot.results import ResultsConnectionLost, subscribe_entries

    stop = asyncio.Event()
    invalid = InvalidEntries(stream)
    with stop_on_signals(asyncio.get_running_loop(), stop) as interruption:
        client = context.async_client(block_ms=FOLLOW_BLOCK_MS)
        results = subscribe_entries(client, stream, start=start, user=user, block_ms=FOLLOW_BLOCK_MS,
                                    idle_timeout_seconds=idle_timeout, reconnect_timeout_seconds=reconnect_timeout,
                                    stop=stop, on_invalid=invalid.skip)
        last_printed = start
        try:
            async for result_id, result in results:
                if interruption.signum is not None:
                    break
                sys.stdout.write(json.dumps({"result_id": result_id, **result.model_dump(mode="json")}) + "\n")
                sys.stdout.flush()
                last_printed = result_id
        except ResultsConnectionLost as exc:
            console.print(f"[red]error:[/red] lost the connection to Redis at {escape(context.describe_server())} "
                          f"and {escape(str(exc))}; check that the server is running and reachable, then subscribe "
                          f"again with {_resume_text(_resume_id(last_printed, invalid))}", soft_wrap=True)
            raise typer.Exit(1) from None
        finally:
            await results.aclose()
            await client.aclose()
            invalid.print_summary()

    last_id = _resume_id(last_printed, invalid)

    if interruption.signum is not None:
        if last_id in ("$", "0"):
            message = f"interrupted by {interruption.name} before any result was printed"
        else:
            message = (f"interrupted by {interruption.name}; subscribe again with --from {last_id} "
                       "to go on where this one stopped")
        console.print(message, markup=False, soft_wrap=True, highlight=False)
        raise typer.Exit(interruption.exit_status)


def _resume_text(last_id: str) -> str:
    return f"--from {last_id}" if last_id not in ("$", "0") else "--from and the last result_id printed"


def _resume_id(last_printed: str, invalid: InvalidEntries) -> str:
    """Return the id to resume after: the last result printed, or a later invalid entry that was skipped."""
    if invalid.last_id is None or last_printed == "$":
        return invalid.last_id or last_printed
    if entry_key(invalid.last_id) > entry_key(last_printed):
        return invalid.last_id
    return last_printed


def subscribe(
    ctx: typer.Context,
    from_start: bool = typer.Option(False, "--from-start", help="Start at the first result in the stream."),
    from_id: str = typer.Option(
        None, "--from", help="Start after this results-stream id: <milliseconds>-<sequence>, such as the "
        "result_id of a printed result, or <milliseconds> alone to start after every result of that millisecond."
    ),
    user: str = typer.Option(None, "--user", help="Only results for this user_id."),
    run: str = typer.Option(LIVE_RUN, "--run", help="Follow the results of this run (a replay's name)."),
    job: str = typer.Option(
        None, "--job", help="Follow the results of this `rewardpilot run` job; with --run, of a replay of the job."
    ),
    idle_timeout: float = typer.Option(
        None, "--idle-timeout", help="Exit after this many seconds (0 or more) without a new result to print; "
        "other users' results (with --user) and invalid entries do not count as new.",
        show_default=False,
    ),
    reconnect_timeout: float = typer.Option(
        60.0, "--reconnect-timeout", min=0,
        help="Seconds to keep reconnecting after the connection to Redis drops, before exiting with 1.",
    ),
) -> None:
    """Print results as JSON lines on stdout until interrupted.

    docs/results.md lists the fields of each line. An entry of the results
    stream that is not a valid result is skipped with a warning on stderr
    naming its id and what is wrong. The number skipped is printed at exit,
    and the exit status stays as it would be.

    Exit status: 0 after --idle-timeout, 1 when the connection to Redis
    stayed lost for --reconnect-timeout, 2 for an invalid option, 130 on
    SIGINT (Ctrl-C) and 143 on SIGTERM. A signal stops it within about a
    second, after the line being printed. While stdout is a pipe that no
    process reads, that line waits for a reader, and a second signal ends
    the process at once.
    """
    start = start_id(from_start, from_id)
    idle_timeout = check_idle_timeout(idle_timeout)
    run = check_run(run)

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    keys = context.keys(job)
    check_job_exists(client, context, keys, run)
    hint_missing_stream(client, keys, run)

    try:
        asyncio.run(follow_results(context, keys.results(run), start, user, idle_timeout, reconnect_timeout))
    except KeyboardInterrupt:
        # Ctrl-C before follow_results installed its handlers: asyncio.run raised it.
        raise typer.Exit(128 + signal.SIGINT) from None
