"""The orchestrator's ASGI app: the rules engine over HTTP and MCP.

Routes: ``POST /recommend``, ``POST /recommend/batch``, ``GET /health``,
``GET /cards``, ``GET /openapi.json`` (and ``/docs``), and the MCP endpoint
``/mcp``. With an API key set, every route but ``/health`` needs
``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, AsyncIterator, Mapping

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from redis.exceptions import RedisError

from rewardpilot import __version__
from rewardpilot.connection import connect_async, redact
from rewardpilot.engine import RulesEngine, UnknownCardError
from rewardpilot.logs import get_logger
from rewardpilot.orchestrator import DEFAULT_MAX_BODY_BYTES
from rewardpilot.orchestrator.api_key import check_api_key
from rewardpilot.orchestrator.contract import (
    MAX_BATCH_ITEMS,
    BatchItemResult,
    BatchResponse,
    CardsResponse,
    ErrorBody,
    FieldError,
    HealthResponse,
    RecommendRequest,
    RecommendResponse,
    describe_field_errors,
    field_errors,
)
from rewardpilot.orchestrator.mcp_server import MCP_PATH, build_mcp_server, mcp_route
from rewardpilot.orchestrator.middleware import BearerAuthMiddleware, BodyLimitMiddleware
from rewardpilot.orchestrator.service import RecommendService, WalletLookupError
from rewardpilot.streams import StreamKeys
from rewardpilot.user_terms import StoredTerms

WALLET_RETRY_AFTER_SECONDS = 1

ENDPOINTS = ["/health", "/cards", "/recommend", "/recommend/batch", MCP_PATH, "/openapi.json"]

log = get_logger("rewardpilot.orchestrator")


class RecommendFailed(Exception):
    """A request the engine rejected: ``status`` and ``error`` become the response."""

    def __init__(self, status: int, error: ErrorBody, *, retry_after: int | None = None):
        super().__init__(error.message)
        self.status = status
        self.error = error
        self.retry_after = retry_after


def create_app(
    engine: RulesEngine | None = None,
    *,
    api_key: str | None = None,
    redis_url: str | None = None,
    prefix: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    host: str = "127.0.0.1",
) -> FastAPI:
    """Build the orchestrator app.

    ``api_key`` turns on bearer auth; it is checked like ``ORCHESTRATOR_API_KEY``
    (``check_api_key``), which raises ``InvalidApiKeyError`` (a ValueError)
    for a key no client can send. With ``redis_url``, each request is
    judged with the user's stored mode and valuation overrides, and one
    without a ``wallet`` uses the user's stored wallet, under the key ``prefix``.
    ``max_body_bytes`` caps every request body (413 above it). ``host`` is the
    address the server binds, for the MCP transport's DNS-rebinding check.
    """
    if api_key:
        api_key = check_api_key(api_key, role="orchestrator", source="api_key")
    service = RecommendService(engine or RulesEngine.default(), keys=StreamKeys(prefix=prefix) if prefix else None)
    mcp_server = build_mcp_server(service)
    route, session_manager = mcp_route(mcp_server, host=host)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if redis_url:
            service.redis = connect_async(redis_url)
        log.info(
            "orchestrator started",
            auth="on" if api_key else "off",
            redis=redact(redis_url) if redis_url else None,
            prefix=service.keys.prefix if redis_url else None,
            catalog_version=service.catalog_version,
            max_body_bytes=max_body_bytes,
        )
        try:
            async with session_manager.run():
                yield
        finally:
            if service.redis is not None:
                await service.redis.aclose()
                service.redis = None
            log.info("orchestrator stopped")

    app = FastAPI(
        title="RewardPilot orchestrator",
        version=__version__,
        description="Recommends the card that earns the most rewards on each purchase.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.router.routes.append(route)

    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(RecommendFailed, _recommend_failed)
    _add_routes(app, service)

    # add_middleware wraps the app, so the middleware added last runs first:
    # auth is checked before any body byte is read.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(BearerAuthMiddleware, api_key=api_key)
    return app


def _add_routes(app: FastAPI, service: RecommendService) -> None:
    @app.get("/health", response_model=HealthResponse, summary="Status and the endpoints offered (no key needed)",
             responses={503: {"model": HealthResponse, "description": "A PING to the server's Redis failed"}})
    async def health():
        redis_state = "not used"
        if service.redis is not None:
            redis_state = "ok" if await _redis_ping_ok(service) else "unreachable"
        body = HealthResponse(
            status="unavailable" if redis_state == "unreachable" else "ok",
            endpoints=ENDPOINTS,
            catalog_version=service.catalog_version,
            engine_version=service.engine_version,
            redis=redis_state,
            prefix=service.keys.prefix if service.redis is not None else None,
        )
        if redis_state == "unreachable":
            return JSONResponse(jsonable_encoder(body), status_code=503, headers={"Retry-After": "5"})
        return body

    @app.get("/cards", response_model=CardsResponse, summary="The catalog's cards")
    async def cards() -> CardsResponse:
        return service.cards()

    @app.post("/recommend", response_model=RecommendResponse, summary="Recommend a card for one purchase")
    async def recommend(request: RecommendRequest) -> RecommendResponse:
        return await _recommend_one(service, request)

    @app.post(
        "/recommend/batch",
        response_model=BatchResponse,
        summary="Recommend cards for a list of purchases",
        description=(
            f"Send up to {MAX_BATCH_ITEMS} transactions as {{\"transactions\": [...]}} or as a bare "
            "list. Results come back in request order; an invalid item gets ok=false and an error, "
            "and the other items are still answered."
        ),
        openapi_extra={"requestBody": _batch_request_schema()},
    )
    async def recommend_batch(request: Request) -> BatchResponse:
        parsed = [_parse_item(index, item) for index, item in enumerate(_batch_items(await request.body()))]

        # One round trip for the stored terms of the whole batch, not one per item.
        requests = [item for item in parsed if isinstance(item, RecommendRequest)]
        try:
            terms = await service.fetch_terms(requests)
        except WalletLookupError as exc:
            raise _wallet_failure(exc, requests[0].user_id if requests else "") from None

        results = [
            item if isinstance(item, BatchItemResult) else await _batch_result(service, index, item, terms)
            for index, item in enumerate(parsed)
        ]
        return BatchResponse(results=results)


async def _redis_ping_ok(service: RecommendService) -> bool:
    try:
        await service.redis.ping()
    except RedisError as exc:
        log.warning("health check: Redis PING failed", error=str(exc))
        return False
    return True


def _wallet_failure(exc: WalletLookupError, user_id: str) -> RecommendFailed:
    log.error("wallet lookup failed", user_id=user_id, error=str(exc))
    error = ErrorBody(type="wallet_lookup_failed", message=f"{exc}; try again later")
    return RecommendFailed(503, error, retry_after=WALLET_RETRY_AFTER_SECONDS)


async def _recommend_one(service: RecommendService, request: RecommendRequest,
                         terms: Mapping[str, StoredTerms] | None = None) -> RecommendResponse:
    try:
        evaluation = await service.evaluate(request, terms)
    except UnknownCardError as exc:
        raise RecommendFailed(422, _unknown_card(exc)) from None
    except WalletLookupError as exc:
        raise _wallet_failure(exc, request.user_id) from None
    except ValueError as exc:
        raise RecommendFailed(422, ErrorBody(type="invalid_transaction", message=str(exc))) from None
    return RecommendResponse.from_evaluation(evaluation)


def _parse_item(index: int, item: Any) -> RecommendRequest | BatchItemResult:
    """Validate one batch item; an invalid item becomes its failed result."""
    try:
        return RecommendRequest.model_validate(item)
    except ValidationError as exc:
        fields = field_errors(exc.errors(include_url=False))
        error = ErrorBody(type="validation_error", message=describe_field_errors(fields), fields=fields)
        return BatchItemResult(index=index, ok=False, error=error)


async def _batch_result(service: RecommendService, index: int, request: RecommendRequest,
                        terms: Mapping[str, StoredTerms] | None) -> BatchItemResult:
    """Recommend one valid batch item; a failure stays inside its result."""
    try:
        recommendation = await _recommend_one(service, request, terms)
    except RecommendFailed as exc:
        if exc.status == 503:
            raise  # Redis is down: the whole batch is worth retrying, not this one item
        return BatchItemResult(index=index, ok=False, error=exc.error)
    return BatchItemResult(index=index, ok=True, recommendation=recommendation)


def _batch_items(body: bytes) -> list[Any]:
    """Return the items of a batch body, which is a bare list or ``{"transactions": [...]}``."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "the body is not valid JSON", "type": "json_invalid"}]
        ) from None

    if isinstance(payload, dict) and "transactions" in payload:
        payload = payload["transactions"]
        location: tuple[str, ...] = ("body", "transactions")
    else:
        location = ("body",)

    if not isinstance(payload, list):
        raise RequestValidationError(
            [
                {
                    "loc": location,
                    "msg": 'expected a list of transactions, or an object {"transactions": [...]}',
                    "type": "list_type",
                }
            ]
        )
    if len(payload) > MAX_BATCH_ITEMS:
        raise RequestValidationError(
            [
                {
                    "loc": location,
                    "msg": f"{len(payload)} transactions is over the limit of {MAX_BATCH_ITEMS} per batch; "
                    "split it into smaller batches",
                    "type": "too_long",
                }
            ]
        )
    return payload


def _batch_request_schema() -> dict:
    item = {"$ref": "#/components/schemas/RecommendRequest"}
    items = {"type": "array", "items": item, "maxItems": MAX_BATCH_ITEMS}
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "properties": {"transactions": items}, "required": ["transactions"]},
                        items,
                    ]
                }
            }
        },
    }


def _unknown_card(exc: UnknownCardError) -> ErrorBody:
    return ErrorBody(
        type="unknown_card",
        message=f"invalid wallet: {exc}; GET /cards lists the known card ids",
        fields=[FieldError(field="wallet", message=str(exc))],
    )


async def _validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Answer 422 with FastAPI's ``detail`` plus an ``error`` that names each field in words."""
    fields = field_errors(exc.errors(), skip_prefix=("body",))
    error = ErrorBody(type="validation_error", message=describe_field_errors(fields), fields=fields)
    body = {"detail": jsonable_encoder(exc.errors()), "error": error.model_dump()}
    return JSONResponse(status_code=422, content=body)


async def _recommend_failed(request: Request, exc: RecommendFailed) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    body = {"detail": exc.error.message, "error": exc.error.model_dump()}
    return JSONResponse(status_code=exc.status, content=body, headers=headers)
