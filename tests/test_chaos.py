"""Nothing lost, nothing twice: consumers killed, servers restarted, signals mid-batch.

Every test here runs ``rewardpilot consume`` as separate processes against a
real server and checks the final counts: one result per transaction, no
duplicate in the results stream, no pending entry, no dead letter.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import ROOT, ValkeyProcess
from orchestrator_servers import Scripted, ScriptedServer
from producer import Producer
from rewardpilot.streams import StreamKeys
from test_pipeline import transactions

pytestmark = pytest.mark.slow


def consumer_env(url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["REDIS_URL"] = url
    env["RP_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    env["RP_LOG_LEVEL"] = "WARNING"
    env.pop("ORCHESTRATOR_URL", None)  # the in-process engine unless a test names an orchestrator
    return env


def start_consumer(url: str, keys, log_dir: Path, name: str, *extra: str,
                   log_level: str = "WARNING") -> subprocess.Popen:
    """Start ``rewardpilot consume`` with its stderr in ``log_dir/name.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = consumer_env(url, log_dir)
    env["RP_LOG_LEVEL"] = log_level
    args = [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--name", name,
            "--visibility-timeout", "2", "--block-ms", "200", *extra]
    with (log_dir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(args, env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log)


def publish(url: str, keys, count: int) -> None:
    client = redis.Redis.from_url(url)
    try:
        assert Producer(client, keys, max_backlog=None).publish_many(transactions(count)).published == count
    finally:
        client.close()


def wait_until(condition, *, attempts: int, interval: float = 0.1) -> bool:
    """Poll ``condition`` up to ``attempts`` times; return whether it became true."""
    for _ in range(attempts):
        if condition():
            return True
        time.sleep(interval)
    return False


def drain(url: str, keys, log_dir: Path, name: str = "drainer") -> None:
    process = start_consumer(url, keys, log_dir, name, "--drain", "--batch-size", "500")
    assert process.wait(timeout=120) == 0, (log_dir / f"{name}.log").read_text()[-3000:]


def pending(client: redis.Redis, keys) -> int:
    """Return the live group's pending count, 0 before a consumer has created the group."""
    try:
        return client.xpending(keys.transactions, keys.group())["pending"]
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return 0


def assert_exactly_once(client: redis.Redis, keys, count: int) -> None:
    transaction_ids = [fields[b"transaction_id"] for _, fields in client.xrange(keys.results())]
    assert len(transaction_ids) == count
    assert len(set(transaction_ids)) == count
    assert pending(client, keys) == 0
    assert client.xlen(keys.dead_letters) == 0


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


# Chaos: SIGKILL a random consumer every 2 seconds.

def test_chaos_kills_lose_nothing(one_redis_url, one_keys, tmp_path):
    total = 15_000
    publish(one_redis_url, one_keys, total)
    client = redis.Redis.from_url(one_redis_url)
    # A batch taken by a consumer that is killed comes back after the 2 s visibility
    # timeout; --max-deliveries 50 keeps such a batch from being taken for a poison message.
    # The shared token bucket holds the three consumers to 1,500 transactions a second
    # together, so in the first 9.8 s at most 200 + 9.8 x 1,500 = 14,900 of the 15,000 get
    # results. Three rounds of a 2 s sleep, a kill and a restart take about 6 s, well inside that.
    options = ("--batch-size", "200", "--workers", "2", "--max-deliveries", "50",
               "--rate", "1500/s", "--burst", "200", "--count", "transactions")
    processes = [start_consumer(one_redis_url, one_keys, tmp_path, f"c{i}", *options) for i in range(3)]
    kills = 0
    rng = random.Random(7)
    try:
        for _ in range(30):  # at most 30 rounds of 2 s
            time.sleep(2)
            if client.xlen(one_keys.results()) >= total:
                break
            victim = rng.randrange(3)
            processes[victim].send_signal(signal.SIGKILL)
            processes[victim].wait(10)
            kills += 1
            processes[victim] = start_consumer(one_redis_url, one_keys, tmp_path, f"c{victim}-{kills}", *options)
    finally:
        for process in processes:
            stop(process)
        client.close()

    drain(one_redis_url, one_keys, tmp_path)

    client = redis.Redis.from_url(one_redis_url)
    try:
        assert kills >= 3
        assert_exactly_once(client, one_keys, total)
    finally:
        client.close()


# Restart: the server goes away mid-run and comes back with its data.

def test_restart_with_appendonly(tmp_path):
    server = ValkeyProcess(tmp_path / "data", appendonly=True)
    server.start()
    port = server.port
    keys = StreamKeys(prefix="restart:")
    total = 6_000
    try:
        publish(server.url, keys, total)
        client = redis.Redis.from_url(server.url)
        processes = [start_consumer(server.url, keys, tmp_path, f"r{i}", "--drain", "--batch-size", "100",
                                    "--workers", "1") for i in range(2)]
        try:
            assert wait_until(lambda: client.xlen(keys.results()) > 0, attempts=300)
            client.close()
            server.stop()
            server.start()
            assert server.port == port
            for index, process in enumerate(processes):
                assert process.wait(timeout=120) == 0, (tmp_path / f"r{index}.log").read_text()[-3000:]
        finally:
            for process in processes:
                stop(process)

        client = redis.Redis.from_url(server.url)
        assert_exactly_once(client, keys, total)
        client.close()
    finally:
        server.stop()


def test_producer_reconnects_mid_publish(tmp_path):
    server = ValkeyProcess(tmp_path / "data", appendonly=True)
    server.start()
    keys = StreamKeys(prefix="publish-restart:")
    total = 30_000
    outcome = {}

    def run_producer():
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        try:
            summary = Producer(client, keys, max_backlog=None, chunk_size=200).publish_many(transactions(total))
            outcome["summary"] = summary
        except Exception as exc:  # reported by the assert below
            outcome["error"] = exc
        finally:
            client.close()

    try:
        thread = threading.Thread(target=run_producer)
        thread.start()
        probe = redis.Redis.from_url(server.url)
        assert wait_until(lambda: probe.xlen(keys.transactions) > 0, attempts=300)
        probe.close()
        server.stop()
        server.start()
        thread.join(timeout=120)

        assert "error" not in outcome, outcome.get("error")
        summary = outcome["summary"]
        assert summary.published + summary.duplicates == total
        client = redis.Redis.from_url(server.url)
        ids = [fields[b"data"] for _, fields in client.xrange(keys.transactions)]
        client.close()
        assert len(ids) == total
        assert len(set(ids)) == total
    finally:
        server.stop()


def test_restart_without_persistence_recreates_group(tmp_path):
    server = ValkeyProcess(tmp_path / "data", appendonly=False)
    server.start()
    keys = StreamKeys(prefix="empty-restart:")
    try:
        publish(server.url, keys, 100)
        process = start_consumer(server.url, keys, tmp_path, "survivor", "--batch-size", "50")
        try:
            client = redis.Redis.from_url(server.url)
            assert wait_until(lambda: client.xlen(keys.results()) == 100, attempts=300)
            client.close()

            server.stop()
            server.start()
            client = redis.Redis.from_url(server.url)
            # The consumer may already have made the stream again (empty) with the group.
            assert client.xlen(keys.transactions) == 0
            publish(server.url, keys, 40)

            assert wait_until(lambda: client.xlen(keys.results()) == 40, attempts=600)
            assert pending(client, keys) == 0
            client.close()
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)

        log = (tmp_path / "survivor.log").read_text()
        assert code == 0, log[-3000:]
        assert "consumer group missing" in log
        assert '"level": "error"' in log
    finally:
        server.stop()


