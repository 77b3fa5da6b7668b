"""``rewardpilot consume``: run a consumer pool on the transactions stream."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from rewardpilot.cli.context import app_context, check_job_exists, console, wait_for_redis
from rewardpilot.cli.options import age_seconds, check_cards, check_seconds, split_cards
from rewardpilot.cli.partition_options import agreed_partitions, partitions_option
from rewardpilot.streams import LIVE_RUN

if TYPE_CHECKING:
    from consumer.build import CallOptions
    from consumer.pool import ConsumerPool
    from consumer.settings import ConsumerSettings
    from rewardpilot.job import JobLifetime
    from rewardpilot.streams import StreamKeys

# The consume option of each ConsumerSettings field whose value is the option's value unchanged.
OPTION_OF_FIELD = {"run": "--run", "consumer": "--name", "shutdown_grace_seconds": "--grace",
                   "wallet": "--wallet", "workers": "--workers", "batch_size": "--batch-size",
                   "block_ms": "--block-ms", "max_deliveries": "--max-deliveries",
                   "results_maxlen": "--results-maxlen", "partitions": "--partitions"}
# Fields that an option sets in another unit or after a conversion, so their message shows the field's value.
OPTION_BEHIND_FIELD = {"visibility_timeout_ms": "--visibility-timeout", "lease_ms": "--lease",
                       "result_ttl_seconds": "--marker-ttl", "cap_ttl_seconds": "--marker-ttl",
                       "trim_older_than_seconds": "--trim-older-than"}

# Milliseconds until the --name of a consumer that ended without releasing it (SIGKILL, a crash) is free again.
NAME_LEASE_MS = 15_000


def call_options(orchestrator, rate, burst, counting, max_attempts, breaker_threshold, breaker_cooldown,
                 timeout) -> CallOptions:
    """Collect the recommender call options.

    Exits 2 naming the value when ``--count`` is invalid, and, with an
    orchestrator URL, when ``ORCHESTRATOR_API_KEY`` cannot be sent.
    """
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
    if options.rate:
        check_rate(options.rate, options.burst, options.counting)
    if options.orchestrator_url:
        check_api_key_setting()
    return options


def check_rate(rate: str, burst: int, counting: str) -> None:
    """Exit 2 naming ``--rate`` when it is not a rate such as 100/min, before any warning about it is printed."""
    from consumer.errors import InvalidRateLimitError
    from consumer.ratelimit.base import RateLimitConfig

    try:
        RateLimitConfig.from_options(rate, burst, counting)
    except InvalidRateLimitError as exc:
        console.print(f"[red]error:[/red] --rate: {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def check_name(name: str | None) -> None:
    """Exit 2 when ``--name`` is empty or blank, which would otherwise fall back to a generated name."""
    if name is not None and not name.strip():
        console.print(f"[red]error:[/red] --name {escape(repr(name))} is empty; give a consumer name, "
                      "or leave out --name for a unique generated one", soft_wrap=True, highlight=False)
        raise typer.Exit(2)


def build_settings(**fields) -> ConsumerSettings:
    """Build the consumer settings, or exit 2 naming the option behind the first invalid field."""
    from consumer.settings import ConsumerSettings, InvalidSettingsError

    try:
        return ConsumerSettings(**fields)
    except InvalidSettingsError as exc:
        if exc.field in OPTION_OF_FIELD:
            message = f"{OPTION_OF_FIELD[exc.field]} {exc.value!r} is invalid: {exc.rule}"
        elif exc.field in OPTION_BEHIND_FIELD:
            message = f"{OPTION_BEHIND_FIELD[exc.field]}: {exc}"
        else:
            message = str(exc)
        console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def check_api_key_setting() -> None:
    """Exit 2 when ``ORCHESTRATOR_API_KEY`` cannot be sent; the message names the character, never the key."""
    from rewardpilot.orchestrator.api_key import InvalidApiKeyError, read_api_key

    try:
        read_api_key("consumer")
    except InvalidApiKeyError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def warn_rate_without_orchestrator(rate: str, batch_size: int, counting: str) -> None:
    """Warn that ``--rate`` without an orchestrator limits the in-process engine's micro-batches.

    With ``--count requests`` each micro-batch takes one token, however many
    transactions it carries.
    """
    if counting == "transactions":
        cost = "each transaction takes one token"
    else:
        cost = f"each micro-batch of up to --batch-size {batch_size} transactions takes one token"
    console.print(
        f"[yellow]warning:[/yellow] --rate {escape(rate)} limits calls to the recommender, and without "
        f"--orchestrator (or ORCHESTRATOR_URL) that is the in-process engine: {cost}. "
        "Leave out --rate, or pass --orchestrator URL to limit orchestrator calls.",
        soft_wrap=True, highlight=False,
    )


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


def name_lease_key(keys: StreamKeys, group: str, name: str) -> str:
    """Return the key of the lease a consumer takes on its name within ``group``."""
    return f"{keys.base}consumer-name:{group}:{name}"


@asynccontextmanager
async def name_lease(client, settings: ConsumerSettings):
    """Lease ``--name`` in its group while the block runs, or exit 2 when a running consumer has the lease.

    Two processes with one consumer name share one pending entries list, so
    recovery cannot tell their entries apart. A name the pool generates
    (host, pid and a random part) is unique, so only ``--name`` is checked.
    """
    if settings.consumer is None:
        yield None
        return
    import redis

    from rewardpilot.run_lock import RunLock, RunLockHeld

    key = name_lease_key(settings.keys, settings.group_name, settings.consumer)
    log_context = {"consumer": settings.consumer, "group": settings.group_name}
    if settings.keys.job:
        log_context["job"] = settings.keys.job
    lock = RunLock(client, key, lease_ms=NAME_LEASE_MS, log_context=log_context)
    # Only taking the lease is handled here. An error of the block itself propagates unchanged.
    try:
        await lock.__aenter__()
    except RunLockHeld as exc:
        holder = f"process {exc.holder} since {exc.since}" if exc.holder else "another process"
        console.print(
            f"[red]error:[/red] --name {escape(repr(settings.consumer))}: a consumer with this name is already "
            f"running in group {escape(repr(settings.group_name))} ({escape(holder)}). Two consumers with one name "
            "share one pending entries list, which breaks the recovery of unacknowledged entries. Stop the other "
            "consumer, pick another --name, or leave out --name for a unique one. A consumer that ended without "
            f"a clean stop releases its name within {NAME_LEASE_MS // 1000} s.",
            soft_wrap=True, highlight=False,
        )
        raise typer.Exit(2) from None
    except redis.RedisError as exc:
        console.print(f"[red]error:[/red] --name {escape(repr(settings.consumer))}: the name lease could not be "
                      f"taken, because a Redis command failed: {escape(str(exc))}. Check that Redis is up, and "
                      "start the consumer again.", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    try:
        yield lock
    finally:
        await lock.__aexit__(None, None, None)


def check_metrics_address(address: str) -> None:
    """Exit 2 naming ``--metrics-address`` when it is neither an IP address nor a host name that resolves."""
    from consumer.metrics import check_listen_address

    try:
        check_listen_address(address)
    except ValueError as exc:
        console.print(f"[red]error:[/red] --metrics-address {escape(repr(address))}: {escape(str(exc))}",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def start_metrics(pool: ConsumerPool, port: int, address: str, redis_url: str) -> None:
    """Serve the pool's metrics, or exit 2 naming the option at fault when the server cannot listen."""
    from consumer.metrics import serve_metrics

    try:
        serve_metrics(pool, port, redis_url=redis_url, address=address)
    except ValueError as exc:
        # check_metrics_address passed at start, so the host name no longer resolves.
        console.print(f"[red]error:[/red] --metrics-address {escape(repr(address))}: {escape(str(exc))}",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    except OSError as exc:
        endpoint = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        reason = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror):
            message = f"--metrics-address {address!r}: invalid address ({reason}); use an IP address of this host"
        elif exc.errno == errno.EADDRINUSE:
            message = f"--metrics-port {port}: cannot listen on {endpoint} ({reason}); pick a free port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            message = (f"--metrics-address {address!r}: cannot listen on {endpoint} ({reason}), because no "
                       "interface of this host has that address; use one that does, such as 127.0.0.1, "
                       "or 0.0.0.0 for every interface")
        elif exc.errno == errno.EACCES:
            message = (f"--metrics-port {port}: cannot listen on {endpoint} ({reason}); ports below 1024 need "
                       "privileges, so pick a port from 1024 up")
        else:
            message = (f"--metrics-address {address!r} --metrics-port {port}: cannot listen on {endpoint} "
                       f"({reason}); check both options")
        console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def limit_to_job(lifetime: JobLifetime, marker_ttl_seconds: float) -> int:
    """Return the marker TTL for a job's consumer: no longer than the job's keys still live.

    A marker that outlived the job would make a later run of the same job
    id skip its transaction without a result.

    NOTE: the TTL is fixed when the consumer starts, so a consumer that
    keeps running (no --drain) writes markers that can outlive the job's
    keys by up to its own run time. ``expire_with_job`` cuts them back to
    the job's expiry when the consumer exits, but a consumer killed with
    SIGKILL leaves them, and a later ``run`` of the job id then reports
    those transactions as already_processed and exits with 1.
    """
    from rewardpilot.cli.publish_cmd import duration_text

    remaining = lifetime.remaining_seconds
    if remaining < marker_ttl_seconds:
        keep = f" (--keep {duration_text(lifetime.keep_seconds)} of its run)" if lifetime.keep_seconds else ""
        console.print(f"the job's keys expire in {remaining:,} s{keep}, so the de-duplication markers and cap "
                      "spend this consumer writes expire by then too, not after --marker-ttl",
                      soft_wrap=True, highlight=False)
    return int(min(marker_ttl_seconds, remaining))


