"""Pick the recommender for ``--orchestrator URL`` (or ``ORCHESTRATOR_URL``).

The rule, in order:

* no URL: ``InProcessRecommender``, the rules engine in this process;
* ``mcp+http://`` or ``mcp+https://``: ``McpRecommender`` on the URL without ``mcp+``;
* ``http://`` or ``https://`` whose path ends in ``/mcp``: ``McpRecommender``;
* any other ``http://`` or ``https://`` URL: ``HttpRecommender`` on the REST contract.

Anything else raises ``ValueError``.
"""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import urlsplit

from consumer.recommenders.base import Recommender
from rewardpilot.connection import redact

MCP_SCHEME_PREFIX = "mcp+"


def make_recommender(url: str | None, **options: Any) -> Recommender:
    """Return the recommender for ``url``.

    ``options`` are passed to the chosen recommender's constructor. Options
    it does not take are left out, so one set of settings (``api_key``,
    ``timeout``, ``concurrency``, ...) serves every kind.
    """
    if not url or not url.strip():
        from consumer.recommenders.in_process import InProcessRecommender

        return _build(InProcessRecommender, options)

    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()

    if scheme.startswith(MCP_SCHEME_PREFIX) and scheme[len(MCP_SCHEME_PREFIX) :] in ("http", "https"):
        from consumer.recommenders.mcp import McpRecommender

        return _build(McpRecommender, options, url[len(MCP_SCHEME_PREFIX) :])

    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"orchestrator URL {redact(url)!r} is invalid: use http(s)://host[:port] for the REST "
            "contract, http(s)://host[:port]/mcp or mcp+http(s)://... for an MCP server, "
            "or no URL for the in-process engine"
        )

    if parts.path.rstrip("/").endswith("/mcp"):
        from consumer.recommenders.mcp import McpRecommender

        return _build(McpRecommender, options, url)

    from consumer.recommenders.http import HttpRecommender

    return _build(HttpRecommender, options, url)


def _build(cls: type, options: dict[str, Any], *args: Any) -> Recommender:
    accepted = inspect.signature(cls).parameters
    return cls(*args, **{name: value for name, value in options.items() if name in accepted})