# Shutdown: SIGTERM while a batch is in hand.

def big_batch_consumer(url: str, keys, log_dir: Path, name: str, grace: str = "30"):
    return start_consumer(url, keys, log_dir, name, "--batch-size", "5000", "--workers", "1", "--grace", grace)


def test_sigterm_mid_batch_loses_nothing(one_redis_url, one_keys, tmp_path):
    total = 15_000
    publish(one_redis_url, one_keys, total)
    client = redis.Redis.from_url(one_redis_url)
    try:
        process = big_batch_consumer(one_redis_url, one_keys, tmp_path, "terminated")
        try:
            assert wait_until(lambda: pending(client, one_keys) > 0, attempts=300, interval=0.01)
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
        finally:
            stop(process)
        assert code == 0, (tmp_path / "terminated.log").read_text()[-3000:]

        # The batch in hand was settled before exit, and the consumer left the group.
        assert pending(client, one_keys) == 0
        assert client.xlen(one_keys.results()) > 0
        consumers = client.xinfo_consumers(one_keys.transactions, one_keys.group())
        assert b"terminated" not in [consumer["name"] for consumer in consumers]

        drain(one_redis_url, one_keys, tmp_path)
        assert_exactly_once(client, one_keys, total)
    finally:
        client.close()


def test_second_sigterm_leaves_pending(one_redis_url, one_keys, tmp_path):
    total = 300
    publish(one_redis_url, one_keys, total)
    client = redis.Redis.from_url(one_redis_url)
    # An orchestrator that holds every request for up to 60 s keeps the batch in hand.
    hanging = Scripted(hang_seconds=60)
    health = Scripted(200, b'{"endpoints": ["/recommend/batch"]}')
    with ScriptedServer({"/health": health, "/recommend/batch": hanging, "/recommend": hanging}) as orchestrator:
        process = start_consumer(one_redis_url, one_keys, tmp_path, "aborted", "--batch-size", "100",
                                 "--workers", "1", "--grace", "60", "--timeout", "50",
                                 "--orchestrator", orchestrator.url, log_level="INFO")
        log_path = tmp_path / "aborted.log"
        try:
            # The batch is in hand once its request reached the orchestrator; /health comes first.
            assert wait_until(lambda: any(path == "/recommend/batch" for _, path, _, _ in orchestrator.requests),
                              attempts=300)
            process.send_signal(signal.SIGTERM)
            # Two signals sent at once can merge into one, so wait for the first to be handled.
            assert wait_until(lambda: "consumer stopping" in log_path.read_text(), attempts=300)
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
        finally:
            stop(process)
    assert code == 0, log_path.read_text()[-3000:]

    try:
        held = client.xpending_range(one_keys.transactions, one_keys.group(), "-", "+", 1000,
                                     consumername="aborted")
        assert len(held) == 100
        assert client.xlen(one_keys.results()) == 0
        consumers = client.xinfo_consumers(one_keys.transactions, one_keys.group())
        assert b"aborted" in [consumer["name"] for consumer in consumers]

        drain(one_redis_url, one_keys, tmp_path)
        assert_exactly_once(client, one_keys, total)
    finally:
        client.close()
