"""ORCHESTRATOR_API_KEY: one check for both sides, and no key in any output, even of a failing run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest
import redis
import structlog.testing

from conftest import ROOT, free_port, one_server, run_cli
from consumer.recommenders.http import BearerAuth, HttpRecommender
from consumer.recommenders.mcp import McpRecommender
from orchestrator_servers import Scripted, ScriptedServer, UvicornThread
from producer import Producer
from rewardpilot.models import Transaction
from rewardpilot.orchestrator import create_app
from rewardpilot.orchestrator import api_key as api_key_module
from rewardpilot.orchestrator.api_key import InvalidApiKeyError, check_api_key, read_api_key

# A key no test output may contain. The tests grep every output for this marker.
LEAK = "LEAKKEY-h9-7f3a"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Let each test see the once-per-process warnings again."""
    monkeypatch.setattr(api_key_module, "_warned", set())


def assert_no_key(text: str, key: str = LEAK) -> None:
    assert key not in text
    # A part of the key is a leak too, such as the text before an embedded newline.
    assert key[:8] not in text


# The check itself


def test_trailing_crlf_stripped_with_warning():
    with structlog.testing.capture_logs() as logs:
        key = check_api_key(LEAK + "\r\n", role="consumer")

    assert key == LEAK
    (warning,) = logs
    assert warning["log_level"] == "warning"
    assert "ORCHESTRATOR_API_KEY has whitespace" in warning["event"]
    assert warning["removed_characters"] == 2
    assert warning["key_length"] == len(LEAK)
    assert_no_key(json.dumps(logs))


def test_strip_warning_logged_once():
    with structlog.testing.capture_logs() as logs:
        check_api_key(" " + LEAK, role="consumer")
        check_api_key(" " + LEAK, role="consumer")

    assert len(logs) == 1


def test_clean_key_no_warning():
    with structlog.testing.capture_logs() as logs:
        key = check_api_key(LEAK, role="orchestrator")

    assert key == LEAK
    assert logs == []


@pytest.mark.parametrize(("value", "position", "kind"), [
    (LEAK[:7] + "\n" + LEAK[7:], 8, "a line feed (LF, U+000A)"),
    (LEAK[:7] + "\r" + LEAK[7:], 8, "a carriage return (CR, U+000D)"),
    (LEAK + "\t" + LEAK, len(LEAK) + 1, "a tab (U+0009)"),
    (LEAK + "\x00", len(LEAK) + 1, "a NUL character (U+0000)"),
    (LEAK + "\x7f", len(LEAK) + 1, "a delete character (DEL, U+007F)"),
    (LEAK + "\x01", len(LEAK) + 1, "a control character (U+0001)"),
    ("  " + LEAK + "\u00e9", len(LEAK) + 3, "a non-ASCII character"),
    (LEAK + "\u00a0", len(LEAK) + 1, "a non-ASCII character"),
])
def test_bad_character_rejected(value, position, kind):
    with pytest.raises(InvalidApiKeyError) as failure:
        check_api_key(value, role="consumer")

    message = str(failure.value)
    assert message.startswith("ORCHESTRATOR_API_KEY contains an invalid character")
    assert f"at position {position} of {len(value)}: {kind}." in message
    assert "set it again" in message
    assert_no_key(message)
    assert "\u00e9" not in message


@pytest.mark.parametrize("role", ["consumer", "orchestrator"])
def test_blanks_only_rejected(role):
    with pytest.raises(InvalidApiKeyError) as failure:
        check_api_key(" \r\n", role=role)

    assert "ORCHESTRATOR_API_KEY is set to blanks only (3 whitespace characters)" in str(failure.value)


def test_empty_key_warns_auth_off_on_orchestrator():
    with structlog.testing.capture_logs() as logs:
        key = read_api_key("orchestrator", {"ORCHESTRATOR_API_KEY": ""})

    assert key is None
    (warning,) = logs
    assert warning["log_level"] == "warning"
    assert "authentication is off" in warning["event"]


def test_empty_key_silent_on_consumer():
    with structlog.testing.capture_logs() as logs:
        key = read_api_key("consumer", {"ORCHESTRATOR_API_KEY": ""})

    assert key is None
    assert logs == []


def test_unset_key_is_none():
    assert read_api_key("orchestrator", {}) is None


