"""``rewardpilot dlq``, ``status`` and ``consume`` through the CLI, with dead letters
made by a real orchestrator behind a proxy that rejects calls."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import invoke_cli, one_server
from consumer.dlq import list_dead_letters
from fault_proxy import Fault, FaultProxy, first
from orchestrator_servers import UvicornThread
from rewardpilot.orchestrator import create_app
from rewardpilot.results import read_results
from test_orchestrator_failures import drain, fast_options, fast_settings, make_transactions, publish


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app()) as running:
        yield running


async def dead_letter_all(redis_url, keys, orchestrator, count: int = 4) -> list[str]:
    """Publish ``count`` transactions and have the orchestrator proxy reject every call with 422."""
    published = publish(redis_url, keys, make_transactions(count, prefix="d"))
    with FaultProxy(orchestrator.url, lambda index: Fault(422)) as proxy:
        await drain(redis_url, fast_settings(keys), fast_options(proxy.url))
    return published


def letters_by_cli(keys, cli_env) -> list[dict]:
    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "list", "--json", "--limit", "100"], cli_env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]


@one_server
def test_dlq_list_shows_letters(redis_url, keys, cli_env, orchestrator):
    published = asyncio.run(dead_letter_all(redis_url, keys, orchestrator))

    listed = letters_by_cli(keys, cli_env)

    assert sorted(row["letter"]["transaction_id"] for row in listed) == published
    assert {row["letter"]["http_status"] for row in listed} == {422}
    assert {row["letter"]["attempts"] for row in listed} == {1}


@one_server
def test_dlq_list_limit(redis_url, keys, cli_env, orchestrator):
    asyncio.run(dead_letter_all(redis_url, keys, orchestrator))

    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "list", "--json", "--limit", "2"], cli_env)

    assert completed.returncode == 0
    assert len(completed.stdout.splitlines()) == 2


@one_server
def test_redrive_keeps_transaction_id(redis_url, keys, sync_client, cli_env, orchestrator):
    asyncio.run(dead_letter_all(redis_url, keys, orchestrator))
    chosen = letters_by_cli(keys, cli_env)[0]
    transaction_id = chosen["letter"]["transaction_id"]

    redriven = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", chosen["id"]], cli_env)
    assert redriven.returncode == 0, redriven.stderr[-2000:]

    last_id, fields = sync_client.xrevrange(keys.transactions, count=1)[0]
    assert json.loads(fields["data"])["transaction_id"] == transaction_id
    assert sync_client.xlen(keys.dead_letters) == 3

    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--workers", "1"],
                          cli_env)
    assert consumed.returncode == 0, consumed.stderr[-2000:]

    results = list(read_results(sync_client, keys.results()))
    assert [result.transaction_id for result in results] == [transaction_id]
    assert results[0].entry_id == last_id
    assert sync_client.xpending(keys.transactions, keys.group())["pending"] == 0


@one_server
def test_redrive_all(redis_url, keys, sync_client, cli_env, orchestrator):
    published = asyncio.run(dead_letter_all(redis_url, keys, orchestrator))

    redriven = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", "--all"], cli_env)
    assert redriven.returncode == 0, redriven.stderr[-2000:]
    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100"], cli_env)
    assert consumed.returncode == 0, consumed.stderr[-2000:]

    results = list(read_results(sync_client, keys.results()))
    assert sorted(result.transaction_id for result in results) == published
    assert sync_client.xlen(keys.dead_letters) == 0


@one_server
def test_redrive_unknown_id_exits_1(redis_url, keys, sync_client, cli_env, orchestrator):
    asyncio.run(dead_letter_all(redis_url, keys, orchestrator))

    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", "1-1"], cli_env)

    assert completed.returncode == 1
    assert "dead letter 1-1 not found" in completed.stdout + completed.stderr
    assert sync_client.xlen(keys.dead_letters) == 4


@one_server
def test_redrive_needs_ids_or_all(keys, cli_env):
    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive"], cli_env)

    assert completed.returncode == 2
    assert "--all" in completed.stdout + completed.stderr


@one_server
@pytest.mark.parametrize("flags", [[], ["--yes"]])
def test_purge_nothing_no_prompt(keys, cli_env, flags):
    # With empty stdin, a prompt would read end of file and abort with exit code 1.
    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "purge", *flags], cli_env, input="")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"no dead letters to purge in {keys.dead_letters}\n" in completed.stderr
    assert "Delete" not in completed.stdout + completed.stderr
    assert "Aborted" not in completed.stdout + completed.stderr


@one_server
def test_purge_asks_first(redis_url, keys, sync_client, cli_env, orchestrator):
    asyncio.run(dead_letter_all(redis_url, keys, orchestrator))

    declined = invoke_cli(["--prefix", keys.prefix, "dlq", "purge"], cli_env, input="n\n")
    assert declined.returncode == 1
    assert "Delete 4 dead letters" in declined.stdout + declined.stderr
    assert sync_client.xlen(keys.dead_letters) == 4

    confirmed = invoke_cli(["--prefix", keys.prefix, "dlq", "purge", "--yes"], cli_env)
    assert confirmed.returncode == 0, confirmed.stderr[-2000:]
    assert "purged 4 dead letters" in confirmed.stdout + confirmed.stderr
    assert sync_client.xlen(keys.dead_letters) == 0


@one_server
def test_status_shows_rate_limit(redis_url, keys, sync_client, cli_env, orchestrator):
    publish(redis_url, keys, make_transactions(6, prefix="s"))
    with FaultProxy(orchestrator.url, first(1, Fault(429))) as proxy:
        asyncio.run(drain(redis_url, fast_settings(keys, workers=1), fast_options(proxy.url, rate="40/s", burst=4)))

    as_json = invoke_cli(["--prefix", keys.prefix, "status", "--json"], cli_env)
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    rate_limit = json.loads(as_json.stdout)["rate_limit"]
    assert rate_limit["configured_rate"] == 40.0
    # One 429 halved the rate to 20/s; the few successes after it climb at 2/s per second.
    assert 20.0 <= rate_limit["effective_rate"] < 40.0
    assert 0 <= rate_limit["tokens"] <= 4

    table = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)
    assert table.returncode == 0
    assert "of 40/s configured" in table.stdout


@one_server
def test_status_without_rate_limit(keys, cli_env):
    as_json = invoke_cli(["--prefix", keys.prefix, "status", "--json"], cli_env)
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    assert json.loads(as_json.stdout)["rate_limit"] is None

    table = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)
    assert "orchestrator rate limit: not in use" in table.stdout


@one_server
def test_consume_output_counts(redis_url, keys, cli_env, orchestrator):
    publish(redis_url, keys, make_transactions(10, prefix="c"))

    with FaultProxy(orchestrator.url, first(3, Fault(503))) as proxy:
        completed = invoke_cli([
            "--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--workers", "1",
            "--batch-size", "5", "--orchestrator", proxy.url, "--rate", "100/s", "--burst", "5",
            "--max-attempts", "10", "--breaker-threshold", "2", "--breaker-cooldown", "0.2",
        ], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    stats = json.loads(completed.stdout.strip().splitlines()[-1])
    assert stats["results"] == 10
    assert stats["dead_letters"] == 0
    # Two batches of 5; the first needs three failed tries, so 2 + 3 calls.
    assert stats["recommender_calls"] == 5
    assert stats["retries"] == 3
    assert stats["breaker_openings"] >= 1
    assert stats["rate_limit_wait_seconds"] >= 0
    assert "rate_limit_waits" in stats
    assert "retrying recommender call" in completed.stderr
    assert "circuit breaker opened" in completed.stderr


@one_server
def test_run_summary_counts(keys, cli_env, tmp_path):
    source = tmp_path / "two.csv"
    source.write_text(
        "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        "r1,u1,Whole Foods,groceries,20.00,5411,2026-11-02T10:00:00Z\n"
        "r2,u1,Shell,gas,40.00,5541,2026-11-02T11:00:00Z\n"
    )

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    consumer = json.loads(completed.stdout.strip().splitlines()[-1])["consumer"]
    assert consumer["results"] == 2
    assert consumer["dead_letters"] == 0
    assert consumer["recommender_calls"] >= 1
    assert consumer["retries"] == 0
    assert consumer["breaker_openings"] == 0
    assert consumer["rate_limit_wait_seconds"] == 0


@one_server
def test_drain_with_dead_letters_exits_one(redis_url, keys, cli_env, orchestrator):
    publish(redis_url, keys, make_transactions(4, prefix="x"))

    with FaultProxy(orchestrator.url, lambda index: Fault(422)) as proxy:
        completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                                "--orchestrator", proxy.url, "--max-attempts", "1"], cli_env)

    stats = json.loads(completed.stdout.strip().splitlines()[-1])
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert stats["dead_letters"] == 4
    assert stats["results"] == 0
