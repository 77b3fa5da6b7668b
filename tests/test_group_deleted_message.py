"""A consumer group deleted while its stream remains: one warning per process, naming the entries read again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from conftest import ROOT, run_cli
from test_run_lock_renewal import server  # noqa: F401  (a fixture: a private valkey-server)
from rewardpilot.partitions import partition_streams
from rewardpilot.streams import LIVE_GROUP, StreamKeys

COUNT = 30
POLL_SECONDS = 0.1
POLL_ROUNDS = 300  # about 30 s




def poll(condition) -> bool:
    for _ in range(POLL_ROUNDS):
        if condition():
            return True
        time.sleep(POLL_SECONDS)
    return False


def group_exists(client: redis.Redis, stream: str) -> bool:
    try:
        return any(info["name"] == LIVE_GROUP.encode() for info in client.xinfo_groups(stream))
    except redis.ResponseError:
        return False


@pytest.mark.parametrize("partitions", [1, 3])
def test_deleted_group_logged_once(server, tmp_path, partitions):
    keys = StreamKeys(prefix=f"gd{partitions}:")
    env = dict(os.environ, REDIS_URL=server.url, RP_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    source = tmp_path / "t.csv"
    source.write_text(
        "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        + "".join(f"g{i},u{i},Whole Foods,groceries,{10 + i}.00,5411,2026-11-02T10:00:00Z\n" for i in range(COUNT))
    )
    published = run_cli(["--prefix", keys.prefix, "publish", "--partitions", str(partitions), str(source)], env)
    assert published.returncode == 0, published.stderr[-3000:]
    streams = partition_streams(keys, partitions)
    client = redis.Redis.from_url(server.url)
    log_path = tmp_path / "consumer.log"
    with log_path.open("ab") as log:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--workers", "2",
             "--block-ms", "100", "--partitions", str(partitions)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
        )
    try:
        assert poll(lambda: client.xlen(keys.results()) == COUNT), log_path.read_text()[-3000:]
        # One MULTI, so the consumer cannot read between two deletions and see two separate occurrences.
        deletion = client.pipeline(transaction=True)
        for stream in streams:
            deletion.xgroup_destroy(stream, LIVE_GROUP)
        deletion.execute()
        assert poll(lambda: all(group_exists(client, stream) for stream in streams))
        assert poll(lambda: "consumer group deleted" in log_path.read_text())
        time.sleep(1.0)  # time for a second worker's NOGROUP to be logged, if it were
    finally:
        consumer.send_signal(signal.SIGTERM)
        code = consumer.wait(timeout=60)
        results = client.xlen(keys.results())
        client.close()

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    deleted = [line for line in lines if "consumer group deleted" in line["event"]]
    assert code == 0
    assert len(deleted) == 1, deleted
    assert deleted[0]["level"] == "warning"
    assert f"reading the {COUNT} entries in" in deleted[0]["event"]
    assert "--marker-ttl" in deleted[0]["event"]
    assert not [line for line in lines if "lost its data" in line["event"]]
    assert results == COUNT  # the entries read again were duplicates
