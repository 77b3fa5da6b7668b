"""Run the orchestrator app on uvicorn."""

from __future__ import annotations

import os

import uvicorn

from rewardpilot.orchestrator.app import DEFAULT_MAX_BODY_BYTES, create_app

API_KEY_ENV = "ORCHESTRATOR_API_KEY"


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    api_key: str | None = None,
    redis_url: str | None = None,
    prefix: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "info",
) -> None:
    """Serve the orchestrator until SIGINT or SIGTERM.

    ``api_key`` defaults to ``ORCHESTRATOR_API_KEY``; with neither set, the
    server answers without auth. uvicorn's access log records method, path
    and status only, so the key never reaches a log.
    """
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None

    app = create_app(
        api_key=api_key,
        redis_url=redis_url,
        prefix=prefix,
        max_body_bytes=max_body_bytes,
        host=host,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), proxy_headers=False)
