"""A recommender that calls the orchestrator's REST contract over HTTP.

On first use it reads ``GET /health``. When the server lists
``/recommend/batch`` a micro-batch goes in one call per chunk of
``max_batch_items``; otherwise each transaction gets its own
``POST /recommend``, at most ``concurrency`` at a time.

Outcomes follow ``consumer.retry.error_for_response``: a transport failure,
429, 502, 503 or 504 raises ``TransientError`` and the pool retries the
batch. A 404 or 405 from any endpoint raises ``ConfigurationError``: the
URL's path is wrong, so the entries are held like after a transient failure
and never dead-lettered. A 413 for a batch splits it in halves and sends
each half again, down to one transaction. Any other error status, or a body
that does not parse as the contract, turns into an ``ItemError`` for each
item of that request, and those entries go to the dead-letter stream.

The API key is checked by ``rewardpilot.orchestrator.api_key`` and sent by
an ``httpx.Auth``, so it never sits in a header dict of this module, and
httpx prints ``Headers`` with the Authorization value hidden.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Generator
from decimal import Decimal
from typing import Any, Sequence

import httpx
from pydantic import ValidationError

from consumer.errors import ConfigurationError, PermanentError, TransientError
from consumer.recommenders.base import ItemError, WorkItem
from consumer.retry import TRANSIENT_EXCEPTIONS, error_for_response
from rewardpilot.connection import redact
from rewardpilot.logs import get_logger
from rewardpilot.models import Recommendation
from rewardpilot.orchestrator.api_key import API_KEY_ENV, resolve_api_key
from rewardpilot.orchestrator.contract import BatchResponse, RecommendResponse

BATCH_PATH = "/recommend/batch"
HEALTH_PATH = "/health"
# A server that has no such path (404) or no such method on it (405) is not
# the orchestrator's REST contract at this base URL.
WRONG_PATH_STATUSES = frozenset({404, 405})
PAYLOAD_TOO_LARGE = 413

log = get_logger("consumer.recommenders.http")


class BearerAuth(httpx.Auth):
    """Sends ``Authorization: Bearer <key>``; its repr shows the key's length only."""

    def __init__(self, key: str):
        self._key = key

    def __repr__(self) -> str:
        return f"BearerAuth(<{len(self._key)} characters hidden>)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key}"
        yield request


