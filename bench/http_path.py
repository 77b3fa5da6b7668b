"""Row 6, the HTTP path: the product end to end through ``rewardpilot orchestrator`` on loopback.

Two consumer processes use the orchestrator's batch endpoint (the HTTP
recommender picks ``POST /recommend/batch`` when the service lists it).
The row runs a quarter of ``--rows`` per measurement, since its rate, not
its size, is compared with row 4's end-to-end rate with 2 processes.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import httpx

from bench.context import ROOT, BenchContext, BenchError
from bench.pipeline import ProductKit, end_to_end
from bench.server import free_port
from bench.stats import RowResult

CONSUMERS = 2
START_TIMEOUT_SECONDS = 30.0


def unavailable_reason() -> str | None:
    """Return why the HTTP path cannot run here, or None when it can."""
    for module in ("rewardpilot.orchestrator", "consumer.recommenders.factory"):
        if importlib.util.find_spec(module) is None:
            return f"not available ({module} is missing)"
    command = [sys.executable, "-m", "rewardpilot.cli", "orchestrator", "--help"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    if completed.returncode != 0:
        return "not available (the `rewardpilot orchestrator` command is missing)"
    return None


class Orchestrator:
    """``rewardpilot orchestrator`` on 127.0.0.1 and a free port, as a child process."""

    def __init__(self, ctx: BenchContext):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, REDIS_URL=ctx.url, RP_HOME=str(ctx.scratch / "home"), PYTHONPATH=str(ROOT))
        env.pop("ORCHESTRATOR_API_KEY", None)
        self._log = (ctx.scratch / "orchestrator.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rewardpilot.cli", "--prefix", ctx.prefix, "--log-level", "WARNING",
             "orchestrator", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self._log, stderr=self._log,
        )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"rewardpilot orchestrator exited with status {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise BenchError(f"rewardpilot orchestrator returned no 200 from /health within {START_TIMEOUT_SECONDS:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def measure(ctx: BenchContext) -> RowResult:
    row = RowResult(6, "product through the orchestrator (HTTP, batch endpoint)")
    reason = unavailable_reason()
    if reason:
        row.status = reason
        return row

    rows = ctx.rows if ctx.quick else max(ctx.rows // 4, 1000)
    row.notes.append(f"{rows:,} transactions per measurement, {CONSUMERS} consumer processes")
    server = Orchestrator(ctx)
    try:
        server.wait_healthy()
        kit = ProductKit(ctx, orchestrator=server.url)
        for _ in range(ctx.repeat):
            rates = end_to_end(kit, ctx.new_keys(), rows, CONSUMERS)
            row.figure(
                f"http.e2e.{CONSUMERS}", f"end to end, {CONSUMERS} process(es)", "tx/s",
                reference=f"plain.e2e.{CONSUMERS}",
            ).runs.append(rates.end_to_end)
    finally:
        server.stop()
    return row
