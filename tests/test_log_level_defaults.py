"""`replay` and `trim` log from WARNING up unless --log-level or RP_LOG_LEVEL sets a lower level, as `run` does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import one_server, run_cli
from producer import Producer
from rewardpilot.models import Transaction


def without_log_level(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    env.pop("RP_LOG_LEVEL", None)
    return env


def info_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if '"level": "info"' in line]


@pytest.fixture
def old_entries(sync_client, keys):
    """Two transactions with stream ids from 1970, so any age given to trim covers them, read by a group."""
    for number in (1, 2):
        sync_client.xadd(keys.transactions, {"placeholder": str(number)}, id=f"{number}-0")
    sync_client.xgroup_create(keys.transactions, "g", id="$")  # trim keeps everything of a stream no group read


@pytest.fixture
def published(sync_client, keys):
    Producer(sync_client, keys, max_backlog=None).publish(
        Transaction(transaction_id="q1", user_id="u1", merchant="Shell", amount_usd=Decimal("40.00")))


@one_server
def test_trim_quiet_by_default(cli_env, keys, old_entries):
    completed = run_cli(["--prefix", keys.prefix, "trim", "--older-than", "1d", "--dry-run"],
                        without_log_level(cli_env), timeout=60)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "would remove 2 entries" in completed.stdout
    assert info_lines(completed.stderr) == []


@one_server
def test_trim_log_level_info(cli_env, keys, old_entries):
    completed = run_cli(["--prefix", keys.prefix, "--log-level", "INFO", "trim", "--older-than", "1d", "--dry-run"],
                        without_log_level(cli_env), timeout=60)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert any("stream trim planned" in line for line in info_lines(completed.stderr))


@one_server
def test_replay_quiet_by_default(cli_env, keys, published):
    completed = run_cli(["--prefix", keys.prefix, "replay", "--start", "0-0", "--run", "again"],
                        without_log_level(cli_env), timeout=120)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "run again: 1 new result, 0 dead letters" in completed.stdout
    assert info_lines(completed.stderr) == []


@one_server
def test_replay_env_level_info(cli_env, keys, published):
    env = dict(cli_env, RP_LOG_LEVEL="info")

    completed = run_cli(["--prefix", keys.prefix, "replay", "--start", "0-0", "--run", "again"], env, timeout=120)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert any("consumer started" in line for line in info_lines(completed.stderr))
