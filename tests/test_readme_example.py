"""The README's Python API example runs as written and prints a result.

The example is taken from README.md and run as written, with RP_PREFIX set
to the test's key prefix, while a ``rewardpilot consume`` process serves the
same prefix.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import redis

from conftest import ROOT, one_server


def python_api_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def wait_for_group(url: str, stream: str, seconds: float = 30) -> bool:
    """Return True once ``stream`` has a consumer group, as a started consumer creates it."""
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if client.xinfo_groups(stream):
                    return True
            except redis.ResponseError:  # no stream yet
                pass
            time.sleep(0.1)
        return False
    finally:
        client.close()


def test_example_reads_prefix_like_cli():
    assert 'keys = StreamKeys(prefix=os.environ.get("RP_PREFIX", "rp:"))' in python_api_example()


@pytest.mark.slow
@one_server
def test_example_prints_a_result(cli_env, keys, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(python_api_example())  # as written; RP_PREFIX points it at the test's keys
    consumer = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--block-ms", "200"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_group(cli_env["REDIS_URL"], keys.transactions)
        completed = subprocess.run([sys.executable, str(script)], env={**cli_env, "RP_PREFIX": keys.prefix},
                                   cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        consumer.terminate()
        consumer.wait(timeout=30)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines() == ["t-1 Whole Foods amex-gold"]
