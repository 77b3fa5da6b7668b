"""Redis URLs in messages and logs: no password in clear, and a clear message when one is missing."""

from __future__ import annotations

import os

import pytest

from conftest import ROOT, ValkeyProcess, free_port, run_cli
from rewardpilot.connection import check_url, password_given, redact

SECRET = "QS3cr3t"


@pytest.mark.parametrize(("url", "expected"), [
    (f"redis://127.0.0.1:16391/0?password={SECRET}", "redis://127.0.0.1:16391/0?password=***"),
    (f"redis://app:{SECRET}@127.0.0.1:6379/0", "redis://app:***@127.0.0.1:6379/0"),
    (f"redis://:{SECRET}@[::1]:6379/0?db=2&ssl_password={SECRET}", "redis://:***@[::1]:6379/0?db=2&ssl_password=***"),
    (f"unix:///tmp/redis.sock?password={SECRET}&db=1", "unix:///tmp/redis.sock?password=***&db=1"),
    (f"http://127.0.0.1:8080/mcp?api_key={SECRET}#top", "http://127.0.0.1:8080/mcp?api_key=***#top"),
    ("redis://app@127.0.0.1:6379/0?username=app", "redis://app@127.0.0.1:6379/0?username=app"),
])
def test_redact_masks_passwords(url, expected):
    assert redact(url) == expected


def test_password_given_sources(monkeypatch):
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    assert not password_given("redis://127.0.0.1:6379/0")
    assert password_given(f"redis://:{SECRET}@127.0.0.1:6379/0")
    assert password_given(f"redis://127.0.0.1:6379/0?password={SECRET}")
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    assert password_given("redis://127.0.0.1:6379/0")


def cli_env(tmp_path, url: str, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "REDIS_PASSWORD"}
    env.update(REDIS_URL=url, RP_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), COLUMNS="1000", **extra)
    return env


def test_unreachable_url_printed_without_password(tmp_path):
    env = cli_env(tmp_path, f"redis://127.0.0.1:{free_port()}/0?password={SECRET}")

    status = run_cli(["status"], env, timeout=60)
    consume = run_cli(["consume", "--drain", "--startup-timeout", "0.5"], env, timeout=60)

    for completed in (status, consume):
        assert completed.returncode == 2
        assert SECRET not in completed.stderr
        assert SECRET not in completed.stdout
        assert "?password=***" in completed.stderr
    assert "Redis not reachable yet" in consume.stderr  # the log line that carries the URL


@pytest.fixture
def server(tmp_path):
    valkey = ValkeyProcess(tmp_path / "valkey", password=SECRET)
    valkey.start()
    yield valkey
    valkey.stop()


def test_missing_password_message(server, tmp_path):
    completed = run_cli(["status"], cli_env(tmp_path, f"redis://127.0.0.1:{server.port}/0"), timeout=60)

    message = " ".join(completed.stderr.split())
    assert completed.returncode == 2
    assert "requires a password, and none was given" in message
    assert "set REDIS_PASSWORD" in message
    assert "rejected the password" not in message


def test_wrong_password_message(server, tmp_path):
    env = cli_env(tmp_path, f"redis://127.0.0.1:{server.port}/0", REDIS_PASSWORD=f"wrong-{SECRET}")

    completed = run_cli(["status"], env, timeout=60)

    message = " ".join(completed.stderr.split())
    assert completed.returncode == 2
    assert "rejected the password" in message
    assert SECRET not in completed.stderr


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/abc",
    "redis://127.0.0.1:6379/9abc",
    "redis://:s3cret@127.0.0.1:6379/nine",
    "redis://127.0.0.1:6379?db=x",
])
def test_database_not_a_number_rejected(url):
    with pytest.raises(ValueError) as raised:
        check_url(url)

    assert "is not a number; write it like redis://127.0.0.1:6379/0" in str(raised.value)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/9", "redis://127.0.0.1:6379/", "redis://127.0.0.1:6379",
                                 "rediss://h:6380/0?db=3", "unix:///tmp/redis.sock?db=2"])
def test_database_number_accepted(url):
    check_url(url)


def test_cli_database_typo_exits(tmp_path):
    completed = run_cli(["--redis-url", "redis://127.0.0.1:6379/9abc", "status", "--json"],
                        {**os.environ, "RP_HOME": str(tmp_path / "home")})

    assert completed.returncode == 2
    assert "database '9abc' is not a number" in " ".join((completed.stdout + completed.stderr).split())


@pytest.mark.parametrize(("url", "expected"), [
    (f"default:{SECRET}@127.0.0.1:6379", "default:***@127.0.0.1:6379"),
    (f"redis:/default:{SECRET}@127.0.0.1:6379/0", "redis:/***@127.0.0.1:6379/0"),
    (f"redis:default:{SECRET}@127.0.0.1:6379", "redis:***@127.0.0.1:6379"),
    (f"redis:127.0.0.1?password={SECRET}", "redis:127.0.0.1?password=***"),
])
def test_redact_url_without_slashes(url, expected):
    assert redact(url) == expected


@pytest.mark.parametrize(("url", "reason"), [
    (f"default:{SECRET}@127.0.0.1:6379", "it must start with redis://"),
    (f"redis:/default:{SECRET}@127.0.0.1:6379/0", "redis: must be followed by //"),
    (f"redis:default:{SECRET}@127.0.0.1:6379", "redis: must be followed by //"),
    (f" redis://:{SECRET}@127.0.0.1:6379/0", "white space"),
    (f"redis://:{SECRET}@127.0.0.1:6379/0?socket_timeout=abc", "Invalid value for 'socket_timeout'"),
    (f"redis://:{SECRET}@127.0.0.1:6379/0?ssl_cert_reqs=none", "unknown option 'ssl_cert_reqs'"),
    (f"rediss://:{SECRET}@127.0.0.1:6379/0?ssl_cert_reqs=bogus", "Invalid SSL Certificate Requirements Flag"),
])
def test_malformed_url_rejected_without_password(url, reason):
    with pytest.raises(ValueError) as raised:
        check_url(url)

    assert reason in str(raised.value)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("url", [
    f"redis:/default:{SECRET}@127.0.0.1:6379/0",
    f"redis://:{SECRET}@127.0.0.1:6379/0?socket_timeout=abc",
])
def test_cli_malformed_url_json_error(url, tmp_path):
    """--json prints the error object, exit code 2, no traceback and no password."""
    completed = run_cli(["status", "--json"], {**os.environ, "RP_HOME": str(tmp_path / "home"), "REDIS_URL": url})

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert '"exit_code": 2' in completed.stdout
    assert "Traceback" not in completed.stderr
    assert SECRET not in completed.stdout + completed.stderr
