"""modal_app.py: import without Modal credentials, and each function body run locally on real Redis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from consumer.build import replay_bucket_key
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


FUNCTION_NAMES = ("consume", "autoscale", "batch_endpoint", "nightly_replay")


def offline_env(tmp_path) -> dict[str, str]:
    """Environment with no Modal token or profile and an unreachable Modal server."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)
    env["PYTHONPATH"] = str(ROOT)
    # An unreachable server address makes any network call fail fast instead of succeeding.
    env["MODAL_SERVER_URL"] = "http://127.0.0.1:9"
    return env


def test_import_without_token_or_network(tmp_path):
    # Modal's deprecation warnings become errors, so an API that modal has deprecated fails here.
    probe = (
        "import warnings\n"
        "from modal.exception import DeprecationError\n"
        "warnings.simplefilter('error', DeprecationError)\n"
        "import modal, modal_app\n"
        f"for name in {FUNCTION_NAMES!r}:\n"
        "    function = getattr(modal_app, name)\n"
        "    assert isinstance(function, modal.Function), name\n"
        "    function.info()\n"
        "print(modal_app.app.name)\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], env=offline_env(tmp_path), cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "rewardpilot-stream"


def test_function_settings():
    """The settings each Modal function is deployed with, read back through modal's FunctionInfo."""
    consume = modal_app.consume.info()
    assert consume.timeout == modal_app.CONSUME_TIMEOUT_SECONDS
    assert modal_app.DEFAULT_CONSUME_SECONDS + modal_app.SHUTDOWN_GRACE_SECONDS < consume.timeout
    assert consume.schedule is None

    autoscale = modal_app.autoscale.info()
    assert autoscale.schedule == "Period(minutes=1)"

    endpoint = modal_app.batch_endpoint.info()
    assert endpoint.web_info is not None
    assert endpoint.web_info.unauthenticated is False  # requires_proxy_auth
    assert endpoint.concurrency_info.max_inputs == modal_app.BATCH_CONCURRENT_REQUESTS
    assert endpoint.timeout == modal_app.BATCH_FUNCTION_TIMEOUT_SECONDS
    assert modal_app.MAX_BATCH_TIMEOUT_SECONDS < endpoint.timeout

    nightly = modal_app.nightly_replay.info()
    assert nightly.schedule == "Cron('0 3 * * *', UTC)"

    for name in FUNCTION_NAMES:
        assert getattr(modal_app, name).info().secrets == ["modal.Secret.from_name('rewardpilot')"], name


def test_modal_run_parses_consume_options(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "modal", "run", "modal_app.py::consume", "--help"],
        env=offline_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    for option in ("--seconds INTEGER", "--workers INTEGER", "--job TEXT"):
        assert option in completed.stdout


def image_source_files() -> dict[str, Path]:
    """Return what the image's local Python source layer uploads: container path to local file.

    This reads modal's private image and mount objects (modal 1.6.4), the
    only offline view of the file list ``add_local_python_source`` uploads.
    """
    from modal._utils.async_utils import synchronizer
    from modal.mount import _Mount

    image = synchronizer._translate_in(modal_app.image)
    mounts = [dependency for dependency in image._deps() if isinstance(dependency, _Mount)]
    assert len(mounts) == 1
    return {
        str(remote_path): Path(local_path)
        for entry in mounts[0]._entries
        for local_path, remote_path in entry.get_files_to_upload()
    }


def test_image_uploads_package_data():
    uploaded = image_source_files()

    for data_file in ("consumer/settle.lua", "consumer/ratelimit/token_bucket.lua", "rewardpilot/data/cards.json",
                      "rewardpilot/data/mcc_categories.json", "rewardpilot/data/valuations.json"):
        assert f"/root/{data_file}" in uploaded, data_file
    for package in modal_app.SOURCE_PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in source.parts:
                assert f"/root/{source.relative_to(ROOT).as_posix()}" in uploaded, source
    assert not [path for path in uploaded if "__pycache__" in path or path.endswith(".pyc")]


@one_server
def test_image_sources_run_consumer(redis_url, keys, sync_client, tmp_path):
    """Run a consumer from a copy of only the files the image uploads, as in a container's /root."""
    container_root = tmp_path / "root"
    for remote_path, local_path in image_source_files().items():
        target = container_root / Path(remote_path).relative_to("/root")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_path, target)
    # Modal adds the entrypoint file itself (include_source defaults to True).
    shutil.copyfile(ROOT / "modal_app.py", container_root / "modal_app.py")
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(4))

    probe = (
        "import json, sys, rewardpilot, consumer, modal_app\n"
        "assert rewardpilot.__file__.startswith(sys.argv[1]), rewardpilot.__file__\n"
        "assert consumer.__file__.startswith(sys.argv[1]), consumer.__file__\n"
        "stats = modal_app.run_consume(sys.argv[2], prefix=sys.argv[3], seconds=1, workers=1, grace_seconds=2)\n"
        "print(json.dumps(stats))\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "REDIS_URL")}
    env["HOME"] = str(tmp_path)
    completed = subprocess.run([sys.executable, "-c", probe, str(container_root), redis_url, keys.prefix],
                               env=env, cwd=container_root, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1])["results"] == 4
    assert sync_client.xlen(keys.results()) == 4


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