class HttpRecommender:
    """Calls an orchestrator at ``base_url`` (``http://`` or ``https://``).

    ``api_key`` defaults to ``ORCHESTRATOR_API_KEY`` and is sent as
    ``Authorization: Bearer <key>``. A key with a control or non-ASCII
    character raises ``InvalidApiKeyError`` (a ValueError). ``timeout`` is
    in seconds and applies to each request. ``max_batch_items`` caps the
    transactions per batch call, and a 413 lowers it for later calls. One
    ``httpx.AsyncClient`` with keep-alive serves every call. Pass ``client``
    to share one, and then this recommender never closes it.
    """

    name = "http"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        max_connections: int = 32,
        concurrency: int = 16,
        max_batch_items: int = 500,
        client: httpx.AsyncClient | None = None,
    ):
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"orchestrator URL {redact(base_url)!r} is invalid; write it like http://127.0.0.1:8080"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_batch_items < 1:
            raise ValueError(f"max_batch_items must be at least 1, got {max_batch_items}")

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_batch_items = max_batch_items

        key = resolve_api_key(api_key, "consumer")
        self._headers = {"Accept": "application/json"}
        self._auth = BearerAuth(key) if key else None

        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._semaphore = asyncio.Semaphore(concurrency)
        self._batch_supported: bool | None = None
        self._discover_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"HttpRecommender({redact(self.base_url)!r})"  # no key, no password

    @property
    def health_url(self) -> str:
        """The URL that ``connect`` reads, with any password hidden."""
        return redact(self.base_url + HEALTH_PATH)

    async def recommend(self, items: Sequence[WorkItem]) -> list[Recommendation | ItemError]:
        """Return one outcome per item, in order; raise ``TransientError`` to have the batch retried."""
        if not items:
            return []

        if await self._uses_batch():
            outcomes: list[Recommendation | ItemError] = []
            for start in range(0, len(items), self.max_batch_items):
                outcomes.extend(await self._recommend_batch(items[start : start + self.max_batch_items]))
            return outcomes

        return await self._recommend_each(items)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def connect(self) -> None:
        """Read ``/health`` now; raise ``TransientError`` when the orchestrator does not respond.

        Raises ``ConfigurationError``, a ``TransientError``, when ``/health``
        returns 404 or 405.
        """
        await self._uses_batch()

    async def _uses_batch(self) -> bool:
        """Read ``/health`` once and remember whether it offers the batch endpoint.

        A transient failure, 404 or 405 is raised and nothing is remembered,
        so the next call asks again. Any other answer (an error status, not
        JSON, no list) means the server predates the batch endpoint.
        """
        if self._batch_supported is not None:
            return self._batch_supported

        async with self._discover_lock:
            if self._batch_supported is None:
                response = await self._send("GET", HEALTH_PATH)
                self._batch_supported = response.status_code == 200 and _lists_batch(response)
                log.info(
                    "orchestrator discovered",
                    url=redact(self.base_url),
                    health_status=response.status_code,
                    batch=self._batch_supported,
                )
        return self._batch_supported

    async def _recommend_batch(self, items: Sequence[WorkItem]) -> list[Recommendation | ItemError]:
        response = await self._send("POST", BATCH_PATH, {"transactions": [request_body(item) for item in items]})
        if response.status_code == PAYLOAD_TOO_LARGE:
            return await self._split_batch(items, response)
        failure = _whole_call_failure(response, len(items))
        if failure is not None:
            return failure

        try:
            batch = BatchResponse.model_validate(_json(response))
        except (ValueError, ValidationError) as exc:
            return _contract_errors(response, len(items), f"the body is not a batch answer: {_short(exc)}")
        if [result.index for result in batch.results] != list(range(len(items))):
            return _contract_errors(
                response, len(items), f"the answer has indexes {[r.index for r in batch.results][:10]} for {len(items)} items"
            )

        outcomes: list[Recommendation | ItemError] = []
        for item, result in zip(items, batch.results):
            if result.ok and result.recommendation is not None:
                outcomes.append(self._to_recommendation(item, result.recommendation))
            elif result.error is not None:
                outcomes.append(ItemError(result.error.type, result.error.message, http_status=422))
            else:
                outcomes.append(ItemError("contract_error", f"batch result {result.index} has neither a recommendation nor an error", response.status_code))
        return outcomes

    async def _split_batch(self, items: Sequence[WorkItem], response: httpx.Response) -> list[Recommendation | ItemError]:
        """Send each half of a batch the orchestrator rejected as too large (413), or dead-letter a lone item.

        Later batches are cut to the half's size up front, so that a small
        ``--max-body-bytes`` costs one 413 per size step, not one per batch.
        """
        request_bytes = len(response.request.content)
        if len(items) == 1:
            return [_too_large_error(response, request_bytes)]

        half = (len(items) + 1) // 2
        if half < self.max_batch_items:
            self.max_batch_items = half
            log.warning(
                "orchestrator rejected a batch as too large (HTTP 413); splitting it in halves, and later "
                "batch calls carry at most max_batch_items transactions. Raise the orchestrator's "
                "--max-body-bytes to send larger batches",
                url=redact(self.base_url), transactions=len(items), request_bytes=request_bytes,
                max_batch_items=half, detail=_error_detail(response),
            )
        return await self._recommend_batch(items[:half]) + await self._recommend_batch(items[half:])

    async def _recommend_each(self, items: Sequence[WorkItem]) -> list[Recommendation | ItemError]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._recommend_one(item)) for item in items]
        except* TransientError as failures:
            # The first transient failure cancelled the rest; the pool retries the whole batch.
            raise failures.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _recommend_one(self, item: WorkItem) -> Recommendation | ItemError:
        async with self._semaphore:  # released on cancellation too
            response = await self._send("POST", "/recommend", request_body(item))

        if response.status_code == PAYLOAD_TOO_LARGE:
            return _too_large_error(response, len(response.request.content))
        failure = _whole_call_failure(response, 1)
        if failure is not None:
            return failure[0]
        try:
            answer = RecommendResponse.model_validate(_json(response))
        except (ValueError, ValidationError) as exc:
            return _contract_errors(response, 1, f"the body is not a recommendation: {_short(exc)}")[0]
        return self._to_recommendation(item, answer)

    async def _send(self, method: str, path: str, payload: Any = None) -> httpx.Response:
        """Send one request; a transport failure or a transient status raises ``TransientError``."""
        content = json.dumps(payload).encode("utf-8") if payload is not None else None
        headers = dict(self._headers)
        if content is not None:
            headers["Content-Type"] = "application/json"

        try:
            response = await self._client.request(
                method, self.base_url + path, content=content, headers=headers,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT, timeout=self.timeout,
            )
        except TRANSIENT_EXCEPTIONS as exc:
            raise TransientError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc
        except (httpx.LocalProtocolError, UnicodeEncodeError) as exc:
            # The message of either can quote a header value, which may be the
            # API key, so it is left out and the exception is not chained.
            raise ConfigurationError(
                f"{method} {path} could not be sent: httpx raised {type(exc).__name__} for the request "
                f"(its message is not shown, because it can quote the Authorization header); check "
                f"{API_KEY_ENV} and the orchestrator URL"
            ) from None

        if response.status_code in WRONG_PATH_STATUSES:
            raise self._wrong_path(method, path, response.status_code)
        error = error_for_response(response)
        if isinstance(error, TransientError):
            raise error
        return response

    def _wrong_path(self, method: str, path: str, status: int) -> ConfigurationError:
        """Build the error for a 404 or 405, which means the base URL does not point at the orchestrator."""
        reason = "not found" if status == 404 else "method not allowed"
        return ConfigurationError(
            f"{method} {redact(self.base_url)}{path} returned HTTP {status} ({reason}), so the orchestrator "
            f"is not at this URL's path: check the path of --orchestrator or ORCHESTRATOR_URL. The "
            f"orchestrator serves {HEALTH_PATH} and /recommend at the root of its address, such as "
            "http://127.0.0.1:8080. The entries stay pending until the URL is fixed",
            status=status,
        )

    def _to_recommendation(self, item: WorkItem, answer: RecommendResponse) -> Recommendation | ItemError:
        source = item.wallet_source if item.wallet is not None else None
        try:
            return answer.to_recommendation(item.transaction, wallet_source=source, recommender=self.name)
        except (ValueError, ArithmeticError, ValidationError) as exc:
            return ItemError("contract_error", f"the answer does not fit a recommendation: {_short(exc)}")


