"""The orchestrator's ASGI app: the rules engine over HTTP and MCP.

Routes: ``POST /recommend``, ``POST /recommend/batch``, ``GET /health``,
``GET /cards``, ``GET /openapi.json`` (and ``/docs``), and the MCP endpoint
``/mcp``. With an API key set, every route but ``/health`` needs
``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any, AsyncIterator, Callable, Coroutine, Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.responses import Response

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


# The deepest nesting of arrays and objects among the contract's fields: a batch object,
# its list, a transaction and its wallet list. Error messages quote it as a guide.
CONTRACT_NESTING = 4


class BodyNotJsonError(HTTPException):
    """A request body that cannot be parsed as JSON, which gets a 422 response like an invalid field.

    It is an HTTPException because FastAPI's reading of a route's body
    re-raises those unchanged, while it turns any other error into a plain
    400 without the contract's ``error`` object.
    """

    def __init__(self, reason: str):
        super().__init__(status_code=422, detail=reason)
        self.reason = reason


def load_json_body(body: bytes) -> Any:
    """Parse a request body as JSON, or raise BodyNotJsonError saying why it cannot be parsed.

    Besides invalid JSON, this covers a body that is not text in a JSON
    encoding and one nested too deeply for Python's ``json`` module, which
    raises RecursionError near ``sys.getrecursionlimit()`` levels (1000 by default).
    """
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise BodyNotJsonError(
            f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except UnicodeDecodeError as exc:
        raise BodyNotJsonError(
            f"the body is not valid JSON: byte {exc.start} is not valid {exc.encoding} ({exc.reason}); "
            "send UTF-8 text"
        ) from None
    except RecursionError:
        raise BodyNotJsonError(
            f"the body nests arrays or objects too deeply to parse; the contract's fields nest at most "
            f"{CONTRACT_NESTING} levels"
        ) from None


class JsonBodyRequest(Request):
    """A request whose ``json()`` parses with ``load_json_body``, so FastAPI's body reading raises BodyNotJsonError."""

    async def json(self) -> Any:
        if not hasattr(self, "_parsed_json"):
            self._parsed_json = load_json_body(await self.body())
        return self._parsed_json


class JsonBodyRoute(APIRoute):
    """A route that hands FastAPI a JsonBodyRequest, so every body is parsed as ``/recommend/batch`` parses it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle_with_json_body(request: Request) -> Response:
            return await handler(JsonBodyRequest(request.scope, request.receive))

        return handle_with_json_body


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
    app.router.route_class = JsonBodyRoute  # set before _add_routes, which creates the routes

    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(BodyNotJsonError, _body_not_json)
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
    payload = load_json_body(body)
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
    return _invalid_request_response([_explain_unread_body(request, detail) for detail in exc.errors()])


async def _body_not_json(request: Request, exc: BodyNotJsonError) -> JSONResponse:
    return _invalid_request_response([{"loc": ("body",), "msg": exc.reason, "type": "json_invalid"}])


def _invalid_request_response(details: Sequence[Mapping[str, Any]]) -> JSONResponse:
    """Build the 422 response: the pydantic-style ``details`` and an ``error`` naming each field.

    A rejected value can be a NaN or infinite float, a string with a lone
    surrogate or undecodable bytes. None of them can be written as JSON, so
    ``json_safe`` rewrites them as text first.
    """
    fields = field_errors(details, skip_prefix=("body",))
    error = ErrorBody(type="validation_error", message=describe_field_errors(fields), fields=fields)
    detail = jsonable_encoder(details, custom_encoder={bytes: _bytes_as_text})
    return JSONResponse(status_code=422, content=json_safe({"detail": detail, "error": error.model_dump()}))


def _explain_unread_body(request: Request, detail: Mapping[str, Any]) -> Mapping[str, Any]:
    """Say why the body is bytes, not an object: FastAPI reads it as JSON only with a JSON Content-Type.

    The rewritten detail leaves out the body, which the client has anyway.
    """
    if tuple(detail.get("loc", ())) != ("body",) or not isinstance(detail.get("input"), bytes):
        return detail
    content_type = request.headers.get("content-type")
    content_type_text = repr(content_type) if content_type else "missing"
    message = (f"the body was not read as JSON because its Content-Type is {content_type_text}; "
               "send Content-Type: application/json")
    return {key: value for key, value in detail.items() if key != "input"} | {"msg": message}


def _bytes_as_text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def json_safe(value: Any) -> Any:
    """Return ``value`` with what JSON cannot encode written as text: ``nan``, ``inf`` and ``\\ud800`` escapes."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, Mapping):
        return {json_safe(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


async def _recommend_failed(request: Request, exc: RecommendFailed) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    body = {"detail": exc.error.message, "error": exc.error.model_dump()}
    return JSONResponse(status_code=exc.status, content=body, headers=headers)
