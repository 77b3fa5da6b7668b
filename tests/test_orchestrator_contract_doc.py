"""The example server of docs/orchestrator-contract.md, run as written against `rewardpilot consume`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx
import pytest

from conftest import ROOT, free_port, invoke_cli, one_server
from consumer.dlq import list_dead_letters

DOC = ROOT / "docs" / "orchestrator-contract.md"
API_KEY = "doc-example-key-7c2"


def example_code() -> str:
    """Return the python code block under the doc's "A minimal orchestrator" heading."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## A minimal orchestrator\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python code block under '## A minimal orchestrator' in {DOC}"
    return match.group(1)


@pytest.fixture
def example_server(tmp_path):
    """Start the doc's server as `python flat_orchestrator.py PORT`, with ORCHESTRATOR_API_KEY set."""
    script = tmp_path / "flat_orchestrator.py"
    script.write_text(example_code(), encoding="utf-8")
    port = free_port()
    env = {"ORCHESTRATOR_API_KEY": API_KEY, "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, str(script), str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # at most about 10 s
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"the doc's example server did not respond on {url}")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_example_checks_api_key(example_server):
    body = {"transaction_id": "t-1", "user_id": "u-1", "merchant": "CVS", "amount_usd": 17.23}

    without_key = httpx.post(f"{example_server}/recommend", json=body, timeout=5.0)
    with_key = httpx.post(f"{example_server}/recommend", json=body, timeout=5.0,
                          headers={"Authorization": f"Bearer {API_KEY}"})

    assert without_key.status_code == 401
    assert with_key.status_code == 200
    assert with_key.json()["rewards"]["cash_value"] == 0.34


def test_example_batch_item_error(example_server):
    body = {"transactions": [{"transaction_id": "t-1", "amount_usd": 5}, {"transaction_id": "t-2"}]}

    answer = httpx.post(f"{example_server}/recommend/batch", json=body, timeout=5.0,
                        headers={"Authorization": f"Bearer {API_KEY}"}).json()

    assert [result["index"] for result in answer["results"]] == [0, 1]
    assert answer["results"][0]["ok"] is True
    assert answer["results"][1]["ok"] is False
    assert answer["results"][1]["error"]["type"] == "invalid_transaction"


@one_server
def test_example_serves_consume(example_server, cli_env, keys, sync_client, tmp_path):
    rows = (ROOT / "examples" / "transactions.csv").read_text(encoding="utf-8").splitlines()[:41]
    source = tmp_path / "transactions.csv"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    env = dict(cli_env, ORCHESTRATOR_API_KEY=API_KEY)

    published = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], env)
    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                           "--orchestrator", example_server], env)

    assert published.returncode == 0, published.stderr
    assert consumed.returncode == 0, consumed.stderr
    discovered = [json.loads(line) for line in consumed.stderr.splitlines() if "orchestrator discovered" in line]
    assert discovered and discovered[0]["batch"] is True
    assert sync_client.xlen(keys.results()) == 40
    assert list(list_dead_letters(sync_client, keys)) == []

    _, fields = sync_client.xrange(keys.results(), count=1)[0]
    first = json.loads(fields["data"])
    assert first["transaction_id"] == "ex-000001"
    assert first["recommended_card"]["card_id"] == "flat-2"
    assert first["rewards"]["cash_value_usd"] == "0.34"
    assert first["rewards"]["effective_rate"] == "0.0197"
    assert first["recommender"] == "http"
