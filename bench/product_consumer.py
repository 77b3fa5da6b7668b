"""A gated child running the product's consumer pool, as ``rewardpilot consume`` does.

    python -m bench.product_consumer --url URL --prefix P --job J [--drain] [--orchestrator URL]

Loads the engine, prints ``ready``, waits for a line on stdin, then runs
``ConsumerPool``. SIGUSR1 turns drain on (the pool exits once the group is
drained), which is what ``rewardpilot run`` does after publishing. Prints the
pool's stats and the process's memory as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from consumer.shutdown import install_signal_handlers
from rewardpilot import logs
from rewardpilot.connection import connect_async
from rewardpilot.streams import StreamKeys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the consumer pool as a benchmark child.")
    parser.add_argument("--url", required=True, help="Redis URL")
    parser.add_argument("--prefix", required=True, help="key prefix")
    parser.add_argument("--job", required=True, help="job whose streams to consume")
    parser.add_argument("--drain", action="store_true", help="exit once the group is drained")
    parser.add_argument("--workers", type=int, default=2, help="asyncio workers (the CLI default)")
    parser.add_argument("--batch-size", type=int, default=500, help="XREADGROUP COUNT")
    parser.add_argument("--results-maxlen", type=int, default=None, help="trim the results stream to about this many entries")
    parser.add_argument("--orchestrator", default=None, help="orchestrator URL; unset for the in-process engine")
    parser.add_argument("--canned", action="store_true",
                        help="take results from bench.canned's cache instead of running the engine for every transaction")
    return parser.parse_args(argv)


def make_recommender(url: str | None, canned: bool = False):
    if canned:
        from bench.canned import CannedRecommender

        return CannedRecommender()
    if not url:
        return None
    from consumer.recommenders.factory import make_recommender as factory

    return factory(url)


async def consume(settings: ConsumerSettings, url: str, orchestrator: str | None, canned: bool) -> dict:
    client = connect_async(url, block_ms=settings.block_ms)
    pool = ConsumerPool(client, settings, make_recommender(orchestrator, canned))
    install_signal_handlers(pool)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, pool.enable_drain)

    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    cpu_started = time.process_time()
    try:
        stats = await pool.run()
    finally:
        await pool.recommender.aclose()
        await client.aclose()
    return {"stats": stats.as_dict(), "cpu_seconds": time.process_time() - cpu_started}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logs.configure("WARNING")
    settings = ConsumerSettings(
        keys=StreamKeys(prefix=args.prefix, job=args.job), drain=args.drain,
        workers=args.workers, batch_size=args.batch_size, results_maxlen=args.results_maxlen,
    )
    report = asyncio.run(consume(settings, args.url, args.orchestrator, args.canned))
    print(json.dumps(report, default=str), flush=True)


if __name__ == "__main__":
    main()