def request_body(item: WorkItem) -> dict[str, Any]:
    """Write a work item as a ``/recommend`` request body.

    ``amount_usd`` goes as a JSON number, as the contract documents. A
    whole-cent amount under $10 million survives the float round trip,
    because Python writes the shortest repr that reads back the same.
    """
    transaction = item.transaction
    body: dict[str, Any] = {
        "transaction_id": transaction.transaction_id,
        "user_id": transaction.user_id,
        "merchant": transaction.merchant,
        "category": transaction.category,
        "amount_usd": float(transaction.amount_usd),
        "mcc": transaction.mcc,
        "timestamp": transaction.timestamp.isoformat(),
    }
    if item.wallet is not None:
        body["wallet"] = list(item.wallet)
        body["wallet_source"] = item.wallet_source
    return body


def _whole_call_failure(response: httpx.Response, count: int) -> list[ItemError] | None:
    """Return an ItemError per item for a permanent error status, or None for a success."""
    error = error_for_response(response)
    if error is None:
        return None
    assert isinstance(error, PermanentError)  # transient ones were raised in _send
    message = f"{error}: {_error_detail(response)}"
    return [ItemError(_error_type(response), message, http_status=response.status_code) for _ in range(count)]


def _too_large_error(response: httpx.Response, request_bytes: int) -> ItemError:
    message = (
        f"the orchestrator rejected the request for this one transaction as too large (HTTP 413, "
        f"{request_bytes} bytes), so it cannot be split further: raise the orchestrator's "
        f"--max-body-bytes, then put the entry back with `rewardpilot dlq redrive`. Server's message: "
        f"{_error_detail(response)}"
    )
    return ItemError(_error_type(response), message, http_status=PAYLOAD_TOO_LARGE,
                     reason="too large for the orchestrator")


def _contract_errors(response: httpx.Response, count: int, reason: str) -> list[ItemError]:
    message = f"the orchestrator's answer to {response.request.method} {response.request.url.path} is invalid: {reason}"
    return [ItemError("contract_error", message, http_status=response.status_code) for _ in range(count)]


def _json(response: httpx.Response) -> Any:
    """Parse a JSON body with numbers as Decimal, so money stays exact."""
    return json.loads(response.content, parse_float=Decimal)


def _lists_batch(response: httpx.Response) -> bool:
    try:
        endpoints = json.loads(response.content).get("endpoints")
    except (ValueError, AttributeError):
        return False
    return isinstance(endpoints, list) and any(str(entry).endswith(BATCH_PATH) for entry in endpoints)


def _error_type(response: httpx.Response) -> str:
    try:
        error = json.loads(response.content).get("error")
        if isinstance(error, dict) and isinstance(error.get("type"), str):
            return error["type"]
    except (ValueError, AttributeError):
        pass
    return f"http_{response.status_code}"


def _error_detail(response: httpx.Response) -> str:
    """Return the server's own error message, or the start of the body."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return _short(response.text) or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _short(str(error["message"]))
        if body.get("detail"):
            return _short(str(body["detail"]))
    return _short(response.text)


def _short(value: object, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
