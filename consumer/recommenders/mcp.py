"""A recommender that calls an MCP server's ``recommend_card`` tool over streamable HTTP.

One MCP client session serves the whole process. It is opened on first use
and lives in a task of its own, because the SDK's session is an anyio
context that must be entered and left by the same task. Items are sent one
tool call each, at most ``concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Generator
from decimal import Decimal
from typing import Any, Awaitable, Callable, Sequence

import httpx2
from pydantic import ValidationError

from consumer.errors import ConfigurationError, PermanentError, TransientError
from consumer.recommenders.base import ItemError, WorkItem
from consumer.recommenders.factory import check_orchestrator_url
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from rewardpilot.connection import redact
from rewardpilot.logs import get_logger
from rewardpilot.models import Recommendation
from rewardpilot.orchestrator.api_key import API_KEY_ENV, resolve_api_key
from rewardpilot.orchestrator.contract import RecommendResponse, purchase_facts

TOOL_NAME = "recommend_card"
# Statuses of the ping probe that mean no MCP server is at the URL's path.
WRONG_PATH_STATUSES = frozenset({404, 405})

log = get_logger("consumer.recommenders.mcp")

# Failures of the connection rather than of the call: the session is
# dropped and the batch retried. httpx2 is the HTTP client the mcp 2.x SDK
# uses for streamable HTTP.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (httpx2.TransportError, OSError, TimeoutError)


ResponseHook = Callable[[httpx2.Response], Awaitable[None]]


class BearerAuth(httpx2.Auth):
    """Sends ``Authorization: Bearer <key>``; its repr shows the key's length only."""

    def __init__(self, key: str):
        self._key = key

    def __repr__(self) -> str:
        return f"BearerAuth(<{len(self._key)} characters hidden>)"

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key}"
        yield request


