"""modal_app.run_consume with a job: the job steps of `rewardpilot consume --job`, and no autoscale registration."""

from __future__ import annotations

import asyncio

import pytest

import modal_app
from consumer.pool import ConsumerPool
from producer.publisher import Producer
from rewardpilot.job import keep_key, record_keep
from rewardpilot.streams import LIVE_RUN, StreamKeys

from conftest import one_server
from test_modal_app import make_transactions

KEEP_SECONDS = 600


def make_job(client, keys: StreamKeys, job: str, count: int) -> StreamKeys:
    """Publish ``count`` transactions to a job whose keys expire in KEEP_SECONDS, as `run --keep 10m` leaves them."""
    job_keys = StreamKeys(prefix=keys.prefix, job=job)
    Producer(client, job_keys, max_backlog=None).publish_many(make_transactions(count))
    record_keep(client, job_keys, KEEP_SECONDS)
    client.expire(job_keys.transactions, KEEP_SECONDS)
    return job_keys


@one_server
def test_job_markers_expire_with_job(redis_url, keys, sync_client):
    job = make_job(sync_client, keys, "j5", 3)

    stats = modal_app.run_consume(redis_url, prefix=keys.prefix, seconds=1, workers=1, grace_seconds=2, job="j5")

    assert stats["results"] == 3
    markers = [job.result_marker(LIVE_RUN, f"t-{index}") for index in range(3)]
    for marker in markers:
        assert 0 < sync_client.ttl(marker) <= KEEP_SECONDS, marker


@one_server
def test_job_results_stream_gets_job_ttl(redis_url, keys, sync_client):
    job = make_job(sync_client, keys, "j2", 2)

    modal_app.run_consume(redis_url, prefix=keys.prefix, seconds=1, workers=1, grace_seconds=2, job="j2")

    assert sync_client.xlen(job.results()) == 2
    assert 0 < sync_client.ttl(job.results()) <= KEEP_SECONDS
    assert 0 < sync_client.ttl(keep_key(job)) <= KEEP_SECONDS


@one_server
def test_unknown_job_rejected(redis_url, keys, sync_client):
    make_job(sync_client, keys, "j5", 1)
    before = sorted(sync_client.scan_iter(match=f"{keys.prefix}*", count=1000))

    with pytest.raises(ValueError, match=r"no job 'j-typo' under prefix 'rptest:\w+:'"):
        modal_app.run_consume(redis_url, prefix=keys.prefix, seconds=1, workers=1, grace_seconds=2, job="j-typo")

    assert sorted(sync_client.scan_iter(match=f"{keys.prefix}*", count=1000)) == before
    assert not list(sync_client.scan_iter(match=f"{keys.prefix}job:j-typo:*", count=1000))


@one_server
@pytest.mark.parametrize(("job", "running", "started"), [(None, 1, 2), ("j10", 0, 3)])
def test_autoscale_counts_live_consumers_only(redis_url, keys, sync_client, monkeypatch, job, running, started):
    """autoscale runs while a consume call is running; a job's consumer does not count against the live backlog."""
    Producer(sync_client, keys, max_backlog=None).publish_many(
        [transaction.model_copy(update={"transaction_id": f"live-{index}"})
         for index, transaction in enumerate(make_transactions(25))])
    if job is not None:
        make_job(sync_client, keys, job, 2)
    decisions = []
    run_pool = ConsumerPool.run

    async def autoscale_then_run(pool):
        # The consume call has registered itself (or not) by the time its pool runs.
        decisions.append(await asyncio.to_thread(modal_app.run_autoscale, redis_url, prefix=keys.prefix,
                                                 per_consumer=10, maximum=5, spawn=lambda: None))
        return await run_pool(pool)

    monkeypatch.setattr(ConsumerPool, "run", autoscale_then_run)
    modal_app.run_consume(redis_url, prefix=keys.prefix, seconds=1, workers=1, grace_seconds=2, job=job)

    assert len(decisions) == 1
    assert decisions[0]["lag"] == 25  # the pool has not read yet
    assert decisions[0]["running"] == running
    assert decisions[0]["started"] == started  # ceil(25 / 10) = 3, less the running live consumers
    assert sync_client.zcard(modal_app.consumers_key(keys.prefix)) == 0
