"""Invalid CLI option values: exit 2 up front, naming the value, where it came from and the accepted values."""

from __future__ import annotations

import json

import pytest

from conftest import invoke_cli, one_server
from consumer.build import CallOptions
from consumer.errors import InvalidRateLimitError
from rewardpilot.cli.status_cmd import _render
from rewardpilot.logs import InvalidLogLevelError, parse_level
from rewardpilot.streams import StreamKeys


def one_line(text: str) -> str:
    """Join the lines rich wrapped at the console width, so a message can be matched whole."""
    return " ".join(text.split())


def without_log_level(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    env.pop("RP_LOG_LEVEL", None)
    return env


# Log level.

def test_parse_level_any_case():
    assert parse_level("debug") == 10
    assert parse_level("Warning") == 30
    assert parse_level("CRITICAL") == 50


def test_parse_level_rejects_unknown():
    with pytest.raises(InvalidLogLevelError) as raised:
        parse_level("LOUD")

    message = str(raised.value)
    assert "'LOUD'" in message
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in message


@one_server
def test_log_level_option_invalid(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "--log-level", "LOUD", "status"], without_log_level(cli_env))
    stderr = one_line(completed.stderr)

    assert completed.returncode == 2
    assert "--log-level: invalid log level 'LOUD'" in stderr
    assert "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in stderr
    assert completed.stdout == ""  # rejected before status printed anything


@one_server
def test_log_level_env_invalid(cli_env, keys):
    env = dict(cli_env, RP_LOG_LEVEL="LOUD")
    completed = invoke_cli(["--prefix", keys.prefix, "status"], env)
    stderr = one_line(completed.stderr)

    assert completed.returncode == 2
    assert "RP_LOG_LEVEL: invalid log level 'LOUD'" in stderr
    assert "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in stderr
    assert "--log-level:" not in stderr
    assert completed.stdout == ""


@one_server
def test_log_level_option_overrides_env(cli_env, keys):
    env = dict(cli_env, RP_LOG_LEVEL="LOUD")
    completed = invoke_cli(["--prefix", keys.prefix, "--log-level", "debug", "status"], env)

    assert completed.returncode == 0, completed.stderr[-2000:]


@one_server
def test_log_level_lowercase_accepted(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "--log-level", "warning", "status"], without_log_level(cli_env))

    assert completed.returncode == 0, completed.stderr[-2000:]


# Counting mode of the rate limit (--count).

def test_call_options_check_without_rate():
    with pytest.raises(InvalidRateLimitError) as raised:
        CallOptions(counting="tokens").check()

    message = str(raised.value)
    assert "'tokens'" in message
    assert "requests, transactions" in message


def test_call_options_check_accepts_modes():
    CallOptions(counting="requests").check()
    CallOptions(counting="transactions", rate="10/s").check()


@one_server
@pytest.mark.parametrize("rate_args", [[], ["--rate", "10/s"]], ids=["no-rate", "rate"])
def test_consume_count_invalid(cli_env, keys, rate_args):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--count", "tokens", *rate_args],
                           cli_env)
    stderr = one_line(completed.stderr)

    assert completed.returncode == 2
    assert "--count: invalid counting mode 'tokens'" in stderr
    assert "expected one of requests, transactions" in stderr


@one_server
def test_consume_count_valid_drains(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--count", "transactions"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]


# status --job.

@one_server
def test_status_unknown_job_exits(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "status", "--job", "no-such-job"], cli_env)
    stderr = one_line(completed.stderr)

    assert completed.returncode == 2
    assert "no job 'no-such-job'" in stderr
    assert "use the job id that `rewardpilot run` printed" in stderr
    assert completed.stdout == ""


@one_server
def test_status_unknown_job_json_exits(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "status", "--job", "no-such-job", "--json"], cli_env)

    assert completed.returncode == 2
    assert json.loads(completed.stdout)["error"].startswith("no job 'no-such-job'")


@one_server
def test_status_known_job_names_job(cli_env, keys, sync_client):
    job_keys = StreamKeys(prefix=keys.prefix, job="job-1")
    sync_client.xadd(job_keys.transactions, {"data": "{}"})
    sync_client.xadd(job_keys.results(), {"data": "{}"})
    sync_client.xadd(job_keys.results(), {"data": "{}"})

    completed = invoke_cli(["--prefix", keys.prefix, "status", "--job", "job-1"], cli_env)
    stdout = one_line(completed.stdout)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "results of job job-1: 2" in stdout
    assert "results live" not in stdout


def test_render_labels_job_results():
    snapshot = {
        "transactions": {"stream": "rp:job:j1:transactions", "length": 0, "groups": []},
        "results": {"live": 7}, "dead_letters": 0, "rate_limit": None,
    }

    assert "results of job j1: 7" in str(_render(snapshot, "j1").caption)
    assert "results live: 7" in str(_render(snapshot).caption)
