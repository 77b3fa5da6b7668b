"""Pick the recommender for ``--orchestrator URL`` (or ``ORCHESTRATOR_URL``).

The rule, in order:

* no URL: ``InProcessRecommender``, the rules engine in this process;
* ``mcp+http://`` or ``mcp+https://``: ``McpRecommender`` on the URL without ``mcp+``;
* ``http://`` or ``https://`` whose path ends in ``/mcp``: ``McpRecommender``;
* any other ``http://`` or ``https://`` URL: ``HttpRecommender`` on the REST contract.

Anything else raises ``ValueError``, as does a URL without a host or with a
port that is not a number from 1 to 65535 (``check_orchestrator_url``).
"""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from consumer.recommenders.base import Recommender
from rewardpilot.connection import redact_safely

MCP_SCHEME_PREFIX = "mcp+"
MAX_PORT = 65535

URL_FORMS = (
    "use http(s)://host[:port] for the REST contract, http(s)://host[:port]/mcp or mcp+http(s)://... for "
    "an MCP server, or no URL for the in-process engine"
)


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
    mcp_scheme = _is_mcp_scheme(url)
    parts = check_orchestrator_url(url[len(MCP_SCHEME_PREFIX):] if mcp_scheme else url, display_url=url)

    if mcp_scheme:
        from consumer.recommenders.mcp import McpRecommender

        return _build(McpRecommender, options, url[len(MCP_SCHEME_PREFIX) :])

    if parts.path.rstrip("/").endswith("/mcp"):
        from consumer.recommenders.mcp import McpRecommender

        return _build(McpRecommender, options, url)

    from consumer.recommenders.http import HttpRecommender

    return _build(HttpRecommender, options, url)


def check_orchestrator_url(url: str, *, display_url: str | None = None) -> SplitResult:
    """Return the parts of an ``http://`` or ``https://`` orchestrator URL, or raise ValueError naming it.

    The URL needs a host, and a port, when given, must be a decimal number
    from 1 to 65535. An empty port (``host:``) means the scheme's default,
    as httpx reads it. The error quotes ``display_url`` (default ``url``)
    with any password masked.
    """
    def invalid(reason: str) -> ValueError:
        return ValueError(f"orchestrator URL {redact_safely(display_url or url)!r} is invalid: {reason}; {URL_FORMS}")

    try:
        parts = urlsplit(url)
    except ValueError as exc:  # such as "Invalid IPv6 URL" for an unclosed "["
        raise invalid(str(exc)) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise invalid(f"the scheme must be http or https, not {parts.scheme!r}" if parts.scheme
                      else "it has no scheme")
    if not parts.hostname:
        raise invalid("it has no host")
    if any(character.isspace() or not character.isprintable() for character in parts.hostname):
        raise invalid(f"the host {parts.hostname!r} contains a space or a control character")

    port = _port_text(parts.netloc)
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) <= MAX_PORT):
        raise invalid(f"the port {port!r} is not a number from 1 to {MAX_PORT}")
    try:
        httpx.URL(url)  # the client that sends the calls must accept the URL too
    except httpx.InvalidURL as exc:
        raise invalid(str(exc)) from None
    return parts


def _is_mcp_scheme(url: str) -> bool:
    scheme, colon, _ = url.partition(":")
    prefix, _, transport = scheme.lower().partition(MCP_SCHEME_PREFIX)
    return bool(colon) and prefix == "" and transport in ("http", "https")


def _port_text(netloc: str) -> str:
    """Return the text after the host's ``:`` in ``netloc``, or "" when there is none."""
    host_port = netloc.rpartition("@")[2]
    if host_port.startswith("["):  # an IPv6 literal such as [::1]:8080
        host_port = host_port.partition("]")[2]
    return host_port.partition(":")[2] if ":" in host_port else ""


def _build(cls: type, options: dict[str, Any], *args: Any) -> Recommender:
    accepted = inspect.signature(cls).parameters
    return cls(*args, **{name: value for name, value in options.items() if name in accepted})