class _AuthRejected(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class McpRecommender:
    """Calls ``recommend_card`` on the MCP server at ``url`` (for example ``http://host:8080/mcp``).

    A ``url`` without a host or with an invalid port raises ValueError
    (``check_orchestrator_url``). ``api_key`` defaults to
    ``ORCHESTRATOR_API_KEY`` and is sent as a bearer token. A key with a control or non-ASCII character raises
    ``InvalidApiKeyError`` (a ValueError). ``timeout`` in seconds bounds each
    tool call.
    """

    name = "mcp"

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 10.0, concurrency: int = 16):
        check_orchestrator_url(url)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")

        self.url = url
        self.timeout = timeout
        key = resolve_api_key(api_key, "consumer")
        self._auth = BearerAuth(key) if key else None
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client: Client | None = None
        self._runner: asyncio.Task | None = None
        self._closing: asyncio.Event | None = None
        self._connect_lock = asyncio.Lock()
        self._response_hooks: list[ResponseHook] = []

    def __repr__(self) -> str:
        return f"McpRecommender({redact(self.url)!r})"

    @property
    def health_url(self) -> str:
        """The URL that ``connect`` opens a session on, with any password hidden."""
        return redact(self.url)

    def add_response_hook(self, hook: ResponseHook) -> None:
        """Call ``hook`` with every HTTP response from the MCP server, including the auth probe.

        The hook applies to the open session as well as to later ones.
        """
        self._response_hooks.append(hook)

    async def _run_response_hooks(self, response: httpx2.Response) -> None:
        for hook in self._response_hooks:
            await hook(response)

    def _http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            auth=self._auth, timeout=httpx2.Timeout(self.timeout),
            event_hooks={"response": [self._run_response_hooks]},
        )

    async def recommend(self, items: Sequence[WorkItem]) -> list[Recommendation | ItemError]:
        """Return one outcome per item, in order; raise ``TransientError`` to have the batch retried."""
        if not items:
            return []
        try:
            client = await self._session()
        except _AuthRejected as exc:
            error = ItemError("auth_error", str(exc), http_status=exc.status)
            return [error] * len(items)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._recommend_one(client, item)) for item in items]
        except* TransientError as failures:
            await self._drop_session()
            raise failures.exceptions[0] from None
        return [task.result() for task in tasks]

    async def aclose(self) -> None:
        await self._drop_session()

    async def connect(self) -> None:
        """Open the session now; raise ``TransientError`` when the server does not respond.

        Raises ``PermanentError`` when the server rejects the API key, and
        ``ConfigurationError`` (a ``TransientError``) when the URL's path
        returns 404 or 405.
        """
        try:
            await self._session()
        except _AuthRejected as exc:
            raise PermanentError(str(exc), status=exc.status) from None

    async def _recommend_one(self, client: Client, item: WorkItem) -> Recommendation | ItemError:
        async with self._semaphore:
            try:
                result = await client.call_tool(TOOL_NAME, tool_arguments(item), read_timeout_seconds=self.timeout)
            except _CONNECTION_ERRORS as exc:
                raise TransientError(f"MCP call {TOOL_NAME} failed: {type(exc).__name__}: {exc}") from exc
            except MCPError as exc:
                return ItemError("mcp_error", f"MCP call {TOOL_NAME} failed: {exc}")

        if result.is_error:
            return ItemError("tool_error", _result_text(result) or f"{TOOL_NAME} returned an error without a message")

        try:
            answer = RecommendResponse.model_validate(_result_payload(result))
            source = item.wallet_source if item.wallet is not None else None
            return answer.to_recommendation(item.transaction, wallet_source=source, recommender=self.name)
        except (ValueError, ArithmeticError, ValidationError) as exc:
            return ItemError("contract_error", f"{TOOL_NAME} returned a result that is not a recommendation: {str(exc)[:300]}")

    async def _session(self) -> Client:
        """Return the open session, opening it first if needed."""
        if self._client is not None and self._runner is not None and not self._runner.done():
            return self._client

        async with self._connect_lock:
            if self._client is not None and self._runner is not None and not self._runner.done():
                return self._client

            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._closing = asyncio.Event()
            self._runner = asyncio.create_task(self._hold_session(ready, self._closing), name="mcp-session")
            try:
                self._client = await ready
            except _CONNECTION_ERRORS + (MCPError,) as exc:
                # mcp 2.3 reports an HTTP 401 or 403 on connect as a bare MCPError without
                # the status, so one plain request finds out whether the key was rejected.
                status = await self._probe_status()
                if status in (401, 403):
                    raise _AuthRejected(
                        f"the MCP server {redact(self.url)} rejected the API key (HTTP {status}); "
                        f"check {API_KEY_ENV}", status,
                    ) from None
                if status in WRONG_PATH_STATUSES:
                    raise ConfigurationError(
                        f"the MCP URL {redact(self.url)} returned HTTP {status}, so no MCP server is at "
                        "this path: check the path of --orchestrator or ORCHESTRATOR_URL. The orchestrator "
                        "serves MCP at /mcp, such as http://127.0.0.1:8080/mcp. The entries stay pending "
                        "until the URL is fixed", status=status,
                    ) from None
                raise TransientError(f"connecting to the MCP server {redact(self.url)} failed: {exc}") from exc
            log.info("MCP session opened", url=redact(self.url))
            return self._client

    async def _probe_status(self) -> int | None:
        """Return the HTTP status of one JSON-RPC ping to the server, or None when it does not respond."""
        try:
            async with self._http_client() as http:
                response = await http.post(self.url, json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
                                           headers={"Accept": "application/json, text/event-stream"})
                return response.status_code
        except Exception:  # any failure to get an answer means: not known to be an auth problem
            return None

    async def _hold_session(self, ready: asyncio.Future, closing: asyncio.Event) -> None:
        """Own the session from enter to exit, in this one task, until ``closing`` is set."""
        try:
            async with self._http_client() as http:
                async with Client(streamable_http_client(self.url, http_client=http), read_timeout_seconds=self.timeout) as client:
                    ready.set_result(client)
                    await closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(_unwrap(exc))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP session ended with an error", url=redact(self.url), error=repr(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _drop_session(self) -> None:
        runner, closing = self._runner, self._closing
        self._client = None
        self._runner = None
        if runner is None or closing is None:
            return
        closing.set()
        try:
            await asyncio.wait_for(runner, timeout=self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            runner.cancel()
        except Exception as exc:  # the session already failed; it is gone either way
            log.warning("closing the MCP session failed", url=redact(self.url), error=repr(exc))


def tool_arguments(item: WorkItem) -> dict[str, Any]:
    """Write a work item as ``recommend_card`` arguments, with every transaction field the engine reads.

    The amount goes as an exact decimal string, and the purchase facts as
    ``purchase_facts`` writes them. ``wallet_source`` goes with the wallet,
    so that the reasoning does not call the user's own wallet one named for
    the run. A server whose tool lacks a newer argument ignores it (the SDK
    drops arguments a tool does not declare).
    """
    transaction = item.transaction
    arguments: dict[str, Any] = {
        "transaction_id": transaction.transaction_id,
        "user_id": transaction.user_id,
        "merchant": transaction.merchant,
        "category": transaction.category,
        "amount_usd": str(transaction.amount_usd),
        "timestamp": transaction.timestamp.isoformat(),
    }
    if transaction.mcc is not None:
        arguments["mcc"] = transaction.mcc
    arguments.update(purchase_facts(transaction))
    if item.wallet is not None:
        arguments["wallet"] = list(item.wallet)
        arguments["wallet_source"] = item.wallet_source
    return arguments


def _result_payload(result: Any) -> Any:
    """Return the tool's structured result, or the JSON in its first text block."""
    if result.structured_content is not None:
        # Re-read through JSON so that amounts become Decimal, not float.
        return json.loads(json.dumps(result.structured_content), parse_float=Decimal)
    return json.loads(_result_text(result), parse_float=Decimal)


def _result_text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def _unwrap(exc: BaseException) -> BaseException:
    """Return the first leaf of an exception group, which anyio task groups raise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
