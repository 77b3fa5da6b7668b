"""``rewardpilot trim``: remove old transactions that every consumer group is done with."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import typer

from rewardpilot.cli.context import app_context, check_job_exists, check_redis, console, stdout_console

if TYPE_CHECKING:
    from rewardpilot.cli.context import AppContext
    from rewardpilot.retention import TrimReport


def trim(
    ctx: typer.Context,
    older_than: str = typer.Option(..., "--older-than", help="Remove entries older than this age: 90s, 15m, 12h, 30d or 2w."),
    job: str = typer.Option(None, "--job", help="Trim the transactions streams of this `rewardpilot run` job."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be removed and remove nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per stream, one per line."),
) -> None:
    """Trim the transactions streams by MINID, never past an entry a consumer group has not read or acknowledged.

    A stream that no live consumer group has read yet keeps every entry, because a replay's group does not count.
    With partitions, every partition stream is trimmed, each to the MINID its own consumer groups allow.
    """
    from rewardpilot.partitions import partition_streams, stored_count
    from rewardpilot.retention import InvalidAgeError, parse_age
    from rewardpilot.retention import trim as trim_stream

    try:
        age = parse_age(older_than)
    except InvalidAgeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    keys = context.keys(job)
    check_job_exists(client, context, keys)
    streams = partition_streams(keys, stored_count(client, keys))

    async def main() -> list[TrimReport]:
        async_client = context.async_client()
        try:
            return [await trim_stream(async_client, stream, age, dry_run=dry_run) for stream in streams]
        finally:
            await async_client.aclose()

    reports = asyncio.run(main())
    if as_json:
        for report in reports:
            typer.echo(json.dumps(report.as_dict()))
        return

    out = stdout_console()
    for report in reports:
        for line in _report_lines(report, context):
            out.print(line, markup=False, soft_wrap=True)


def _report_lines(report: TrimReport, context: AppContext) -> list[str]:
    """Say what the trim removed and, when it kept entries older than the cutoff, why."""
    from rewardpilot.retention import REPLAY_GROUP_PREFIX, is_replay_group

    verb = "would remove" if report.dry_run else "removed"
    keep_verb = "would keep" if report.dry_run else "kept"
    kept_unread = report.no_live_group and bool(report.held_back_count)
    if report.removed:
        lines = [f"{report.stream}: {verb} {_entries(report.removed)} older than {_with_time(report.min_id)}"]
    elif report.held_back_by or kept_unread:
        lines = [f"{report.stream}: {verb} 0 entries"]
    else:
        # Nothing was removed and nothing older than the cutoff was kept, so there is nothing older.
        return [f"{report.stream}: {verb} 0 entries; no entry is older than the cutoff "
                f"({_with_time(report.cutoff_id)}), or the stream is empty"]

    if kept_unread:
        if report.no_consumer_group:
            readers = f"no consumer group has read {report.stream} yet"
        else:
            groups = ", ".join(repr(group) for group in report.replay_groups)
            noun = "replay group" if len(report.replay_groups) == 1 else "replay groups"
            readers = (f"no live consumer group has read {report.stream} yet, only {noun} {groups}, and a replay's "
                       "reads do not count because the live consumers still have to read every entry")
        kept_entries = "the 1 entry" if report.held_back_count == 1 else f"all {report.held_back_count} entries"
        lines.append(f"{readers}, so the trim {keep_verb} {kept_entries} older than the cutoff ({report.cutoff_id}); "
                     "start a consumer (rewardpilot consume) before trimming")
    if report.held_back_by:
        lines.append(f"consumer group {report.held_back_by!r} held the trim back to {report.min_id} "
                     f"(cutoff was {report.cutoff_id}) and {keep_verb} {_entries(report.held_back_count)} older "
                     "than the cutoff, from the first entry it has not read or acknowledged")
        if is_replay_group(report.held_back_by):
            run = report.held_back_by[len(REPLAY_GROUP_PREFIX):]
            lines.append(f"{report.held_back_by!r} is the group of replay run {run!r}. Unless that replay is "
                         f"running, finish it by running the same `rewardpilot replay --run {run} ...` command "
                         f"again, or give it up with: {context.redis_cli('XGROUP', 'DESTROY', report.stream, report.held_back_by)} "
                         "(its results stay; a later replay under that name starts again from its --start)")
    return lines


def _id_millis(entry_id: str) -> int:
    return int(str(entry_id).split("-")[0] or 0)


def _with_time(entry_id: str) -> str:
    """Return a stream id with the UTC time of its milliseconds part: ``1796502236126-0 (2026-12-05 20:03:56 UTC)``."""
    moment = datetime.fromtimestamp(_id_millis(entry_id) / 1000, timezone.utc)
    return f"{entry_id} ({moment:%Y-%m-%d %H:%M:%S} UTC)"


def _entries(count: int) -> str:
    return "1 entry" if count == 1 else f"{count} entries"