def test_autoscale_counts_spawned_calls(redis_url, keys, sync_client):
    """A call Modal has accepted but not started counts as running, so the next run spawns no more."""
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(25))
    call_ids = iter(["fc-1", "fc-2", "fc-3", "fc-4"])
    spawned = []

    def spawn() -> str:
        spawned.append(next(call_ids))
        return spawned[-1]

    before_ms = time.time() * 1000
    first = modal_app.run_autoscale(redis_url, prefix=keys.prefix, per_consumer=10, maximum=5, spawn=spawn)
    second = modal_app.run_autoscale(redis_url, prefix=keys.prefix, per_consumer=10, maximum=5, spawn=spawn)

    assert first["started"] == 3
    assert second["running"] == 3
    assert second["started"] == 0
    assert spawned == ["fc-1", "fc-2", "fc-3"]
    registry = dict(sync_client.zrange(modal_app.consumers_key(keys.prefix), 0, -1, withscores=True))
    assert sorted(registry) == ["fc-1", "fc-2", "fc-3"]
    for score in registry.values():
        assert before_ms + modal_app.SPAWNED_CALL_SECONDS * 1000 <= score
        assert score <= time.time() * 1000 + modal_app.SPAWNED_CALL_SECONDS * 1000


def test_autoscale_keeps_started_registration(redis_url, keys, sync_client):
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(5))
    registry = modal_app.consumers_key(keys.prefix)
    # The container started and registered its stop time before autoscale wrote its entry.
    stops_at_ms = int(time.time() * 1000) + 30_000
    sync_client.zadd(registry, {"fc-early": stops_at_ms})

    modal_app.run_autoscale(redis_url, prefix=keys.prefix, per_consumer=1, maximum=2, spawn=lambda: "fc-early")

    assert sync_client.zscore(registry, "fc-early") == stops_at_ms


@one_server
def test_consume_replaces_spawn_entry(redis_url, keys, sync_client):
    registry = modal_app.consumers_key(keys.prefix)
    sync_client.zadd(registry, {"fc-7": int(time.time() * 1000) + 300_000})
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(3))

    stats = modal_app.run_consume(redis_url, prefix=keys.prefix, seconds=1, workers=1, grace_seconds=2,
                                  member="fc-7")

    assert stats["results"] == 3
    assert sync_client.zscore(registry, "fc-7") is None
    assert sync_client.zcard(registry) == 0


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


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "RP_BATCH_TIMEOUT_SECONDS='soon' is not a number"),
        ("0", "RP_BATCH_TIMEOUT_SECONDS=0 must be more than 0"),
        ("-5", "RP_BATCH_TIMEOUT_SECONDS=-5 must be more than 0"),
        ("841", "at most 840 s"),
        ("nan", "RP_BATCH_TIMEOUT_SECONDS=nan must be more than 0"),
    ],
)
def test_batch_timeout_setting_rejected(monkeypatch, value, message):
    monkeypatch.setenv("RP_BATCH_TIMEOUT_SECONDS", value)
    with pytest.raises(ValueError, match=message):
        modal_app._batch_timeout_seconds()


