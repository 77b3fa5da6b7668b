"""``rewardpilot orchestrator``: serve the rules engine over HTTP (REST and MCP)."""

from __future__ import annotations

import typer
from rich.markup import escape

from rewardpilot.orchestrator import DEFAULT_MAX_BODY_BYTES


def orchestrator(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 listens on every interface."),
    port: int = typer.Option(8080, "--port", min=1, max=65_535, help="TCP port to listen on."),
    max_body_bytes: int = typer.Option(
        DEFAULT_MAX_BODY_BYTES, "--max-body-bytes", min=1, help="Largest request body in bytes; larger ones get 413."
    ),
    log_level: str = typer.Option("info", "--uvicorn-log-level", help="uvicorn's log level: critical, error, warning, info, debug or trace."),
    no_wallets: bool = typer.Option(False, "--no-wallets", help="Run without Redis: requests without a wallet are judged against the whole catalog, with the default mode and valuations."),
) -> None:
    """Serve POST /recommend, POST /recommend/batch, GET /health, GET /cards and MCP tools at /mcp.

    Set ORCHESTRATOR_API_KEY to require 'Authorization: Bearer <key>' on every
    call but /health. The key is read from the environment only, so it never
    shows in a process list. Whitespace around it is removed with a warning;
    a key with another control character or a non-ASCII character exits
    with 2, and an empty one serves without auth, with a warning.

    Each request is judged with the user's optimization mode and valuation
    overrides stored in Redis, and one without a wallet uses the user's
    stored wallet (REDIS_URL, or the embedded server like every other
    command), unless --no-wallets is given.

    Exits with 2 for an invalid option or an address that cannot be bound
    (such as a port in use), and with 3 when the app fails to start.
    """
    from rewardpilot.cli.context import app_context, console
    from rewardpilot.orchestrator.api_key import InvalidApiKeyError, read_api_key
    from rewardpilot.orchestrator.server import ListenError, check_log_level, serve

    if not host.strip():
        # asyncio's create_server, which uvicorn calls, binds every interface (IPv4 and IPv6) for an empty host.
        console.print(f"[red]error:[/red] --host {escape(repr(host))} is empty; pass the address to bind, such as "
                      "127.0.0.1 (the default) for this host only, or 0.0.0.0 to listen on every interface",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    try:
        check_log_level(log_level)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        api_key = read_api_key("orchestrator")
    except InvalidApiKeyError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    context = app_context(ctx)
    redis_url = None if no_wallets else context.url()
    prefix = context.prefix
    try:
        # An empty string, not None, so that serve does not read the variable a second time.
        serve(host, port, api_key=api_key or "", redis_url=redis_url, prefix=prefix,
              max_body_bytes=max_body_bytes, log_level=log_level)
    except ListenError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
