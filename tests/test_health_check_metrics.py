"""GET /health checks counted separately from the orchestrator calls of the REST recommender."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis.asyncio as aioredis

from consumer.metrics import PoolCollector, count_http_statuses
from consumer.pool import ConsumerPool
from consumer.recommenders.http import HttpRecommender
from consumer.settings import ConsumerSettings
from consumer.stats import PoolStats
from orchestrator_servers import UvicornThread
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Recommendation
from rewardpilot.orchestrator import create_app
from rewardpilot.streams import StreamKeys
from test_mcp_call_metrics import work_item

API_KEY = "health-metrics-key-42"


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app(RulesEngine.default(), api_key=API_KEY)) as running:
        yield running


async def test_connect_counts_only_health_check(orchestrator):
    recommender = HttpRecommender(orchestrator.url, api_key=API_KEY, timeout=5.0)
    stats = PoolStats()
    assert count_http_statuses(recommender, stats)

    try:
        await recommender.connect()
    finally:
        await recommender.aclose()

    assert stats.health_check_statuses == {200: 1}
    assert stats.http_statuses == {}


async def test_batch_call_counted_once(orchestrator):
    recommender = HttpRecommender(orchestrator.url, api_key=API_KEY, timeout=5.0)
    stats = PoolStats()
    assert count_http_statuses(recommender, stats)

    try:
        outcomes = await recommender.recommend([work_item("hc-1"), work_item("hc-2")])
        outcomes += await recommender.recommend([work_item("hc-3")])
    finally:
        await recommender.aclose()

    assert all(isinstance(outcome, Recommendation) for outcome in outcomes)
    assert stats.http_statuses == {200: 2}  # two POST /recommend/batch, one per recommend call
    assert stats.health_check_statuses == {200: 1}


def test_health_path_under_base_path():
    """A base URL with a path prefix still has its /health responses counted separately from the calls."""
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if request.url.path == "/api/health" else 429, json={})

    client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    recommender = HttpRecommender("http://127.0.0.1:9/api", client=client)
    stats = PoolStats()
    assert count_http_statuses(recommender, stats)

    async def send_requests() -> None:
        await client.get("http://127.0.0.1:9/api/health")
        await client.post("http://127.0.0.1:9/api/recommend/batch", json={})
        await client.aclose()

    asyncio.run(send_requests())

    assert stats.health_check_statuses == {503: 1}
    assert stats.http_statuses == {429: 1}


def test_collector_exports_health_checks():
    # The pool is built but never run, so its client never connects.
    pool = ConsumerPool(aioredis.Redis(), ConsumerSettings(keys=StreamKeys(prefix="hc:"), consumer="c1"))
    pool.stats.http_statuses[200] = 3
    pool.stats.health_check_statuses[200] = 1

    found = {family.name: family for family in PoolCollector(pool).collect()}

    calls = found["rewardpilot_consumer_orchestrator_calls"]
    checks = found["rewardpilot_consumer_orchestrator_health_checks"]
    assert [(sample.labels["status"], sample.value) for sample in calls.samples] == [("200", 3)]
    assert [(sample.labels["status"], sample.value) for sample in checks.samples] == [("200", 1)]
    assert "GET /health checks are counted in orchestrator_health_checks_total" in calls.documentation
