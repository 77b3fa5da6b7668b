"""``rewardpilot consume``: run a consumer pool on the transactions stream."""

from __future__ import annotations

import asyncio
import json

import typer

from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from consumer.shutdown import install_signal_handlers
from rewardpilot.cli.context import app_context, check_redis
from rewardpilot.cli.options import check_cards, split_cards
from rewardpilot.streams import LIVE_RUN


def consume(
    ctx: typer.Context,
    workers: int = typer.Option(2, "--workers", min=1, max=256, help="asyncio workers in this process."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=10_000, help="XREADGROUP COUNT: entries per micro-batch."),
    block_ms: int = typer.Option(1000, "--block-ms", min=1, max=60_000, help="XREADGROUP BLOCK in milliseconds."),
    drain: bool = typer.Option(False, "--drain", help="Exit once the stream is drained."),
    wallet: list[str] = typer.Option(None, "--wallet", help="Cards to judge users without a wallet against (repeat or comma-separate)."),
    run: str = typer.Option(LIVE_RUN, "--run", help="Run name; results go to this run's results stream."),
    job: str = typer.Option(None, "--job", help="Work on the streams of this `rewardpilot run` job."),
    name: str = typer.Option(None, "--name", help="Consumer name (default: host-pid-random, unique per process)."),
    grace: float = typer.Option(10.0, "--grace", min=0, help="Seconds to finish the batch in hand after SIGTERM."),
) -> None:
    """Consume transactions in micro-batches and publish a recommendation for each."""
    context = app_context(ctx)
    check_redis(context.client(), context)
    settings = ConsumerSettings(
        keys=context.keys(job), run=run, consumer=name, workers=workers, batch_size=batch_size,
        block_ms=block_ms, drain=drain, wallet=check_cards(split_cards(wallet)),
        shutdown_grace_seconds=grace,
    )

    async def main():
        client = context.async_client(block_ms=block_ms)
        pool = ConsumerPool(client, settings)
        install_signal_handlers(pool)
        try:
            return await pool.run()
        finally:
            await pool.recommender.aclose()
            await client.aclose()

    stats = asyncio.run(main())
    typer.echo(json.dumps(stats.as_dict()))
