"""The rules engine as Model Context Protocol tools: ``recommend_card`` and ``list_cards``.

Built on the official ``mcp`` SDK's ``MCPServer`` (the 2.x name of FastMCP)
and served over streamable HTTP at ``/mcp`` inside the orchestrator's ASGI
app, behind the same bearer-key middleware as the REST routes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError
from starlette.routing import Route

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from rewardpilot.engine import UnknownCardError
from rewardpilot.orchestrator.contract import (
    CardsResponse,
    RecommendRequest,
    RecommendResponse,
    describe_field_errors,
    field_errors,
)
from rewardpilot.orchestrator.service import RecommendService, WalletLookupError

MCP_PATH = "/mcp"


def build_mcp_server(service: RecommendService) -> MCPServer:
    """Create an MCP server whose tools call ``service``."""
    server = MCPServer(
        name="rewardpilot-orchestrator",
        log_level="WARNING",  # the SDK configures the root logger at this level
        instructions=(
            "Call recommend_card with one card purchase to learn which card earns the most "
            "rewards on it and why; call list_cards for the card ids the catalog knows."
        ),
    )

    @server.tool(
        description=(
            "Recommend the card that earns the most rewards on one purchase. amount_usd is in US "
            "dollars; mcc is the 4-digit ISO 18245 merchant category code; wallet lists the card "
            "ids to choose from (default: the user's stored wallet, else the whole catalog), and "
            "wallet_source says whose wallet it is: 'user' or 'run'. currency (ISO 4217, default USD) "
            "and merchant_country (ISO 3166-1 alpha-2) mark a foreign purchase, which earns no U.S.-only "
            "bonus and pays the card's foreign transaction fee. original_amount, original_currency, "
            "usd_per_unit and rate_date describe a conversion to USD already made, and card_used names "
            "the card that paid."
        )
    )
    async def recommend_card(
        user_id: str,
        merchant: str,
        amount_usd: float | str,
        category: str = "",
        mcc: str | None = None,
        transaction_id: str | None = None,
        timestamp: str | None = None,
        wallet: list[str] | None = None,
        wallet_source: Literal["user", "run"] | None = None,
        currency: str | None = None,
        merchant_country: str | None = None,
        card_used: str | None = None,
        original_amount: float | str | None = None,
        original_currency: str | None = None,
        usd_per_unit: float | str | None = None,
        rate_date: str | None = None,
    ) -> RecommendResponse:
        fields = {
            "user_id": user_id,
            "merchant": merchant,
            "amount_usd": amount_usd,
            "category": category,
            "mcc": mcc,
            "transaction_id": transaction_id,
            "timestamp": timestamp,
            "wallet": wallet,
            "wallet_source": wallet_source,
            "currency": currency,
            "merchant_country": merchant_country,
            "card_used": card_used,
            "original_amount": original_amount,
            "original_currency": original_currency,
            "usd_per_unit": usd_per_unit,
            "rate_date": rate_date,
        }
        try:
            request = RecommendRequest.model_validate({name: value for name, value in fields.items() if value is not None})
        except ValidationError as exc:
            raise ToolError(describe_field_errors(field_errors(exc.errors(include_url=False)))) from None

        try:
            evaluation = await service.evaluate(request)
        except UnknownCardError as exc:
            raise ToolError(f"invalid wallet: {exc}") from None
        except WalletLookupError as exc:
            raise ToolError(f"{exc}; try again later") from None
        except ValueError as exc:
            raise ToolError(f"invalid transaction: {exc}") from None

        return RecommendResponse.from_evaluation(evaluation)

    @server.tool(description="List the cards of the catalog with issuer, network, annual fee and rewards program.")
    async def list_cards() -> CardsResponse:
        return service.cards()

    return server


def mcp_route(server: MCPServer, *, host: str) -> tuple[Route, StreamableHTTPSessionManager]:
    """Return the ``/mcp`` route and the session manager the app's lifespan must run.

    The transport is stateless with JSON responses, so any orchestrator
    process behind a load balancer can answer any call. ``host`` turns on
    the SDK's DNS-rebinding protection when it is a loopback address.
    """
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        host=host,
    )
    manager = server.session_manager
    return Route(MCP_PATH, endpoint=StreamableHTTPASGIApp(manager)), manager
