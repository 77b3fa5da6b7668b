"""``consume`` options: the metrics address check and ``--results-maxlen``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import redis

from conftest import invoke_cli, one_server
from consumer.metrics import check_listen_address
from producer import Producer
from rewardpilot.models import Transaction


# --metrics-address


@pytest.mark.parametrize("address", ["0.0.0.0.0", "256.1.1.1", "127.0.0.1.", "1.2.3"])
def test_mistyped_ipv4_rejected(address):
    with pytest.raises(ValueError, match="neither an IPv4 address"):
        check_listen_address(address)


@pytest.mark.parametrize("address", ["", "bad host", "[::1]", "host_name", "-leading", "a" * 64 + ".example"])
def test_malformed_host_rejected(address):
    with pytest.raises(ValueError, match="neither an IP address nor a host name"):
        check_listen_address(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost"])
def test_valid_address_accepted(address):
    check_listen_address(address)


@one_server
def test_invalid_metrics_address_exit_two(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                            "--metrics-port", "9", "--metrics-address", "0.0.0.0.0"], cli_env)
    output = " ".join(completed.stderr.split())

    assert completed.returncode == 2
    assert "--metrics-address '0.0.0.0.0': invalid address" in output
    assert "free port" not in output
    assert "Traceback" not in completed.stderr


# --results-maxlen


def purchases(count: int) -> list[Transaction]:
    start = datetime(2026, 5, 4, 16, 0, tzinfo=timezone.utc)
    return [
        Transaction(transaction_id=f"t{index:04d}", user_id="u1", merchant="KROGER #512", amount_usd="12.00",
                    mcc="5411", timestamp=start + timedelta(minutes=index))
        for index in range(count)
    ]


@one_server
def test_results_maxlen_trims_oldest(cli_env, keys, redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        Producer(client, keys, max_backlog=None).publish_many(purchases(400))

        completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                                "--workers", "1", "--batch-size", "50", "--results-maxlen", "10"], cli_env)
        stats = json.loads(completed.stdout.strip().splitlines()[-1])
        remaining_ids = [json.loads(fields["data"])["transaction_id"] for _, fields in client.xrange(keys.results())]
    finally:
        client.close()

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert stats["results"] == 400
    # MAXLEN ~ trims whole stream nodes, so more than 10 may stay, but never fewer.
    assert 10 <= len(remaining_ids) < 400
    assert "t0000" not in remaining_ids
    assert remaining_ids[-1] == "t0399"


@one_server
@pytest.mark.parametrize("value", ["0", "-5", "ten"])
def test_results_maxlen_invalid_exit_two(cli_env, keys, value):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--results-maxlen", value], cli_env)

    assert completed.returncode == 2
    assert "--results-maxlen" in completed.stderr


@one_server
def test_results_maxlen_help(cli_env):
    completed = invoke_cli(["consume", "--help"], cli_env)
    text = " ".join(completed.stdout.replace("│", " ").split())

    assert completed.returncode == 0
    assert "--results-maxlen" in text
    assert "trimmed, oldest first" in text
    assert "`replay --compare` and `report` read the results stream" in text
