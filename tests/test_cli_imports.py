"""Start-up imports of the ``rewardpilot`` CLI.

Every command runs ``rewardpilot/cli/main.py``, which registers all subcommands.
The server stack (FastAPI, uvicorn, the MCP SDK), the consumer pool and the
producer are imported inside the commands that use them, so that ``--help``,
``cards``, ``status`` or ``wallet show`` do not pay for them. Each check runs in a fresh
interpreter, because this test process has imported most of them already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, one_server

# Modules that `--help`, `COMMAND --help` and `cards` do not need. redis-py is needed only by
# commands that talk to Redis, and the rest only by `orchestrator`, `consume`, `run`, `replay`
# and `publish`.
HEAVY_MODULES = [
    "redis",
    "fastapi",
    "starlette",
    "uvicorn",
    "mcp",
    "rewardpilot.orchestrator.app",
    "consumer.pool",
    "consumer.build",
    "producer",
]

# Source run in a child interpreter. argv[1] is a JSON object with the statement to execute
# and the module names to look for. The last line printed is a JSON object with the names
# found in sys.modules and the exit code.
PROBE = """
import json, sys

request = json.loads(sys.argv[1])
exit_code = None
try:
    exec(request["statement"])
except SystemExit as exc:
    exit_code = exc.code
loaded = [name for name in request["modules"] if name in sys.modules]
print(json.dumps({"loaded": loaded, "exit_code": exit_code}))
"""


def child_env(tmp_path, columns: int = 120) -> dict[str, str]:
    """Return a minimal environment: this checkout first on the path and no REDIS_URL."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "RP_HOME": str(tmp_path / "home"),
        "COLUMNS": str(columns),
    }


def probe(statement: str, tmp_path, redis_url: str | None = None) -> dict:
    """Execute ``statement`` in a fresh interpreter and report which HEAVY_MODULES it imported."""
    request = json.dumps({"statement": statement, "modules": HEAVY_MODULES})
    env = child_env(tmp_path)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, request], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_probe_detects_heavy_modules(tmp_path):
    """Check the probe itself, so that an empty list in the other tests is meaningful."""
    found = probe("import rewardpilot.orchestrator.server, consumer.build, producer", tmp_path)
    assert found["loaded"] == HEAVY_MODULES


def test_importing_cli_app_skips_heavy_modules(tmp_path):
    found = probe("import rewardpilot.cli.main", tmp_path)
    assert found["loaded"] == []


@pytest.mark.parametrize("args", [
    ["--help"],
    ["status", "--help"],
    ["orchestrator", "--help"],
    ["consume", "--help"],
    ["run", "--help"],
    ["publish", "--help"],
    ["cards"],
    ["cards", "--json"],
])
def test_cli_command_skips_heavy_modules(args, tmp_path):
    statement = f"from rewardpilot.cli.main import app; app({args!r}, prog_name='rewardpilot')"
    found = probe(statement, tmp_path)
    assert found["exit_code"] == 0
    assert found["loaded"] == []


@one_server
@pytest.mark.parametrize("args", [["status", "--json"], ["wallet", "show", "--json"]])
def test_redis_command_skips_server_stack(args, redis_url, keys, tmp_path):
    """Commands that only read Redis import redis-py and none of the other heavy modules."""
    command = ["--prefix", keys.prefix, *args]
    statement = f"from rewardpilot.cli.main import app; app({command!r}, prog_name='rewardpilot')"
    found = probe(statement, tmp_path, redis_url=redis_url)
    assert found["exit_code"] == 0
    assert found["loaded"] == ["redis"]


def test_orchestrator_help_shows_body_limit_default(tmp_path):
    """Check that --help shows the --max-body-bytes default the app enforces."""
    completed = subprocess.run(
        [sys.executable, "-m", "rewardpilot.cli", "orchestrator", "--help"],
        env=child_env(tmp_path, columns=200), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    from rewardpilot.orchestrator.app import DEFAULT_MAX_BODY_BYTES

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "--max-body-bytes" in completed.stdout
    assert f"default: {DEFAULT_MAX_BODY_BYTES}" in completed.stdout


def test_orchestrator_blank_api_key_exit_two(tmp_path):
    env = child_env(tmp_path, columns=200)
    env["ORCHESTRATOR_API_KEY"] = "   "

    completed = subprocess.run(
        [sys.executable, "-m", "rewardpilot.cli", "orchestrator", "--port", "1", "--no-wallets"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )

    assert completed.returncode == 2
    assert "ORCHESTRATOR_API_KEY is set to blanks only" in " ".join(completed.stderr.split())
