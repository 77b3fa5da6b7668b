"""Child processes that start, report ready, wait for a go, and report a JSON line.

Every measured process is a child of the benchmark, so its start-up (imports,
connections, loading the engine) stays out of the timed part. Protocol:
the child prints ``ready`` on stdout once set up, starts work when a line
arrives on stdin, and prints one JSON object as its last stdout line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.context import ROOT, BenchError

READY_TIMEOUT_SECONDS = 60.0


class GatedChild:
    """One ``python -m MODULE ARGS`` child; stderr goes to ``log_path``."""

    def __init__(self, module: str, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.module = module
        self.log_path = log_path
        self.report: dict | None = None  # the JSON report, once ``result`` has read it
        self._log = log_path.open("ab")
        environment = dict(os.environ)
        environment["PYTHONPATH"] = str(ROOT)
        environment.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            cwd=ROOT, env=environment, text=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        # NOTE: readline blocks; a child that hangs before printing anything
        # is caught by the test or harness timeout, not by ``timeout``.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.strip() == "ready":
                return
            if not line:
                raise BenchError(f"{self.module} exited before it was ready; {self.tail()}")
        raise BenchError(f"{self.module} was not ready within {timeout:.0f} s")

    def go(self) -> float:
        """Start the child's work; return the wall-clock time of the start."""
        started = time.time()
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return started

    def signal(self, signum: int = signal.SIGUSR1) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def check_alive(self) -> None:
        if self.process.poll() is not None and self.process.returncode != 0:
            raise BenchError(f"{self.module} exited with status {self.process.returncode}; {self.tail()}")

    def result(self, timeout: float) -> dict:
        """Wait for the child to exit and return its JSON report."""
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"{self.module} did not finish within {timeout:.0f} s; {self.tail()}") from None
        finally:
            self._log.close()
        if self.process.returncode != 0:
            raise BenchError(f"{self.module} exited with status {self.process.returncode}; {self.tail()}")
        lines = [line for line in output.splitlines() if line.strip()]
        if not lines:
            raise BenchError(f"{self.module} printed no report; {self.tail()}")
        self.report = json.loads(lines[-1])
        return self.report

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "no log"
        return f"last lines of {self.log_path}:\n" + "\n".join(text)


def start_all(children: list[GatedChild]) -> None:
    for child in children:
        child.wait_ready()


def kill_all(children: list[GatedChild]) -> None:
    for child in children:
        child.kill()


def peak_rss_kib(pid: int) -> tuple[int, int]:
    """Return ``(VmRSS, VmHWM)`` of a live process in KiB, from /proc/<pid>/status (Linux)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]
