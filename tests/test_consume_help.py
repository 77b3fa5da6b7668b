"""``rewardpilot consume --help`` on an 80-column terminal: the exit status paragraph keeps its lines."""

from __future__ import annotations

import inspect
import os

from conftest import ROOT, run_cli
from rewardpilot.cli.consume_cmd import consume


def test_exit_status_lines_not_broken():
    docstring = inspect.getdoc(consume)
    paragraph = docstring[docstring.index("Exit status:"):].split("\n\n")[0]
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}

    completed = run_cli(["consume", "--help"], env, timeout=60)

    assert completed.returncode == 0, completed.stderr[-2000:]
    shown = {line.strip() for line in completed.stdout.splitlines()}
    for line in paragraph.splitlines():
        # A source line longer than the terminal would be wrapped, leaving a fragment on a line of its own.
        assert line.strip() in shown, line
