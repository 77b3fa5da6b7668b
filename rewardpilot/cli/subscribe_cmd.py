"""``rewardpilot subscribe``: print results as JSON lines as they arrive."""

from __future__ import annotations

import asyncio
import sys

import typer

from rewardpilot.cli.context import app_context, check_job_exists, check_redis
from rewardpilot.streams import LIVE_RUN


def subscribe(
    ctx: typer.Context,
    from_start: bool = typer.Option(False, "--from-start", help="Start at the first result in the stream."),
    from_id: str = typer.Option(None, "--from", help="Start after this stream entry id."),
    user: str = typer.Option(None, "--user", help="Only results for this user_id."),
    run: str = typer.Option(LIVE_RUN, "--run", help="Follow the results of this run (a replay's name)."),
    job: str = typer.Option(None, "--job", help="Follow the results of this `rewardpilot run` job."),
    idle_timeout: float = typer.Option(
        None, "--idle-timeout", help="Exit after this many seconds without a new result.", show_default=False
    ),
) -> None:
    """Print results as JSON lines on stdout until interrupted."""
    from rewardpilot.results import subscribe as follow

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    keys = context.keys(job)
    stream = keys.results(run)
    start = "0" if from_start else (from_id or "$")
    check_job_exists(client, context, keys, run)

    async def main() -> None:
        client = context.async_client(block_ms=1000)
        try:
            async for result in follow(client, stream, start=start, user=user, block_ms=1000,
                                       idle_timeout_seconds=idle_timeout):
                sys.stdout.write(result.model_dump_json() + "\n")
                sys.stdout.flush()
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
