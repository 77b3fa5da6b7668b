"""An orchestrator URL with a bad host or port is rejected up front, with its password masked.

``consume`` and ``replay`` exit 2 with an ``error:`` line (a JSON object
with ``--json``), as for a URL with the wrong scheme, and never reach the
HTTP client, whose errors for such a URL are a traceback.
"""

from __future__ import annotations

import json

import pytest

from conftest import invoke_cli, one_server
from consumer.recommenders.factory import check_orchestrator_url, make_recommender
from consumer.recommenders.http import HttpRecommender
from consumer.recommenders.mcp import McpRecommender

PASSWORD = "UrlPW-9"


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:notaport", "the port 'notaport' is not a number from 1 to 65535"),
    ("http://127.0.0.1:99999", "the port '99999' is not a number from 1 to 65535"),
    ("http://127.0.0.1:0", "the port '0' is not a number from 1 to 65535"),
    ("http://127.0.0.1:-1", "the port '-1' is not a number from 1 to 65535"),
    ("http://127.0.0.1:+80", "the port '+80' is not a number from 1 to 65535"),
    ("http://127.0.0.1:\u0668\u0660", "the port '\u0668\u0660' is not a number"),  # Arabic-Indic digits
    ("http://[::1]:70000/mcp", "the port '70000' is not a number from 1 to 65535"),
    ("mcp+http://127.0.0.1:99999/tools", "the port '99999' is not a number from 1 to 65535"),
    ("mcp+http://", "it has no host"),
    ("http://exa mple.com", "the host 'exa mple.com' contains a space"),
    ("http://[::1:8080", "Invalid IPv6 URL"),
    ("ftp://127.0.0.1:1", "the scheme must be http or https, not 'ftp'"),
    ("notaurl", "it has no scheme"),
])
def test_bad_url_rejected_by_factory(url, reason):
    with pytest.raises(ValueError) as raised:
        make_recommender(url)

    message = str(raised.value)
    assert message.startswith("orchestrator URL ")
    assert f"is invalid: {reason}" in message
    assert "use http(s)://host[:port]" in message


@pytest.mark.parametrize("url", [
    f"http://alice:{PASSWORD}@127.0.0.1:notaport",
    f"mcp+http://alice:{PASSWORD}@127.0.0.1:99999/mcp",
    f"http://alice:{PASSWORD}@[::1:8080",
])
def test_bad_url_error_masks_password(url):
    with pytest.raises(ValueError) as raised:
        make_recommender(url)

    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.0.0.1:65535", "http://127.0.0.1:1",
                                 "http://127.0.0.1:", "https://[::1]:8443/api", "http://orchestrator.internal"])
def test_good_url_accepted(url):
    assert check_orchestrator_url(url).hostname


@pytest.mark.parametrize("recommender", [HttpRecommender, McpRecommender])
def test_recommender_rejects_bad_port(recommender):
    with pytest.raises(ValueError, match="the port '99999' is not a number from 1 to 65535"):
        recommender("http://127.0.0.1:99999")


def flat(text: str) -> str:
    return " ".join(text.split())


@one_server
@pytest.mark.parametrize("command", [["consume", "--drain"], ["replay", "--start", "0", "--run", "bad-url"]])
@pytest.mark.parametrize("url", [f"http://alice:{PASSWORD}@127.0.0.1:notaport", "http://127.0.0.1:99999"])
def test_cli_bad_port_exits_two(cli_env, keys, command, url):
    completed = invoke_cli(["--prefix", keys.prefix, *command, "--orchestrator", url], cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "error: orchestrator URL" in flat(completed.stderr)
    assert "is not a number from 1 to 65535" in flat(completed.stderr)
    assert "Traceback" not in completed.stderr
    assert PASSWORD not in completed.stdout + completed.stderr


@one_server
def test_cli_bad_port_from_environment(cli_env, keys):
    env = {**cli_env, "ORCHESTRATOR_URL": "http://127.0.0.1:99999"}

    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain"], env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "orchestrator URL 'http://127.0.0.1:99999' is invalid" in flat(completed.stderr)
    assert "Traceback" not in completed.stderr


@one_server
def test_cli_bad_port_json_error(cli_env, keys):
    url = f"http://alice:{PASSWORD}@127.0.0.1:notaport"

    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", "0", "--run", "bad-url", "--orchestrator",
                            url, "--json"], cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    error = json.loads(completed.stdout)
    assert error["exit_code"] == 2
    assert error["error"].startswith("orchestrator URL 'http://alice:***@127.0.0.1:notaport' is invalid")
    assert PASSWORD not in completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
