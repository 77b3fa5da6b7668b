"""``rewardpilot orchestrator`` writes only JSON lines on a stderr that is not a terminal.

uvicorn's own lines (start, stop, access log) and the traceback of an
error in a request go through the product's structlog set-up, so a log
collector that parses each line as JSON reads all of them. Each server is
a real process on 127.0.0.1 with stderr sent to a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from conftest import ROOT, free_port

FAILING_PATH = "/fail-for-log-test"
FAILURE_TEXT = "RuntimeError: failed on purpose for the log test"

# Runs serve() as the CLI does, on an app with one more route that raises, so the
# server has an unhandled exception to log.
SERVE_WITH_FAILING_ROUTE = textwrap.dedent(f"""
    import sys

    from rewardpilot import logs
    from rewardpilot.orchestrator import server

    build_app = server.create_app

    def create_app_with_failing_route(**options):
        app = build_app(**options)

        @app.get("{FAILING_PATH}")
        async def fail():
            raise RuntimeError("failed on purpose for the log test")

        return app

    server.create_app = create_app_with_failing_route
    logs.configure("INFO")
    server.serve("127.0.0.1", int(sys.argv[1]), api_key="")
""")


def orchestrator_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, RP_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    for name in ("REDIS_URL", "ORCHESTRATOR_API_KEY", "RP_LOG_LEVEL"):
        env.pop(name, None)
    return env


def run_until_stopped(args: list[str], tmp_path: Path, probe) -> str:
    """Start ``args`` with stderr in a file, call ``probe(url)`` once /health responds, stop it with SIGTERM, return stderr."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen([*args, str(port)], env=orchestrator_env(tmp_path), cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        for _ in range(600):  # at most about 30 s
            assert process.poll() is None, stderr_path.read_text(encoding="utf-8")[-2000:]
            try:
                httpx.get(f"{url}/health", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.05)  # not listening yet
        probe(url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return stderr_path.read_text(encoding="utf-8")


def parse_lines(text: str) -> list[dict]:
    """Parse every non-empty line as a JSON object, failing on the first that is not one."""
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"stderr line {number} is not JSON: {line!r}") from None
        assert isinstance(event, dict), f"stderr line {number} is not a JSON object: {line!r}"
        events.append(event)
    return events


def test_orchestrator_stderr_all_json(tmp_path):
    statuses = []

    def probe(url: str) -> None:
        statuses.append(httpx.post(f"{url}/recommend", content=b"xx{", timeout=10,
                                   headers={"Content-Type": "application/json"}).status_code)
        statuses.append(httpx.get(f"{url}/cards", timeout=10).status_code)

    stderr = run_until_stopped([sys.executable, "-m", "rewardpilot.cli", "orchestrator", "--no-wallets", "--port"],
                               tmp_path, probe)

    assert statuses == [422, 200]
    events = parse_lines(stderr)
    texts = [event["event"] for event in events]
    assert any(text.startswith("Started server process") for text in texts), texts
    assert "Application startup complete." in texts
    assert "orchestrator started" in texts
    assert any(text.startswith("Finished server process") for text in texts), texts
    uvicorn_events = [event for event in events if event.get("logger") == "uvicorn.error"]
    assert uvicorn_events
    assert all(event["level"] == "info" and event["timestamp"] for event in uvicorn_events)
    access = [event for event in events if event.get("logger") == "uvicorn.access"]
    assert {(event["method"], event["path"], event["status"]) for event in access} >= {
        ("POST", "/recommend", 422), ("GET", "/cards", 200),
    }


def test_request_exception_inside_json(tmp_path):
    script = tmp_path / "serve_with_failing_route.py"
    script.write_text(SERVE_WITH_FAILING_ROUTE, encoding="utf-8")
    statuses = []

    def probe(url: str) -> None:
        statuses.append(httpx.get(f"{url}{FAILING_PATH}", timeout=10).status_code)

    stderr = run_until_stopped([sys.executable, str(script)], tmp_path, probe)

    assert statuses == [500]
    events = parse_lines(stderr)
    failures = [event for event in events if event["event"] == "Exception in ASGI application"]
    assert len(failures) == 1, [event["event"] for event in events]
    assert failures[0]["level"] == "error"
    assert failures[0]["logger"] == "uvicorn.error"
    assert "Traceback (most recent call last)" in failures[0]["exception"]
    assert FAILURE_TEXT in failures[0]["exception"]