# The recommenders and the app


async def test_http_recommender_sends_stripped_key():
    with ScriptedServer({"/health": Scripted(200, b'{"endpoints": []}')}) as scripted:
        recommender = HttpRecommender(scripted.url, api_key=LEAK + "\r")
        try:
            await recommender.connect()
        finally:
            await recommender.aclose()

    (_, path, headers, _) = scripted.requests[0]
    assert path == "/health"
    assert headers["Authorization"] == f"Bearer {LEAK}"


@pytest.mark.parametrize("cls", [HttpRecommender, McpRecommender])
def test_recommender_rejects_bad_key(cls):
    with pytest.raises(InvalidApiKeyError) as failure:
        cls("http://127.0.0.1:9/mcp", api_key=LEAK + "\n" + LEAK)

    assert "at position" in str(failure.value)
    assert "api_key contains" in str(failure.value)
    assert_no_key(str(failure.value))


@pytest.mark.parametrize("cls", [HttpRecommender, McpRecommender])
def test_recommender_reads_environment_through_check(cls, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_API_KEY", LEAK + "\u00e9")

    with pytest.raises(InvalidApiKeyError) as failure:
        cls("http://127.0.0.1:9/mcp")

    assert "ORCHESTRATOR_API_KEY contains" in str(failure.value)


async def test_key_hidden_in_reprs():
    auth = BearerAuth(LEAK)
    sent = next(auth.auth_flow(httpx.Request("GET", "http://127.0.0.1:9/health")))
    recommender = HttpRecommender("http://127.0.0.1:9", api_key=LEAK)
    try:
        attributes = repr(vars(recommender))
    finally:
        await recommender.aclose()

    assert sent.headers["Authorization"] == f"Bearer {LEAK}"
    assert_no_key(repr(auth))
    assert_no_key(repr(sent.headers))
    assert_no_key(repr(recommender))
    assert_no_key(attributes)


def test_app_rejects_bad_key():
    with pytest.raises(InvalidApiKeyError):
        create_app(api_key=LEAK + "\n" + LEAK)


def test_app_accepts_stripped_key():
    with UvicornThread(create_app(api_key=LEAK + "\r\n")) as running:
        accepted = httpx.get(f"{running.url}/cards", headers={"Authorization": f"Bearer {LEAK}"}, timeout=10)
        rejected = httpx.get(f"{running.url}/cards", headers={"Authorization": "Bearer other"}, timeout=10)

    assert accepted.status_code == 200
    assert rejected.status_code == 401


# Whole runs of the CLI: every byte of output is searched for the key


def purchases(count: int) -> list[Transaction]:
    start = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
    return [
        Transaction(transaction_id=f"k{index:03d}", user_id=f"u{index % 2}", merchant="Whole Foods",
                    category="groceries", amount_usd=Decimal("25.00"), mcc="5411",
                    timestamp=start + timedelta(minutes=index))
        for index in range(count)
    ]


def publish(redis_url: str, keys, count: int) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        Producer(client, keys, max_backlog=None).publish_many(purchases(count))
    finally:
        client.close()


def consume(keys, env, url: str, key: str):
    return run_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--workers", "1",
                    "--orchestrator", url, "--max-attempts", "2", "--timeout", "5"],
                   dict(env, ORCHESTRATOR_API_KEY=key), timeout=120)


@pytest.fixture(scope="module")
def guarded():
    """An orchestrator that requires the key LEAK."""
    with UvicornThread(create_app(api_key=LEAK)) as running:
        yield running


@one_server
def test_consume_crlf_key_works_and_hides_key(cli_env, keys, redis_url, guarded):
    publish(redis_url, keys, 4)

    completed = consume(keys, cli_env, guarded.url, LEAK + "\r")

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1])["results"] == 4
    assert "ORCHESTRATOR_API_KEY has whitespace" in completed.stderr
    assert f'"key_length": {len(LEAK)}' in completed.stderr
    assert_no_key(completed.stdout + completed.stderr)


