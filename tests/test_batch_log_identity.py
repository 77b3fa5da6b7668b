"""Log lines name the batch they are about, and an orchestrator that fails with HTTP 500 gets an error line.

The pool binds the batch's identity with ``structlog.contextvars``, so the
captures here run ``merge_contextvars`` first, as ``rewardpilot.logs.configure``
and the library set-up do.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timezone

import pytest
import redis.asyncio as aioredis
import structlog.contextvars
import structlog.testing

from conftest import one_server
from consumer.batch_log import batch_log_fields, distinct_errors
from consumer.build import CallOptions, build_pool
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from fault_proxy import Fault, FaultProxy, first
from orchestrator_servers import UvicornThread
from rewardpilot.models import DeadLetter
from rewardpilot.orchestrator import create_app
from test_log_id_lists import RejectsAll
from test_orchestrator_failures import make_transactions, publish

SERVER_ERRORS = "the recommender is failing with HTTP server errors"


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app()) as running:
        yield running


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_API_KEY", raising=False)


def capture():
    return structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars])


def events(logs, text: str) -> list[dict]:
    return [entry for entry in logs if entry["event"].startswith(text)]


def settings(keys, *, batch_size: int = 5) -> ConsumerSettings:
    return ConsumerSettings(keys=keys, consumer="c1", workers=1, batch_size=batch_size, block_ms=100, drain=True,
                            shutdown_grace_seconds=2.0)


def options(url: str) -> CallOptions:
    return CallOptions(orchestrator_url=url, max_attempts=3, base_delay=0.01, max_delay=0.02, timeout=2.0)


async def drain(url: str, pool_settings: ConsumerSettings, call_options: CallOptions | None = None,
                recommender=None) -> ConsumerPool:
    client = aioredis.Redis.from_url(url)
    try:
        if recommender is None:
            pool = build_pool(client, pool_settings, call_options)
        else:
            pool = ConsumerPool(client, pool_settings, recommender)
        await asyncio.wait_for(pool.run(), timeout=90)
        await pool.recommender.aclose()
    finally:
        await client.aclose()
    return pool


# The helpers


def test_fields_name_first_last_and_size():
    ids = ["1700000000001-3", "1700000000001-12", "1700000000009-0", "1700000000010-0"]

    assert batch_log_fields(ids) == {"batch_first_entry_id": "1700000000001-3",
                                     "batch_last_entry_id": "1700000000010-0", "batch_entries": 4}


def test_fields_name_partition_stream():
    fields = batch_log_fields(["5-0"], "rp:transactions:p3")

    assert fields["batch_stream"] == "rp:transactions:p3"
    assert fields["batch_first_entry_id"] == fields["batch_last_entry_id"] == "5-0"


def test_distinct_errors_capped():
    now = datetime.now(timezone.utc)
    letters = [DeadLetter(entry_id=f"{index}-0", stream="s", payload={}, reason="rejected by recommender",
                          error_type="http_500", error=text, consumer="c1", first_failure_at=now,
                          last_failure_at=now)
               for index, text in enumerate(["boom", "boom", "x" * 400, "other", "fourth"])]

    errors = distinct_errors(letters)

    assert errors == ["boom", "x" * 300 + "...", "other"]


# The pool


@one_server
async def test_retry_line_names_batch(redis_url, keys, sync_client, orchestrator):
    publish(redis_url, keys, make_transactions(4))
    entry_ids = [entry_id for entry_id, _ in sync_client.xrange(keys.transactions)]

    with FaultProxy(orchestrator.url, first(1, Fault(503))) as proxy, capture() as logs:
        pool = await drain(redis_url, settings(keys), options(proxy.url))

    assert pool.stats.results == 4
    retries = events(logs, "retrying recommender call")
    assert len(retries) == 1
    assert retries[0]["status"] == 503
    assert retries[0]["consumer"] == "c1"
    assert retries[0]["batch_first_entry_id"] == entry_ids[0]
    assert retries[0]["batch_last_entry_id"] == entry_ids[-1]
    assert retries[0]["batch_entries"] == 4


@one_server
async def test_http_500_logs_status_and_error(redis_url, keys, sync_client, orchestrator):
    """Every batch that fails with HTTP 500 is dead-lettered with its status, and an error line sums it up."""
    publish(redis_url, keys, make_transactions(10))
    entry_ids = [entry_id for entry_id, _ in sync_client.xrange(keys.transactions)]

    with FaultProxy(orchestrator.url, lambda index: Fault(500)) as proxy, capture() as logs:
        pool = await drain(redis_url, settings(keys), options(proxy.url))

    assert pool.stats.dead_letters == 10
    letters = events(logs, "entries dead-lettered")
    assert len(letters) == 2
    assert letters[0]["http_statuses"] == [500]
    assert "HTTP 500" in letters[0]["errors"][0]
    assert "injected by the test proxy" in letters[0]["errors"][0]
    assert letters[1]["batch_first_entry_id"] == entry_ids[5]
    assert letters[1]["batch_last_entry_id"] == entry_ids[9]
    summaries = events(logs, SERVER_ERRORS)
    assert len(summaries) == 1  # the second batch's line is held back for the RepeatFilter interval
    assert summaries[0]["log_level"] == "error"
    assert summaries[0]["http_statuses"] == [500]
    assert summaries[0]["batches_in_a_row"] == 1
    assert summaries[0]["consumer"] == "c1"
    assert "dlq redrive --all" in summaries[0]["event"]


@one_server
async def test_item_rejections_no_server_error_line(redis_url, keys):
    """Dead letters without an HTTP 5xx status, such as the engine's own rejections, log no server error line."""
    publish(redis_url, keys, make_transactions(3))

    with capture() as logs:
        pool = await drain(redis_url, settings(keys), recommender=RejectsAll())

    assert pool.stats.dead_letters == 3
    assert events(logs, "entries dead-lettered")[0]["http_statuses"] == []
    assert events(logs, SERVER_ERRORS) == []


@one_server
async def test_debug_line_per_batch(redis_url, keys, sync_client):
    """Each batch's debug line counts that batch's outcomes alone, also while another worker settles."""
    publish(redis_url, keys, make_transactions(11))
    entry_ids = [entry_id for entry_id, _ in sync_client.xrange(keys.transactions)]

    with capture() as logs:
        await drain(redis_url, replace(settings(keys, batch_size=4), workers=2))

    settled = sorted(events(logs, "batch settled"), key=lambda line: entry_ids.index(line["batch_first_entry_id"]))
    assert [line["log_level"] for line in settled] == ["debug"] * 3
    assert [line["results"] for line in settled] == [4, 4, 3]
    assert [line["batch_first_entry_id"] for line in settled] == [entry_ids[0], entry_ids[4], entry_ids[8]]
    assert [line["batch_last_entry_id"] for line in settled] == [entry_ids[3], entry_ids[7], entry_ids[10]]
    assert [line["dead_letters"] for line in settled] == [0, 0, 0]
    assert [line["given_back"] for line in settled] == [0, 0, 0]
