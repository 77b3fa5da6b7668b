"""The orchestrator: the rules engine served over HTTP (REST and MCP) with a request budget.

    from rewardpilot.orchestrator import create_app
    app = create_app(api_key="...")

``create_app`` and ``serve`` are imported on first access because they load
FastAPI, uvicorn and the MCP SDK. ``DEFAULT_MAX_BODY_BYTES`` is defined here so
that the CLI can show it in its help text without that cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rewardpilot.orchestrator.app import create_app
    from rewardpilot.orchestrator.server import serve

DEFAULT_MAX_BODY_BYTES = 1_000_000

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from rewardpilot.orchestrator.app import create_app

        return create_app
    if name == "serve":
        from rewardpilot.orchestrator.server import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