@one_server
@pytest.mark.parametrize(("key", "kind"), [
    (LEAK[:7] + "\n" + LEAK[7:], "a line feed (LF, U+000A)"),
    (LEAK + "\u00e9x", "a non-ASCII character"),
    (LEAK + "\x1b", "an escape character (ESC, U+001B)"),
])
def test_consume_bad_key_exit_two(cli_env, keys, redis_url, guarded, key, kind):
    publish(redis_url, keys, 2)

    completed = consume(keys, cli_env, guarded.url, key)
    output = " ".join(completed.stderr.split())

    assert completed.returncode == 2
    assert "ORCHESTRATOR_API_KEY contains an invalid character at position" in output
    assert kind in output
    assert "Traceback" not in completed.stderr
    assert_no_key(completed.stdout + completed.stderr)


@one_server
def test_consume_wrong_key_hides_both_keys(cli_env, keys, redis_url, guarded, sync_client):
    """A 401 run dead-letters every entry; neither its output nor the dead letters show a key."""
    publish(redis_url, keys, 3)
    wrong = "WRONGKEY-h9-0c1d"

    completed = consume(keys, cli_env, guarded.url, wrong)
    letters = json.dumps(sync_client.xrange(keys.dead_letters))

    assert completed.returncode == 1
    assert sync_client.xlen(keys.dead_letters) == 3
    assert "rejected this consumer's credentials" in completed.stderr
    assert_no_key(completed.stdout + completed.stderr + letters, wrong)
    assert_no_key(completed.stdout + completed.stderr + letters)


@one_server
def test_consume_bad_key_ignored_without_orchestrator(cli_env, keys, redis_url):
    """The in-process engine sends no key, so a bad one in the environment is not an error there."""
    publish(redis_url, keys, 2)
    env = dict(cli_env, ORCHESTRATOR_API_KEY=LEAK + "\n")
    env.pop("ORCHESTRATOR_URL", None)

    completed = run_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100"], env, timeout=120)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert_no_key(completed.stdout + completed.stderr)


def orchestrator_env(tmp_path, key: str) -> dict[str, str]:
    env = dict(os.environ, ORCHESTRATOR_API_KEY=key, RP_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    env.pop("REDIS_URL", None)
    return env


@pytest.mark.parametrize(("key", "kind"), [
    (LEAK + "\r" + LEAK, "a carriage return (CR, U+000D)"),
    ("\u00e9" + LEAK, "a non-ASCII character"),
])
def test_orchestrator_bad_key_exit_two(tmp_path, key, kind):
    completed = subprocess.run(
        [sys.executable, "-m", "rewardpilot.cli", "orchestrator", "--port", str(free_port()), "--no-wallets"],
        env=orchestrator_env(tmp_path, key), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    output = " ".join(completed.stderr.split())

    assert completed.returncode == 2
    assert "ORCHESTRATOR_API_KEY contains an invalid character" in output
    assert kind in output
    assert "Traceback" not in completed.stderr
    assert_no_key(completed.stdout + completed.stderr)


def serve_briefly(tmp_path, key: str, probe) -> tuple[str, str]:
    """Run ``rewardpilot orchestrator`` with ``key``, call ``probe(url)`` once it listens, and return its output."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "orchestrator", "--port", str(port), "--no-wallets"],
        env=orchestrator_env(tmp_path, key), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # up to about 30 s
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                if server.poll() is not None:
                    break
                time.sleep(0.1)
        probe(url)
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=30)
    return stdout, stderr


def test_orchestrator_crlf_key_accepts_stripped(tmp_path):
    statuses = {}

    def probe(url: str) -> None:
        statuses["right"] = httpx.get(f"{url}/cards", headers={"Authorization": f"Bearer {LEAK}"}, timeout=10).status_code
        statuses["none"] = httpx.get(f"{url}/cards", timeout=10).status_code

    stdout, stderr = serve_briefly(tmp_path, LEAK + "\r", probe)

    assert statuses == {"right": 200, "none": 401}
    assert "ORCHESTRATOR_API_KEY has whitespace" in stderr
    assert_no_key(stdout + stderr)


def test_orchestrator_empty_key_warns_auth_off(tmp_path):
    statuses = {}

    def probe(url: str) -> None:
        statuses["none"] = httpx.get(f"{url}/cards", timeout=10).status_code

    _, stderr = serve_briefly(tmp_path, "", probe)
    warnings = [json.loads(line) for line in stderr.splitlines()
                if line.startswith("{") and '"warning"' in line]

    assert statuses == {"none": 200}
    assert any("authentication is off" in warning["event"] for warning in warnings)