def expire_with_job(client, keys: StreamKeys, settings: ConsumerSettings) -> None:
    """Make what this consumer wrote expire no later than the job's keys, and give new streams the job's TTL.

    A results or dead-letter stream that did not exist before this consumer
    wrote to it has no TTL of its own, so the job's streams get the job's
    remaining TTL. Then one SCAN pass over the job's keys shortens any key
    that would outlive the job, such as markers written with the TTL fixed
    at start (``limit_to_job``), and leaves shorter TTLs, such as those of
    a short --marker-ttl, as they are. When the job's keys expired while
    the consumer ran, what the consumer wrote since expires in one second.
    """
    import redis

    from rewardpilot.job import expire_job, expire_job_keys, job_lifetime

    try:
        lifetime = job_lifetime(client, keys)
        seconds = lifetime.remaining_seconds if lifetime is not None else 1
        expire_job(client, keys, seconds, settings.partitions, runs=(settings.run,))
        expire_job_keys(client, keys, seconds, only_shorten=True)
    except redis.RedisError as exc:
        console.print(f"[yellow]warning:[/yellow] could not give the job's keys the job's TTL: "
                      f"{escape(str(exc))}; a results or dead-letter stream this consumer created may not expire, "
                      "and its markers may outlive the job. "
                      f"Run `consume --drain --job {escape(keys.job)}` again once Redis is reachable.",
                      soft_wrap=True, highlight=False)


