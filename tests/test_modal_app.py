"""modal_app.py: import without Modal credentials, and each function body run locally on real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

import modal_app
from producer.publisher import Producer
from rewardpilot.models import Transaction

from conftest import ROOT, one_server


def make_transactions(count: int, user_id: str = "user-1") -> list[Transaction]:
    return [
        Transaction(transaction_id=f"t-{index}", user_id=user_id, merchant="Whole Foods",
                    category="groceries", amount_usd=Decimal("10.00"), mcc="5411",
                    timestamp=datetime(2026, 11, 1, tzinfo=timezone.utc))
        for index in range(count)
    ]


def test_import_without_token_or_network(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)
    env["PYTHONPATH"] = str(ROOT)
    # An unreachable server address makes any network call fail fast instead of succeeding.
    env["MODAL_SERVER_URL"] = "http://127.0.0.1:9"
    probe = (
        "import modal_app; "
        "print(modal_app.app.name, sorted(modal_app.app.registered_functions))"
    )
    completed = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "rewardpilot-stream" in completed.stdout
    for name in ("consume", "autoscale", "batch_endpoint", "nightly_replay"):
        assert name in completed.stdout


@pytest.mark.parametrize(
    ("lag", "pending", "running", "expected"),
    [
        (0, 0, 0, 0),              # drained: start none
        (100, 0, 0, 1),            # below one consumer's share of 5000
        (0, 3, 0, 1),              # only pending entries: one consumer reclaims them
        (12_000, 0, 0, 3),         # ceil(12000 / 5000) = 3
        (12_000, 0, 1, 2),         # 3 wanted, 1 already running
        (1_000_000, 0, 0, 10),     # ceil(200) capped at the maximum of 10
        (1_000_000, 0, 4, 6),      # 10 wanted, 4 running
        (5_000, 0, 12, 0),         # more running than wanted: start none
    ],
)
def test_plan_consumers_backlogs(lag, pending, running, expected):
    assert modal_app.plan_consumers(lag, pending, running, per_consumer=5000, maximum=10) == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"per_consumer": 0, "maximum": 10}, "per_consumer 0"),
        ({"per_consumer": 5000, "maximum": -1}, "maximum -1"),
    ],
)
def test_plan_consumers_rejects_bad_settings(arguments, message):
    with pytest.raises(ValueError, match=message):
        modal_app.plan_consumers(10, 0, 0, **arguments)


def test_plan_consumers_rejects_negative_lag():
    with pytest.raises(ValueError, match="lag -1"):
        modal_app.plan_consumers(-1, 0, 0, per_consumer=10, maximum=10)


def test_autoscale_spawns_for_backlog(redis_url, keys, sync_client):
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(25))
    spawned = []

    decision = modal_app.run_autoscale(redis_url, prefix=keys.prefix, per_consumer=10, maximum=5,
                                       spawn=lambda: spawned.append(1))

    assert decision["lag"] == 25
    assert decision["running"] == 0
    assert decision["started"] == 3  # ceil(25 / 10)
    assert len(spawned) == 3


def test_autoscale_counts_running_consumers(redis_url, keys, sync_client):
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(25))
    far_future_ms = 4_102_444_800_000  # 2100-01-01
    sync_client.zadd(modal_app.consumers_key(keys.prefix), {"a": far_future_ms, "b": far_future_ms, "gone": 1})
    spawned = []

    decision = modal_app.run_autoscale(redis_url, prefix=keys.prefix, per_consumer=10, maximum=5,
                                       spawn=lambda: spawned.append(1))

    assert decision["running"] == 2  # "gone" stopped long ago and is pruned
    assert decision["started"] == 1
    assert len(spawned) == 1


def test_autoscale_drained_spawns_none(redis_url, keys):
    spawned = []
    decision = modal_app.run_autoscale(redis_url, prefix=keys.prefix, per_consumer=10, maximum=5,
                                       spawn=lambda: spawned.append(1))
    assert decision["started"] == 0
    assert spawned == []


@one_server
def test_consume_runs_bounded_and_drains(redis_url, keys, sync_client):
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(30))

    stats = modal_app.run_consume(redis_url, prefix=keys.prefix, seconds=1.5, workers=2, grace_seconds=2)

    assert stats["results"] == 30
    assert sync_client.xlen(keys.results()) == 30
    group = sync_client.xinfo_groups(keys.transactions)[0]
    assert group["pending"] == 0
    assert group["lag"] == 0
    assert sync_client.zcard(modal_app.consumers_key(keys.prefix)) == 0


@one_server
def test_partitioned_prefix_autoscale_and_consume(redis_url, keys, sync_client):
    transactions = [
        transaction.model_copy(update={"transaction_id": f"p-{index:03d}"})
        for index, transaction in enumerate([*make_transactions(12, "user-1"), *make_transactions(12, "user-2"),
                                             *make_transactions(12, "user-3")])
    ]
    Producer(sync_client, keys, max_backlog=None, partitions=4).publish_many(transactions)
    spawned = []

    decision = modal_app.run_autoscale(redis_url, prefix=keys.prefix, per_consumer=10, maximum=5,
                                       spawn=lambda: spawned.append(1))
    stats = modal_app.run_consume(redis_url, prefix=keys.prefix, seconds=2.5, workers=2, grace_seconds=2)

    assert decision["lag"] == 36
    assert decision["started"] == 4  # ceil(36 / 10)
    assert stats["results"] == 36
    assert sync_client.xlen(keys.results()) == 36


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seconds": 0}, "seconds 0"),
        ({"seconds": 290}, "below the function timeout"),
        ({"seconds": 10, "workers": 0}, "workers 0"),
    ],
)
def test_consume_rejects_bad_bounds(arguments, message):
    with pytest.raises(ValueError, match=message):
        modal_app.run_consume("redis://127.0.0.1:9/0", **arguments)


@one_server
def test_consume_local_call_through_modal(redis_url, keys, sync_client, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RP_PREFIX", keys.prefix)
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(5))

    stats = modal_app.consume.local(seconds=1, workers=1)

    assert stats["results"] == 5


def test_env_setting_not_integer(monkeypatch):
    monkeypatch.setenv("RP_MAX_CONSUMERS", "ten")
    with pytest.raises(ValueError, match="RP_MAX_CONSUMERS='ten'"):
        modal_app._env_int("RP_MAX_CONSUMERS", 10)


def consume_in_background(url: str, prefix: str, seconds: float) -> threading.Thread:
    thread = threading.Thread(
        target=modal_app.run_consume, args=(url,),
        kwargs={"prefix": prefix, "seconds": seconds, "workers": 2, "grace_seconds": 2}, daemon=True,
    )
    thread.start()
    return thread


@one_server
def test_batch_endpoint_returns_results(redis_url, keys):
    consumer = consume_in_background(redis_url, keys.prefix, seconds=4)
    app = modal_app.create_batch_app(redis_url, prefix=keys.prefix, timeout_seconds=30)
    body = {
        "user_id": "user-7",
        "transactions": [
            {"transaction_id": "b-1", "merchant": "Whole Foods", "amount_usd": "40.00", "mcc": "5411"},
            {"transaction_id": "b-2", "merchant": "Shell", "amount_usd": "25.00", "mcc": "5541"},
            {"transaction_id": "b-3", "merchant": "Shell", "amount_usd": "not money"},
            {"transaction_id": "b-4", "user_id": "someone-else", "merchant": "Shell", "amount_usd": "5"},
        ],
    }

    with TestClient(app) as client:
        response = client.post("/", json=body)
    consumer.join(30)

    assert response.status_code == 200
    answer = response.json()
    assert answer["total_transactions"] == 4
    assert answer["successful"] == 2
    assert answer["failed"] == 2
    assert answer["timed_out"] is False
    assert sorted(result["transaction_id"] for result in answer["results"]) == ["b-1", "b-2"]
    assert {result["user_id"] for result in answer["results"]} == {"user-7"}
    expected_total = sum(Decimal(result["rewards"]["cash_value_usd"]) for result in answer["results"])
    assert Decimal(answer["total_rewards"]) == expected_total
    assert Decimal(answer["total_rewards"]) > 0
    errors = {error["transaction_id"]: error["error"] for error in answer["errors"]}
    assert errors["b-3"].startswith("invalid transaction: amount_usd: amount_usd 'not money' is not a number")
    assert "{" not in errors["b-3"]
    assert "differs from the batch's user_id" in errors["b-4"]
    for field in ("processing_time_seconds", "throughput_tps"):
        assert field in answer


@one_server
def test_batch_endpoint_times_out_without_consumer(redis_url, keys):
    app = modal_app.create_batch_app(redis_url, prefix=keys.prefix, timeout_seconds=0.5, poll_ms=100)
    body = {"user_id": "user-7", "transactions": [{"transaction_id": "w-1", "merchant": "Shell", "amount_usd": "5"}]}

    with TestClient(app) as client:
        response = client.post("/", json=body)

    answer = response.json()
    assert response.status_code == 200
    assert answer["timed_out"] is True
    assert answer["successful"] == 0
    assert answer["failed"] == 1
    assert "timed out after 0.5 s" in answer["errors"][0]["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u", "transactions": []},
        {"user_id": "", "transactions": [{"transaction_id": "x", "merchant": "m", "amount_usd": "1"}]},
        {"transactions": [{"transaction_id": "x", "merchant": "m", "amount_usd": "1"}]},
    ],
)
def test_batch_endpoint_rejects_bad_body(redis_url, keys, body):
    app = modal_app.create_batch_app(redis_url, prefix=keys.prefix, timeout_seconds=0.5)
    with TestClient(app) as client:
        response = client.post("/", json=body)
    assert response.status_code == 422


def test_nightly_replay_off_by_default(redis_url, keys):
    outcome = modal_app.run_nightly_replay(redis_url, prefix=keys.prefix, enabled=False)
    assert "RP_NIGHTLY_REPLAY=1" in outcome["skipped"]


def test_nightly_replay_replays_previous_day(redis_url, keys, sync_client):
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(6))
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)

    outcome = modal_app.run_nightly_replay(redis_url, prefix=keys.prefix, enabled=True, now=tomorrow)

    today = datetime.now(timezone.utc).date().isoformat()
    assert outcome["run"] == f"nightly-{today}"
    assert outcome["results"] == 6
    assert sync_client.xlen(keys.results(f"nightly-{today}")) == 6