def test_batch_timeout_setting_accepted(monkeypatch):
    monkeypatch.delenv("RP_BATCH_TIMEOUT_SECONDS", raising=False)
    assert modal_app._batch_timeout_seconds() == modal_app.DEFAULT_BATCH_TIMEOUT_SECONDS
    monkeypatch.setenv("RP_BATCH_TIMEOUT_SECONDS", "120.5")
    assert modal_app._batch_timeout_seconds() == 120.5
    monkeypatch.setenv("RP_BATCH_TIMEOUT_SECONDS", "840")
    assert modal_app._batch_timeout_seconds() == 840


def test_batch_app_rejects_zero_timeout():
    with pytest.raises(ValueError, match="timeout_seconds 0 must be more than 0"):
        modal_app.create_batch_app("redis://127.0.0.1:9/0", timeout_seconds=0)


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


@one_server
def test_nightly_replay_uses_orchestrator(redis_url, keys, sync_client, monkeypatch):
    """ORCHESTRATOR_URL, ORCHESTRATOR_API_KEY and the rate reach the nightly replay, as they reach `replay`."""
    from orchestrator_servers import UvicornThread
    from rewardpilot.orchestrator import create_app

    api_key = "nightly-key-4821"
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(4))
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
    run = f"nightly-{datetime.now(timezone.utc).date().isoformat()}"

    with UvicornThread(create_app(api_key=api_key)) as orchestrator:
        monkeypatch.setenv("ORCHESTRATOR_URL", orchestrator.url)
        monkeypatch.setenv("ORCHESTRATOR_API_KEY", api_key)
        outcome = modal_app.run_nightly_replay(redis_url, prefix=keys.prefix, enabled=True, now=tomorrow,
                                               rate="1000/s")

    assert outcome["results"] == 4
    assert outcome["dead_letters"] == 0
    recommenders = {json.loads(fields["data"])["recommender"] for _, fields in sync_client.xrange(keys.results(run))}
    assert recommenders == {"http"}
    # RP_RATE caps the replay in a bucket of its own, and the live consumers' bucket is left alone.
    assert sync_client.exists(replay_bucket_key(keys, run))
    assert not sync_client.exists(keys.rate_limit())


def test_nightly_replay_function_passes_rate(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("RP_RATE", "50/s")
    monkeypatch.setenv("RP_NIGHTLY_REPLAY", "1")
    calls = []
    monkeypatch.setattr(modal_app, "run_nightly_replay", lambda url, **options: calls.append(options) or {})

    modal_app.nightly_replay.local()

    assert calls[0]["rate"] == "50/s"
    assert calls[0]["enabled"] is True


def test_modal_functions_log_json(tmp_path):
    """A Modal function configures logging as the CLI does: JSON lines on stderr at RP_LOG_LEVEL."""
    script = (
        "import modal_app\n"
        "from rewardpilot.logs import get_logger\n"
        "modal_app._configure_logs()\n"
        "get_logger('consumer').info('consumer started', consumer='c-1')\n"
        "get_logger('consumer').debug('hidden below INFO')\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                               timeout=60, env={**os.environ, "RP_LOG_LEVEL": "INFO"})

    lines = [json.loads(line) for line in completed.stderr.splitlines() if line.startswith("{")]
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout == ""
    assert [line["event"] for line in lines] == ["consumer started"]
    assert lines[0]["consumer"] == "c-1"