def consume(
    ctx: typer.Context,
    workers: int = typer.Option(2, "--workers", min=1, max=256, help="asyncio workers in this process."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=10_000, help="XREADGROUP COUNT: entries per micro-batch."),
    block_ms: int = typer.Option(1000, "--block-ms", min=1, max=60_000, help="XREADGROUP BLOCK in milliseconds."),
    drain: bool = typer.Option(False, "--drain", help="Exit once the stream is drained: with status 1 when any entry went to the dead-letter stream."),
    wallet: list[str] = typer.Option(None, "--wallet", help="Cards to judge users without a wallet against (repeat or comma-separate)."),
    run: str = typer.Option(LIVE_RUN, "--run", help="Run name; results go to this run's results stream."),
    job: str = typer.Option(None, "--job", help="Work on the streams of this `rewardpilot run` job."),
    name: str = typer.Option(None, "--name", help="Consumer name (default: host-pid-random, unique per process). A name that a running consumer of the same group uses is rejected (exit 2), and a consumer whose name another process took while it stalled stops (exit 1)."),
    grace: float = typer.Option(10.0, "--grace", min=0, help="Seconds to finish the batch in hand after SIGTERM."),
    visibility_timeout: float = typer.Option(60.0, "--visibility-timeout", min=0.01, help="Seconds an entry may stay unsettled before another consumer claims it."),
    max_deliveries: int = typer.Option(5, "--max-deliveries", min=1, help="Deliveries after which an entry is a poison message and is dead-lettered."),
    orchestrator: str = typer.Option(None, "--orchestrator", help="Orchestrator URL: http(s)://host:port for REST, .../mcp for MCP (env ORCHESTRATOR_URL). Unset: the in-process engine.", show_default=False),
    rate: str = typer.Option(None, "--rate", help="Shared rate limit of orchestrator calls, such as 100/min or 50/s. Without --orchestrator it limits the in-process engine's micro-batches, in a bucket that orchestrator calls do not share. Unset: no limit.", show_default=False),
    burst: int = typer.Option(10, "--burst", min=1, help="Token bucket size: calls allowed at once above the rate."),
    counting: str = typer.Option("requests", "--count", help="What a token pays for: requests (a batch call is one) or transactions."),
    max_attempts: int = typer.Option(5, "--max-attempts", min=1, help="Tries per batch on transient failures before it is given back to the group."),
    breaker_threshold: int = typer.Option(5, "--breaker-threshold", min=1, help="Consecutive transient failures that open the circuit breaker."),
    breaker_cooldown: float = typer.Option(30.0, "--breaker-cooldown", min=0.01, help="Seconds the breaker stays open before one probe call."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.01, help="Seconds per orchestrator request."),
    marker_ttl: str = typer.Option("30d", "--marker-ttl", help="How long each result's de-duplication marker lives (such as 30d). Keep it at least as long as the stream's retention. A marker takes about 100 to 180 bytes of Redis memory. With --job, markers and cap spend expire no later than the job's keys (its run's --keep)."),
    results_maxlen: int = typer.Option(None, "--results-maxlen", min=1, help="Keep about N entries in the results stream (XADD MAXLEN ~, so a few more may stay): results past it are trimmed, oldest first. `replay --compare` and `report` read the results stream, so they only see the results kept. Unset: no limit.", show_default=False),
    trim_older_than: str = typer.Option(None, "--trim-older-than", help="Trim as it goes: every minute, remove transactions older than this age (such as 30d) that every consumer group has read and acknowledged.", show_default=False),
    startup_timeout: float = typer.Option(60.0, "--startup-timeout", min=0, help="Seconds to wait for Redis to answer at start before giving up."),
    metrics_port: int = typer.Option(None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port.", show_default=False),
    metrics_address: str = typer.Option("127.0.0.1", "--metrics-address", help="Address the metrics endpoint listens on."),
    partitions: int = partitions_option(),
    lease: float = typer.Option(10.0, "--lease", min=0.1, help="Seconds a partition lease lasts unless renewed; another consumer takes a dead holder's partitions after this."),
) -> None:
    """Consume transactions in micro-batches and publish a recommendation for each.

    Exit status: 0 when the consumer stops on SIGINT or SIGTERM, or after
    --drain. 1 with --drain when any entry went to the dead-letter stream,
    and 1 when another process took --name while this consumer could not
    renew its lease. 2 for an invalid option, an unknown --job, a --name
    that a running consumer has, or Redis not reachable within
    --startup-timeout. 128+N when signal N ended a --drain before the
    group was drained.
    """
    from consumer.shutdown import install_signal_handlers

    from rewardpilot.job import job_lifetime

    check_name(name)
    for value, option in ((grace, "--grace"), (visibility_timeout, "--visibility-timeout"),
                          (breaker_cooldown, "--breaker-cooldown"), (timeout, "--timeout"),
                          (startup_timeout, "--startup-timeout"), (lease, "--lease")):
        check_seconds(value, option)
    marker_ttl_seconds = age_seconds(marker_ttl, "--marker-ttl")
    trim_age = age_seconds(trim_older_than, "--trim-older-than")
    if trim_age is not None and trim_age > marker_ttl_seconds:
        warn_markers_expire_first(marker_ttl, trim_older_than)
    if metrics_port:
        check_metrics_address(metrics_address)
    options = call_options(orchestrator, rate, burst, counting, max_attempts, breaker_threshold,
                           breaker_cooldown, timeout)
    if options.rate and not options.orchestrator_url:
        warn_rate_without_orchestrator(options.rate, batch_size, options.counting)
    context = app_context(ctx)
    keys = context.keys(job)
    client = context.client()
    wait_for_redis(client, context, startup_timeout)
    # Checked before agreed_partitions, which would store a partition count under a mistyped job id.
    check_job_exists(client, context, keys)
    partitions = agreed_partitions(client, keys, partitions)
    lifetime = job_lifetime(client, keys)
    cap_ttl_seconds = None
    if lifetime is not None:
        marker_ttl_seconds = limit_to_job(lifetime, marker_ttl_seconds)
        cap_ttl_seconds = int(marker_ttl_seconds)
    settings = build_settings(
        keys=keys, run=run, consumer=name, workers=workers, batch_size=batch_size,
        block_ms=block_ms, drain=drain, wallet=check_cards(split_cards(wallet)),
        shutdown_grace_seconds=grace, visibility_timeout_ms=int(visibility_timeout * 1000),
        max_deliveries=max_deliveries, trim_older_than_seconds=trim_age, result_ttl_seconds=int(marker_ttl_seconds),
        cap_ttl_seconds=cap_ttl_seconds, results_maxlen=results_maxlen,
        partitions=partitions, lease_ms=int(lease * 1000),
    )

    async def main():
        async_client = context.async_client(block_ms=block_ms)
        try:
            async with name_lease(async_client, settings) as lease:
                pool = make_pool(async_client, settings, options)
                if lease is not None:
                    # Another process took this name after the lease ran out (a stall, an outage), so
                    # this one stops: two consumers with one name share one pending entries list.
                    lease.on_conflict = lambda held: pool.stop()
                try:
                    if metrics_port:
                        start_metrics(pool, metrics_port, metrics_address, context.url())
                    interruption = install_signal_handlers(pool)
                    return await pool.run(), pool.drained, interruption, lease.conflict if lease else None
                finally:
                    await pool.recommender.aclose()
        finally:
            await async_client.aclose()

    try:
        stats, drained, interruption, name_taken = asyncio.run(main())
    finally:
        if lifetime is not None:
            expire_with_job(client, keys, settings)
    typer.echo(json.dumps(stats.as_dict()))
    if name_taken is not None:
        console.print(f"[red]error:[/red] stopped because another process ({escape(str(name_taken.holder))}) "
                      f"took --name {escape(repr(settings.consumer))} while this consumer could not renew its "
                      "lease (a stall or a Redis outage). Its entries were settled or stay pending for recovery. "
                      "Give each consumer its own --name.", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    if drain and not drained and interruption.signum is not None:
        # A drain that a signal ended did not finish, so the group may still hold unread or pending entries.
        console.print(f"[yellow]interrupted by {interruption.name} before the group was drained[/yellow]")
        raise typer.Exit(interruption.exit_status)
    if drain and stats.dead_letters:
        # A drained batch run with dead letters did not fully succeed; scripts see it in the status.
        raise typer.Exit(1)
