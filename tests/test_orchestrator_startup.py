"""The consumer's start-up wait for its orchestrator, and the start-up warning for --rate.

A pool with an orchestrator URL probes it before its workers read, outside
the circuit breaker, for up to ``CallOptions.startup_wait`` seconds. Every
server here listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis
import structlog.testing

from conftest import ROOT, free_port, one_server, run_cli
from consumer.build import CallOptions, build_pool
from consumer.settings import ConsumerSettings
from orchestrator_servers import UvicornThread
from producer import Producer
from rewardpilot.models import Transaction
from rewardpilot.orchestrator import create_app


def purchases(count: int, prefix: str = "s") -> list[Transaction]:
    start = datetime(2026, 11, 3, 9, 0, tzinfo=timezone.utc)
    return [
        Transaction(transaction_id=f"{prefix}-{index:03d}", user_id=f"u{index % 3}", merchant="Shell",
                    category="gas", amount_usd=Decimal("40.00") + index, mcc="5541",
                    timestamp=start + timedelta(minutes=index))
        for index in range(count)
    ]


def publish(redis_url: str, keys, count: int) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        Producer(client, keys, max_backlog=None).publish_many(purchases(count))
    finally:
        client.close()
    return [f"s-{index:03d}" for index in range(count)]


def settings(keys) -> ConsumerSettings:
    return ConsumerSettings(
        keys=keys, workers=2, batch_size=5, block_ms=100, drain=True,
        visibility_timeout_ms=1500, claim_interval_seconds=0.1, shutdown_grace_seconds=2.0,
    )


def options(url: str, **overrides) -> CallOptions:
    """Fast retries, and a breaker that, once open, would outlast every test's time limit."""
    values = dict(orchestrator_url=url, max_attempts=3, base_delay=0.02, max_delay=0.1,
                  breaker_threshold=3, breaker_cooldown=60.0, timeout=1.0)
    values.update(overrides)
    return CallOptions(**values)


async def wait_for_log(logs: list[dict], text: str, seconds: float = 20.0) -> dict:
    for _ in range(int(seconds / 0.02)):
        for event in logs:
            if text in event["event"]:
                return event
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log containing {text!r} within {seconds} s: {[e['event'] for e in logs]}")


def group_position(client: redis.Redis, keys) -> tuple[int, str]:
    """Return the group's pending count and last delivered id."""
    (group,) = client.xinfo_groups(keys.transactions)
    return group["pending"], group["last-delivered-id"]


async def test_late_orchestrator_no_breaker_opening(redis_url, keys, sync_client):
    """The orchestrator listens 1.5 s after the pool starts: the pool waits for it and drains."""
    publish(redis_url, keys, 12)
    server = UvicornThread(create_app())  # the port is bound, but refuses connections until it starts
    client = aioredis.Redis.from_url(redis_url)
    pool = build_pool(client, settings(keys), options(server.url, startup_wait=15.0))

    async def start_later() -> None:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.__enter__)

    starter = asyncio.create_task(start_later())
    try:
        with structlog.testing.capture_logs() as logs:
            await asyncio.wait_for(pool.run(), timeout=25)
    finally:
        await starter
        server.__exit__(None, None, None)
        await pool.recommender.aclose()
        await client.aclose()

    assert pool.stats.results == 12
    assert pool.stats.breaker_openings == 0
    assert pool.recommender.breaker.stats.failures == 0
    waiting = next(event for event in logs if "not reachable at start" in event["event"])
    assert waiting["url"] == f"{server.url}/health"
    assert waiting["max_wait_seconds"] == 15.0
    reachable = next(event for event in logs if "recommender reachable" in event["event"])
    assert reachable["probes"] >= 2
    assert sync_client.xlen(keys.results()) == 12


async def test_stop_during_wait_exits_promptly(redis_url, keys, sync_client):
    """A stop while nothing listens ends the wait at once; the entries stay unread, nothing is lost."""
    publish(redis_url, keys, 3)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = aioredis.Redis.from_url(redis_url)
    pool = build_pool(client, settings(keys), options(url, startup_wait=60.0))

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(pool.run())
        try:
            warning = await wait_for_log(logs, "not reachable at start")
            stopped_at = time.monotonic()
            pool.stop()
            await asyncio.wait_for(task, timeout=10)
            stop_seconds = time.monotonic() - stopped_at
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.recommender.aclose()
            await client.aclose()

    assert stop_seconds < 2.0
    assert "the drain waits for it" in warning["event"]
    assert warning["recommender"] == "http"
    assert warning["url"] == f"{url}/health"
    assert "/health" in warning["error"]
    assert any("stopping while waiting for the recommender" in event["event"] for event in logs)
    assert pool.stats.recommender_calls == 0
    assert sync_client.xlen(keys.results()) == 0
    assert sync_client.xlen(keys.dead_letters) == 0
    assert group_position(sync_client, keys) == (0, "0-0")


