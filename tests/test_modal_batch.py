"""modal_app's batch endpoint against real servers: Redis failures, and transactions sent again."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

import modal_app
from producer.publisher import Producer
from rewardpilot.models import DeadLetter
from rewardpilot.streams import LIVE_RUN

from conftest import free_port, one_server
from test_modal_app import make_transactions

BODY = {"user_id": "user-1", "transactions": [
    {"transaction_id": "t-0", "merchant": "Whole Foods", "category": "groceries", "amount_usd": "10.00",
     "mcc": "5411", "timestamp": "2026-11-01T00:00:00Z"},
]}


def post_batch(url: str, prefix: str, body: dict, timeout_seconds: float = 2):
    app = modal_app.create_batch_app(url, prefix=prefix, timeout_seconds=timeout_seconds, poll_ms=100)
    with TestClient(app, raise_server_exceptions=False) as client:
        return client.post("/", json=body)


def test_wrong_password_gives_503(embedded_valkey):
    url = f"redis://default:WrongPW-x1@127.0.0.1:{embedded_valkey.port}/0"

    response = post_batch(url, "rptest:auth:", BODY)

    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith("Redis is unreachable: ")
    assert detail.endswith("; retry the batch later")
    assert "WrongPW-x1" not in response.text
    assert embedded_valkey.password not in response.text


def test_unreachable_redis_gives_503():
    url = f"redis://default:S3cr3tPW-xyz@127.0.0.1:{free_port()}/0"

    response = post_batch(url, "rptest:down:", BODY)

    assert response.status_code == 503
    assert response.json()["detail"].startswith("Redis is unreachable: ")
    assert "S3cr3tPW-xyz" not in response.text


def test_hide_passwords_in_error_text(monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", "envPW-77")
    text = "failed for S3cr@t, S3cr%40t and envPW-77"

    hidden = modal_app._hide_passwords(text, "redis://user:S3cr%40t@127.0.0.1:6379/0")

    assert hidden == "failed for ***, *** and ***"


def process_earlier(redis_url, keys, sync_client) -> dict:
    """Publish t-0 and let a consumer give it a result; return that result as the results stream has it."""
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(1))
    stats = modal_app.run_consume(redis_url, prefix=keys.prefix, seconds=1, workers=1, grace_seconds=2)
    assert stats["results"] == 1
    [(_, fields)] = sync_client.xrange(keys.results())
    return json.loads(fields["data"])


@one_server
@pytest.mark.parametrize("after_window", [True, False])
def test_resent_transaction_returns_earlier_result(redis_url, keys, sync_client, after_window):
    earlier = process_earlier(redis_url, keys, sync_client)
    if after_window:
        # What the 24-hour de-duplication window does when it ends; the result marker lives 30 days.
        sync_client.delete(keys.published_marker("t-0"))
    published = sync_client.xlen(keys.transactions)

    response = post_batch(redis_url, keys.prefix, BODY, timeout_seconds=30)

    answer = response.json()
    assert response.status_code == 200
    assert answer["timed_out"] is False
    assert answer["successful"] == 1
    assert answer["failed"] == 0
    assert answer["already_processed"] == ["t-0"]
    assert answer["results"][0]["transaction_id"] == "t-0"
    assert answer["results"][0]["rewards"] == earlier["rewards"]
    assert answer["total_rewards"] == earlier["rewards"]["cash_value_usd"]
    assert sync_client.xlen(keys.transactions) == published  # not published again


@one_server
def test_resent_dead_letter_reported(redis_url, keys, sync_client):
    now = datetime.now(timezone.utc)
    letter = DeadLetter(entry_id="1-0", stream=keys.transactions, payload={"data": "{}"}, reason="poison",
                        error_type="ValueError", error="cannot be recommended", first_failure_at=now,
                        last_failure_at=now, transaction_id="t-0")
    sync_client.xadd(keys.dead_letters, {"data": letter.model_dump_json(), "user_id": "user-1",
                                         "transaction_id": "t-0"})
    sync_client.set(keys.result_marker(LIVE_RUN, "t-0"), "1-0")

    answer = post_batch(redis_url, keys.prefix, BODY, timeout_seconds=30).json()

    assert answer["timed_out"] is False
    assert answer["already_processed"] == ["t-0"]
    assert answer["failed"] == 1
    error = answer["errors"][0]["error"]
    assert error.startswith("already processed by an earlier request and dead-lettered: poison: cannot be recommended")
    assert "dlq purge" in error
    assert not sync_client.exists(keys.transactions)


@one_server
def test_resent_without_findable_outcome(redis_url, keys, sync_client):
    sync_client.set(keys.result_marker(LIVE_RUN, "t-0"), "1-0")

    answer = post_batch(redis_url, keys.prefix, BODY, timeout_seconds=30).json()

    assert answer["timed_out"] is False
    assert answer["already_processed"] == ["t-0"]
    assert answer["successful"] == 0
    assert answer["errors"] == [{
        "transaction_id": "t-0",
        "error": "already processed by an earlier request (transactions stream entry 1-0), so it was not published "
                 "again; its outcome is not among the 10,000 entries that follow that entry on the results and "
                 "dead-letter streams",
    }]


@one_server
def test_resent_with_new_transaction(redis_url, keys, sync_client):
    """A batch mixing a processed transaction and a new one: the new one is published and waited for."""
    process_earlier(redis_url, keys, sync_client)
    sync_client.delete(keys.published_marker("t-0"))
    fresh = {**BODY["transactions"][0], "transaction_id": "t-new"}
    body = {"user_id": "user-1", "transactions": [*BODY["transactions"], fresh]}

    answer = post_batch(redis_url, keys.prefix, body, timeout_seconds=0.5).json()

    assert answer["already_processed"] == ["t-0"]
    assert [result["transaction_id"] for result in answer["results"]] == ["t-0"]
    # No consumer runs, so the new transaction times out; it was published once.
    assert answer["timed_out"] is True
    assert [error["transaction_id"] for error in answer["errors"]] == ["t-new"]
    assert sync_client.xlen(keys.transactions) == 2
