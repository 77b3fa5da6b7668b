"""The dramatiq actor of row 2: the rules engine called once per transaction.

    BENCH_REDIS_URL=... BENCH_NAMESPACE=... BENCH_RESULTS=... dramatiq bench.dramatiq_peer --processes 1

Each message carries one transaction as JSON. The actor validates it, calls
the engine for a recommendation against the whole catalog, and adds the
recommendation to the results stream, as the product does per entry. The
broker is the Redis broker on the benchmark's server, under its own
namespace, with dramatiq's default middleware.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RESULTS = os.environ.get("BENCH_RESULTS", "rpbench:dramatiq:results")

broker = RedisBroker(url=URL, namespace=os.environ.get("BENCH_NAMESPACE", "rpbench-dramatiq"))
dramatiq.set_broker(broker)

_engine: RulesEngine | None = None
_client: redis.Redis | None = None


def _resources() -> tuple[RulesEngine, redis.Redis]:
    global _engine, _client
    if _engine is None:
        _engine = RulesEngine.default()
        _client = redis.Redis.from_url(URL)
    return _engine, _client


@dramatiq.actor(max_retries=0)
def recommend(payload: str) -> None:
    engine, client = _resources()
    transaction = Transaction.model_validate_json(payload)
    recommendation = engine.recommend(transaction, None, wallet_source="catalog")
    client.xadd(RESULTS, {
        "data": recommendation.model_dump_json(), "user_id": transaction.user_id,
        "transaction_id": transaction.transaction_id,
    })
