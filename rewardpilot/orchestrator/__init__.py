"""The orchestrator: the rules engine served over HTTP (REST and MCP) with a request budget.

    from rewardpilot.orchestrator import create_app
    app = create_app(api_key="...")
"""

from rewardpilot.orchestrator.app import create_app
from rewardpilot.orchestrator.server import serve

__all__ = ["create_app", "serve"]