async def test_wait_runs_out_then_entries_held(redis_url, keys, sync_client):
    """After the wait the workers start; their failed calls give the entries back, never dead-letter them."""
    publish(redis_url, keys, 4)
    url = f"http://127.0.0.1:{free_port()}"
    client = aioredis.Redis.from_url(redis_url)
    pool = build_pool(client, settings(keys), options(url, startup_wait=0.5))

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(pool.run())
        try:
            given_up = await wait_for_log(logs, "still not reachable")
            await wait_for_log(logs, "batch given back to the group")
            pool.stop()
            await asyncio.wait_for(task, timeout=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.recommender.aclose()
            await client.aclose()

    assert given_up["waited_seconds"] >= 0.5
    assert given_up["probes"] >= 2
    assert pool.stats.recommender_calls >= 1
    assert sync_client.xlen(keys.dead_letters) == 0
    assert sync_client.xlen(keys.results()) == 0
    assert sync_client.xpending(keys.transactions, keys.group())["pending"] == 4


async def test_wait_setting_reaches_guarded_recommender(redis_url, keys):
    client = aioredis.Redis.from_url(redis_url)
    pool = build_pool(client, settings(keys), options("http://127.0.0.1:9", startup_wait=7.5))
    await pool.recommender.aclose()
    await client.aclose()

    assert pool.recommender.startup_wait_seconds == 7.5


# The README's example: the orchestrator and a consumer started at the same moment


def cli_process(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rewardpilot.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@one_server
def test_consumer_started_with_orchestrator_drains(cli_env, keys, redis_url):
    publish(redis_url, keys, 20)
    port = free_port()
    env = dict(cli_env)
    env.pop("ORCHESTRATOR_API_KEY", None)

    consumer = cli_process(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                            "--orchestrator", f"http://127.0.0.1:{port}", "--rate", "100/s"], env)
    orchestrator = cli_process(["orchestrator", "--port", str(port), "--no-wallets"], env)
    try:
        stdout, stderr = consumer.communicate(timeout=25)
    finally:
        consumer.kill()
        orchestrator.send_signal(signal.SIGTERM)
        orchestrator.communicate(timeout=30)

    assert consumer.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1])["results"] == 20
    assert "circuit breaker opened" not in stderr


@one_server
def test_sigterm_during_wait_exits_promptly(cli_env, keys, redis_url):
    publish(redis_url, keys, 2)
    url = f"http://127.0.0.1:{free_port()}"
    consumer = cli_process(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                            "--orchestrator", url], cli_env)
    lines: list[str] = []
    waiting = threading.Event()

    def read_stderr() -> None:
        for line in consumer.stderr:
            lines.append(line)
            if "not reachable at start" in line:
                waiting.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert waiting.wait(30), "".join(lines)[-3000:]
        signalled_at = time.monotonic()
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=15)
        exit_seconds = time.monotonic() - signalled_at
    finally:
        consumer.kill()
        reader.join(10)

    assert consumer.returncode == 128 + signal.SIGTERM
    assert exit_seconds < 5.0
    assert "Traceback" not in "".join(lines)


# --rate without an orchestrator


@one_server
@pytest.mark.parametrize(("extra", "cost"), [
    ([], "each micro-batch of up to --batch-size 500 transactions takes one token"),
    (["--count", "transactions", "--burst", "600"], "each transaction takes one token"),
])
def test_rate_without_orchestrator_warns(cli_env, keys, redis_url, extra, cost):
    publish(redis_url, keys, 3)
    env = dict(cli_env)
    env.pop("ORCHESTRATOR_URL", None)

    completed = run_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                         "--rate", "10/s", *extra], env, timeout=120)
    output = " ".join(completed.stderr.split())

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "warning: --rate 10/s limits calls to the recommender" in output
    assert "that is the in-process engine" in output
    assert cost in output


@one_server
def test_rate_with_orchestrator_no_warning(cli_env, keys, redis_url):
    publish(redis_url, keys, 3)
    env = dict(cli_env)
    env.pop("ORCHESTRATOR_API_KEY", None)

    with UvicornThread(create_app()) as server:
        completed = run_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                             "--rate", "10/s", "--orchestrator", server.url], env, timeout=120)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "--rate 10/s limits" not in completed.stderr
