"""Imported as a library, rewardpilot logs through stdlib ``logging`` and leaves the host's configuration alone.

Each case runs in a fresh interpreter, because ``logs.configure()`` (which the
CLI and some tests call) switches a process to structlog output for good.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import structlog.testing

from conftest import ROOT
from rewardpilot import logs


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


HOST_SETUP = """
    import io
    import logging

    import structlog

    buffer = io.StringIO()
    logging.basicConfig(level=logging.INFO, stream=buffer, format="HOST %(levelname)s %(name)s %(message)s")
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger,
                        processors=[structlog.processors.KeyValueRenderer()])
    factory_before = structlog.get_config()["logger_factory"]
    app_log = structlog.get_logger("myapp")
"""


def test_import_keeps_host_structlog():
    completed = run_python(HOST_SETUP + """
    app_log.info("before")
    import consumer.pool, rewardpilot.results, rewardpilot.replay, rewardpilot.run_lock  # modules that log
    app_log.info("after")
    print(structlog.get_config()["logger_factory"] is factory_before)
    print(buffer.getvalue(), end="")
    """)

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1:] == ["HOST INFO myapp event='before'", "HOST INFO myapp event='after'"]
    assert completed.stderr == ""


def test_lines_reach_host_handler():
    completed = run_python(HOST_SETUP + """
    from rewardpilot.logs import get_logger

    get_logger("consumer", consumer="c-1").info("consumer started", workers=2)
    get_logger("rewardpilot.orchestrator").warning("port in use", port=8080)
    get_logger().error("bare")
    print(buffer.getvalue(), end="")
    """)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "HOST INFO rewardpilot.consumer consumer started consumer='c-1' workers=2",
        "HOST WARNING rewardpilot.orchestrator port in use port=8080",
        "HOST ERROR rewardpilot bare",
    ]
    assert completed.stderr == ""


def test_host_levels_apply():
    completed = run_python(HOST_SETUP + """
    import logging
    from rewardpilot.logs import get_logger

    log = get_logger("results")
    logging.getLogger("rewardpilot").setLevel(logging.WARNING)
    log.info("dropped by the host's level")
    log.debug("dropped too")
    log.warning("kept", stream="s")
    logging.getLogger("rewardpilot.results").setLevel(logging.DEBUG)
    log.debug("now kept")
    print(buffer.getvalue(), end="")
    """)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "HOST WARNING rewardpilot.results kept stream='s'",
        "HOST DEBUG rewardpilot.results now kept",
    ]


def test_exception_goes_to_formatter():
    completed = run_python(HOST_SETUP + """
    from rewardpilot.logs import get_logger

    try:
        {}["missing"]
    except KeyError:
        get_logger("consumer").exception("batch failed", entry_id="1-0")
    print(buffer.getvalue(), end="")
    """)

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "HOST ERROR rewardpilot.consumer batch failed entry_id='1-0'"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "KeyError: 'missing'"


def test_no_handler_warnings_on_stderr():
    """With no logging set up at all, Python's last-resort handler prints WARNING and above, never on stdout."""
    completed = run_python("""
    from rewardpilot.logs import get_logger

    log = get_logger("results")
    log.info("not shown")
    log.warning("Redis unreachable; reconnecting", attempts=1)
    """)

    assert completed.returncode == 0
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == ["Redis unreachable; reconnecting attempts=1"]


def test_configure_gives_cli_json():
    """After logs.configure(), as the CLI calls it, a logger made at import time prints the CLI's JSON lines."""
    completed = run_python("""
    import logging
    from rewardpilot import logs

    log = logs.get_logger("results", stream="s")
    logs.configure("INFO", json=True)
    log.info("reconnected to Redis", attempts=3)
    log.debug("below the level")
    print(logging.getLogger("rewardpilot").handlers)
    """)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
    [line] = completed.stderr.splitlines()
    event = json.loads(line)
    assert set(event) == {"event", "level", "timestamp", "stream", "attempts"}
    assert event["event"] == "reconnected to Redis"
    assert event["level"] == "info"
    assert event["timestamp"].endswith("Z")


def test_capture_logs_sees_library_lines():
    """structlog.testing.capture_logs() captures rewardpilot's events, in library mode or after configure()."""
    log = logs.get_logger("consumer", consumer="c-1")

    with structlog.testing.capture_logs() as captured:
        log.warning("recommender failing", entries=3)

    assert captured == [{"consumer": "c-1", "entries": 3, "event": "recommender failing", "log_level": "warning"}]


def test_stdlib_names_under_rewardpilot():
    assert logs.stdlib_logger_name(None) == "rewardpilot"
    assert logs.stdlib_logger_name("rewardpilot") == "rewardpilot"
    assert logs.stdlib_logger_name("results") == "rewardpilot.results"
    assert logs.stdlib_logger_name("consumer.breaker") == "rewardpilot.consumer.breaker"
    assert logs.stdlib_logger_name("rewardpilot.orchestrator") == "rewardpilot.orchestrator"
    assert logs.stdlib_logger_name("rewardpilotx") == "rewardpilot.rewardpilotx"


def test_bind_adds_context():
    log = logs.get_logger("transport", consumer="c-1").bind(partition=3)

    with structlog.testing.capture_logs() as captured:
        log.info("lease taken")

    assert captured[0]["consumer"] == "c-1"
    assert captured[0]["partition"] == 3
