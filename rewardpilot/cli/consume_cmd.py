"""``rewardpilot consume``: run a consumer pool on the transactions stream."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import typer

from rewardpilot.cli.context import app_context, check_job_exists, console, wait_for_redis
from rewardpilot.cli.options import age_seconds, check_cards, split_cards
from rewardpilot.cli.partition_options import agreed_partitions, partitions_option
from rewardpilot.streams import LIVE_RUN

if TYPE_CHECKING:
    from consumer.build import CallOptions


def call_options(orchestrator, rate, burst, counting, max_attempts, breaker_threshold, breaker_cooldown,
                 timeout) -> CallOptions:
    """Collect the recommender call options, or exit 2 naming the value when ``--count`` is invalid."""
    from consumer.build import CallOptions
    from consumer.errors import InvalidRateLimitError

    options = CallOptions.from_env(
        orchestrator_url=orchestrator, rate=rate, burst=burst, counting=counting, max_attempts=max_attempts,
        breaker_threshold=breaker_threshold, breaker_cooldown=breaker_cooldown, timeout=timeout,
    )
    try:
        options.check()
    except InvalidRateLimitError as exc:
        console.print(f"[red]error:[/red] --count: {exc}")
        raise typer.Exit(2) from None
    return options


def warn_markers_expire_first(marker_ttl: str, trim_older_than: str) -> None:
    """Warn that the stream keeps entries longer than their result markers live."""
    console.print(
        f"[yellow]warning:[/yellow] --trim-older-than {trim_older_than} keeps entries longer than "
        f"--marker-ttl {marker_ttl}: an entry redelivered after its marker expired gets a "
        "second result. Raise --marker-ttl to at least the retention."
    )


def make_pool(client, settings, options):
    """Build the pool; exit 2 with the reason when an option is invalid."""
    from consumer.build import build_pool
    from consumer.errors import InvalidRateLimitError

    try:
        return build_pool(client, settings, options)
    except (InvalidRateLimitError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def consume(
    ctx: typer.Context,
    workers: int = typer.Option(2, "--workers", min=1, max=256, help="asyncio workers in this process."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=10_000, help="XREADGROUP COUNT: entries per micro-batch."),
    block_ms: int = typer.Option(1000, "--block-ms", min=1, max=60_000, help="XREADGROUP BLOCK in milliseconds."),
    drain: bool = typer.Option(False, "--drain", help="Exit once the stream is drained: with status 1 when any entry went to the dead-letter stream."),
    wallet: list[str] = typer.Option(None, "--wallet", help="Cards to judge users without a wallet against (repeat or comma-separate)."),
    run: str = typer.Option(LIVE_RUN, "--run", help="Run name; results go to this run's results stream."),
    job: str = typer.Option(None, "--job", help="Work on the streams of this `rewardpilot run` job."),
    name: str = typer.Option(None, "--name", help="Consumer name (default: host-pid-random, unique per process)."),
    grace: float = typer.Option(10.0, "--grace", min=0, help="Seconds to finish the batch in hand after SIGTERM."),
    visibility_timeout: float = typer.Option(60.0, "--visibility-timeout", min=0.01, help="Seconds an entry may stay unsettled before another consumer claims it."),
    max_deliveries: int = typer.Option(5, "--max-deliveries", min=1, help="Deliveries after which an entry is a poison message and is dead-lettered."),
    orchestrator: str = typer.Option(None, "--orchestrator", help="Orchestrator URL: http(s)://host:port for REST, .../mcp for MCP (env ORCHESTRATOR_URL). Unset: the in-process engine.", show_default=False),
    rate: str = typer.Option(None, "--rate", help="Shared rate limit of orchestrator calls, such as 100/min or 50/s. Unset: no limit.", show_default=False),
    burst: int = typer.Option(10, "--burst", min=1, help="Token bucket size: calls allowed at once above the rate."),
    counting: str = typer.Option("requests", "--count", help="What a token pays for: requests (a batch call is one) or transactions."),
    max_attempts: int = typer.Option(5, "--max-attempts", min=1, help="Tries per batch on transient failures before it is given back to the group."),
    breaker_threshold: int = typer.Option(5, "--breaker-threshold", min=1, help="Consecutive transient failures that open the circuit breaker."),
    breaker_cooldown: float = typer.Option(30.0, "--breaker-cooldown", min=0.01, help="Seconds the breaker stays open before one probe call."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.01, help="Seconds per orchestrator request."),
    marker_ttl: str = typer.Option("30d", "--marker-ttl", help="How long each result's de-duplication marker lives (such as 30d). Keep it at least as long as the stream's retention. A marker takes about 100 to 180 bytes of Redis memory."),
    trim_older_than: str = typer.Option(None, "--trim-older-than", help="Trim as it goes: every minute, remove transactions older than this age (such as 30d) that every consumer group has read and acknowledged.", show_default=False),
    startup_timeout: float = typer.Option(60.0, "--startup-timeout", min=0, help="Seconds to wait for Redis to answer at start before giving up."),
    metrics_port: int = typer.Option(None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port.", show_default=False),
    metrics_address: str = typer.Option("127.0.0.1", "--metrics-address", help="Address the metrics endpoint listens on."),
    partitions: int = partitions_option(),
    lease: float = typer.Option(10.0, "--lease", min=0.1, help="Seconds a partition lease lasts unless renewed; another consumer takes a dead holder's partitions after this."),
) -> None:
    """Consume transactions in micro-batches and publish a recommendation for each."""
    from consumer.settings import ConsumerSettings
    from consumer.shutdown import install_signal_handlers

    marker_ttl_seconds = age_seconds(marker_ttl, "--marker-ttl")
    trim_age = age_seconds(trim_older_than, "--trim-older-than")
    if trim_age is not None and trim_age > marker_ttl_seconds:
        warn_markers_expire_first(marker_ttl, trim_older_than)
    options = call_options(orchestrator, rate, burst, counting, max_attempts, breaker_threshold,
                           breaker_cooldown, timeout)
    context = app_context(ctx)
    wait_for_redis(context.client(), context, startup_timeout)
    # Checked before agreed_partitions, which would store a partition count under a mistyped job id.
    check_job_exists(context.client(), context, context.keys(job))
    partitions = agreed_partitions(context.client(), context.keys(job), partitions)
    settings = ConsumerSettings(
        keys=context.keys(job), run=run, consumer=name, workers=workers, batch_size=batch_size,
        block_ms=block_ms, drain=drain, wallet=check_cards(split_cards(wallet)),
        shutdown_grace_seconds=grace, visibility_timeout_ms=int(visibility_timeout * 1000),
        max_deliveries=max_deliveries, trim_older_than_seconds=trim_age, result_ttl_seconds=int(marker_ttl_seconds),
        partitions=partitions, lease_ms=int(lease * 1000),
    )

    async def main():
        client = context.async_client(block_ms=block_ms)
        pool = make_pool(client, settings, options)
        if metrics_port:
            from consumer.metrics import serve_metrics

            try:
                serve_metrics(pool, metrics_port, redis_url=context.url(), address=metrics_address)
            except OSError as exc:
                await pool.recommender.aclose()
                await client.aclose()
                console.print(f"[red]error:[/red] --metrics-port {metrics_port}: cannot listen on "
                              f"{metrics_address}:{metrics_port} ({exc.strerror or exc}); pick a free port")
                raise typer.Exit(2) from None
        interruption = install_signal_handlers(pool)
        try:
            return await pool.run(), pool.drained, interruption
        finally:
            await pool.recommender.aclose()
            await client.aclose()

    stats, drained, interruption = asyncio.run(main())
    typer.echo(json.dumps(stats.as_dict()))
    if drain and not drained and interruption.signum is not None:
        # A drain that a signal ended did not finish, so the group may still hold unread or pending entries.
        console.print(f"[yellow]interrupted by {interruption.name} before the group was drained[/yellow]")
        raise typer.Exit(interruption.exit_status)
    if drain and stats.dead_letters:
        # A drained batch run with dead letters did not fully succeed; scripts see it in the status.
        raise typer.Exit(1)
