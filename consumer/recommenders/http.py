"""A recommender that calls the orchestrator's REST contract over HTTP.

docs/orchestrator-contract.md describes the contract for someone writing
their own orchestrator.

It reads ``GET /health`` before the first call. When the server lists
``/recommend/batch`` a micro-batch goes in one call per chunk of
``max_batch_items``; otherwise each transaction gets its own
``POST /recommend``, at most ``concurrency`` at a time. A 5xx from
``/health`` that is not retried (such as 500) is not remembered: the calls
go one per transaction until ``/health`` is read again, after a growing
delay (``HEALTH_RECHECK_SECONDS``).

Outcomes follow ``consumer.retry.error_for_response``: a transport failure,
429, 502, 503 or 504 raises ``TransientError`` and the pool retries the
batch. A 404 or 405 from any endpoint raises ``ConfigurationError``: the
URL's path is wrong, or the server lacks ``GET /health``, so the entries
are held like after a transient failure and never dead-lettered. A 413 for
a batch splits it in halves and sends each half again, down to one
transaction. Any other error status, or a body that does not parse as the
contract, turns into an ``ItemError`` for each item of that request, and
those entries go to the dead-letter stream. So does a response that echoes
another transaction's ``transaction_id``, ``user_id`` or ``amount_usd``.

The API key is checked by ``rewardpilot.orchestrator.api_key`` and sent by
an ``httpx.Auth``, so it never sits in a header dict of this module, and
httpx prints ``Headers`` with the Authorization value hidden.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Generator
from decimal import Decimal
from typing import Any, Sequence

import httpx
from pydantic import ValidationError

from consumer.errors import ConfigurationError, PermanentError, TransientError
from consumer.recommenders.base import ItemError, WorkItem
from consumer.recommenders.factory import check_orchestrator_url
from consumer.retry import TRANSIENT_EXCEPTIONS, error_for_response
from rewardpilot.connection import redact
from rewardpilot.logs import get_logger
from rewardpilot.models import Recommendation
from rewardpilot.orchestrator.api_key import API_KEY_ENV, resolve_api_key
from rewardpilot.orchestrator.contract import BatchResponse, EchoMismatchError, RecommendResponse, purchase_facts

BATCH_PATH = "/recommend/batch"
HEALTH_PATH = "/health"
# A server that has no such path (404) or no such method on it (405) is not
# the orchestrator's REST contract at this base URL.
WRONG_PATH_STATUSES = frozenset({404, 405})
PAYLOAD_TOO_LARGE = 413
# Seconds until /health is read again after it returned a 5xx that is not
# retried (such as 500): the first delay, then the next ones, then the last for ever.
HEALTH_RECHECK_SECONDS = (5.0, 10.0, 20.0, 40.0, 60.0)
# The document that describes the contract for developers of other orchestrators, named in messages.
CONTRACT_DOC = "docs/orchestrator-contract.md"
# Maximum number of indexes that an error message lists.
MAX_LISTED_INDEXES = 10

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

    A ``base_url`` without a host or with an invalid port raises ValueError
    (``check_orchestrator_url``). ``api_key`` defaults to
    ``ORCHESTRATOR_API_KEY`` and is sent as ``Authorization: Bearer <key>``. A key with a control or non-ASCII
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
        check_orchestrator_url(base_url)
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
        # None until /health returned a status other than 5xx; then whether it lists the batch endpoint.
        self._batch_supported: bool | None = None
        self._health_failures = 0  # 5xx responses from /health in a row
        self._health_recheck_at = 0.0  # time.monotonic() before which /health is not read again
        self._health_recheck_seconds = HEALTH_RECHECK_SECONDS
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
        """Read ``/health`` and return whether it offers the batch endpoint.

        A status other than 5xx is remembered for the recommender's life.
        A transport failure, 429, 502, 503, 504, 404 or 405 is raised and
        nothing is remembered, so the next call reads ``/health`` again.
        Another 5xx (such as 500) returns False, so this call goes one
        transaction per request, and ``/health`` is read again once its
        recheck delay has passed.
        """
        if self._batch_supported is not None:
            return self._batch_supported
        if time.monotonic() < self._health_recheck_at:
            return False

        async with self._discover_lock:
            if self._batch_supported is not None:
                return self._batch_supported
            if time.monotonic() < self._health_recheck_at:
                return False

            response = await self._send("GET", HEALTH_PATH)
            if response.status_code >= 500:
                self._note_health_failure(response)
                return False

            self._batch_supported = response.status_code == 200 and _lists_batch(response)
            self._health_failures = 0
            log.info(
                "orchestrator discovered",
                url=redact(self.base_url),
                health_status=response.status_code,
                batch=self._batch_supported,
            )
            if not self._batch_supported:
                log.warning(
                    f"GET /health does not list {BATCH_PATH}, so the consumer sends one POST /recommend per "
                    "transaction. To enable batching, GET /health must return HTTP 200 with a JSON object "
                    f'whose "endpoints" list contains "{BATCH_PATH}" (see {CONTRACT_DOC})',
                    url=redact(self.base_url + HEALTH_PATH), health_status=response.status_code,
                    detail=_short(response.text, 200),
                )
        return self._batch_supported

    def _note_health_failure(self, response: httpx.Response) -> None:
        """Schedule the next ``/health`` read after a 5xx response that is not retried, and log it."""
        self._health_failures += 1
        delays = self._health_recheck_seconds
        delay = delays[min(self._health_failures, len(delays)) - 1]
        self._health_recheck_at = time.monotonic() + delay
        log.warning(
            f"GET /health failed with HTTP {response.status_code}, so whether the orchestrator offers "
            f"{BATCH_PATH} is unknown; sending one POST /recommend per transaction meanwhile, and reading "
            "/health again after recheck_in_seconds",
            url=redact(self.base_url + HEALTH_PATH), health_status=response.status_code,
            failures_in_a_row=self._health_failures, recheck_in_seconds=delay, detail=_error_detail(response),
        )

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
        indexes = [result.index for result in batch.results]
        if indexes != list(range(len(items))):
            return _contract_errors(response, len(items), describe_indexes(indexes, len(items)))

        outcomes: list[Recommendation | ItemError] = []
        for item, result in zip(items, batch.results):
            if result.ok and result.recommendation is not None:
                outcomes.append(self._to_recommendation(item, result.recommendation, response))
            elif result.error is not None:
                # The HTTP status is the batch's (200); the item's own status is not in the contract.
                outcomes.append(ItemError(result.error.type, result.error.message, http_status=response.status_code))
            else:
                outcomes.append(ItemError("contract_error", f"batch result {result.index} has neither a recommendation nor an error", response.status_code))
        return outcomes

    async def _split_batch(self, items: Sequence[WorkItem], response: httpx.Response) -> list[Recommendation | ItemError]:
        """Send each half of a batch the orchestrator rejected as too large (413), or dead-letter a lone item.

        Later batches are cut to the half's size up front, so that a small
        request body limit costs one 413 per size step, not one per batch.
        """
        request_bytes = len(response.request.content)
        if len(items) == 1:
            return [_too_large_error(response, request_bytes)]

        half = (len(items) + 1) // 2
        if half < self.max_batch_items:
            self.max_batch_items = half
            log.warning(
                "orchestrator rejected a batch as too large (HTTP 413); splitting it in halves, and later "
                "batch calls carry at most max_batch_items transactions. To send larger batches, raise the "
                "orchestrator's request body limit (--max-body-bytes for `rewardpilot orchestrator`)",
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
        return self._to_recommendation(item, answer, response)

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
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"{method} {path} timed out after {self.timeout:g} s ({type(exc).__name__}); if the orchestrator "
                "needs longer, raise --timeout of `rewardpilot consume` (seconds per orchestrator request)"
            ) from exc
        except TRANSIENT_EXCEPTIONS as exc:
            raise TransientError(f"{method} {path} failed: {type(exc).__name__}: {str(exc) or '(no message)'}") from exc
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
        """Build the error for a 404 or 405: the base URL's path is wrong, or the server lacks this endpoint."""
        reason = "not found" if status == 404 else "method not allowed"
        url = f"{redact(self.base_url)}{path}"
        check_path = (
            "check the path of --orchestrator or ORCHESTRATOR_URL. The bundled orchestrator serves "
            f"{HEALTH_PATH} and /recommend at the root of its address, such as http://127.0.0.1:8080"
        )
        if path == HEALTH_PATH:
            message = (
                f"{method} {url} returned HTTP {status} ({reason}). The consumer needs GET {HEALTH_PATH} "
                f"before it sends any transaction ({CONTRACT_DOC}). If the orchestrator has no GET "
                f"{HEALTH_PATH}, add one that returns HTTP 200 with a JSON object such as "
                f'{{"endpoints": ["{HEALTH_PATH}", "/recommend", "{BATCH_PATH}"]}}. If it has one, the URL is '
                f"wrong: {check_path}. The entries stay pending until this is fixed"
            )
        else:
            message = (
                f"{method} {url} returned HTTP {status} ({reason}), so the orchestrator is not at this URL's "
                f"path or does not offer {method} {path} ({CONTRACT_DOC}): {check_path}. The entries stay "
                "pending until the URL is fixed"
            )
        return ConfigurationError(message, status=status)

    def _to_recommendation(self, item: WorkItem, answer: RecommendResponse,
                           response: httpx.Response) -> Recommendation | ItemError:
        source = item.wallet_source if item.wallet is not None else None
        try:
            return answer.to_recommendation(item.transaction, wallet_source=source, recommender=self.name)
        except EchoMismatchError as exc:
            # Shorter than _contract_errors, so that `dlq list` (120 characters) shows both ids.
            request = response.request
            return ItemError("contract_error", f"{request.method} {request.url.path}: {exc}",
                             http_status=response.status_code)
        except (ValueError, ArithmeticError, ValidationError) as exc:
            return _contract_errors(response, 1, f"the answer does not fit a recommendation: {_short(exc)}")[0]


def request_body(item: WorkItem) -> dict[str, Any]:
    """Write a work item as a ``/recommend`` request body, with every transaction field the engine reads.

    ``amount_usd`` goes as a JSON number, as the contract documents. A
    whole-cent amount under $10 million survives the float round trip,
    because Python writes the shortest repr that reads back the same. The
    currency, merchant country, card used and conversion follow as
    ``purchase_facts`` writes them, so a foreign purchase loses no U.S.-only
    bonus and no foreign transaction fee on the way.
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
    body.update(purchase_facts(transaction))
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
        f"{request_bytes} bytes), so it cannot be split further: raise the orchestrator's request body "
        f"limit (--max-body-bytes for `rewardpilot orchestrator`), then put the entry back with "
        f"`rewardpilot dlq redrive`. Server's message: "
        f"{_error_detail(response)}"
    )
    return ItemError(_error_type(response), message, http_status=PAYLOAD_TOO_LARGE,
                     reason="too large for the orchestrator")


def _contract_errors(response: httpx.Response, count: int, reason: str) -> list[ItemError]:
    message = f"the orchestrator's answer to {response.request.method} {response.request.url.path} is invalid: {reason}"
    return [ItemError("contract_error", message, http_status=response.status_code) for _ in range(count)]


def describe_indexes(indexes: list[int], count: int) -> str:
    """Describe how a batch response's result indexes differ from ``0..count-1`` in order."""
    expected = range(count)
    seen = Counter(indexes)
    missing = [index for index in expected if index not in seen]
    extra = sorted(index for index, times in seen.items() if index not in expected or times > 1)
    parts = [f"the response has {len(indexes)} results for {count} items"]
    if missing:
        parts.append(f"missing indexes {_listed(missing)}")
    if extra:
        parts.append(f"extra or repeated indexes {_listed(extra)}")
    if not missing and not extra:
        position = next(position for position, index in enumerate(indexes) if index != position)
        parts.append(f"out of order: position {position} has index {indexes[position]}")
    return "; ".join(parts) + ". Return one result per transaction, in request order, with index 0, 1, 2, ..."


def _listed(indexes: list[int]) -> str:
    listed = ", ".join(str(index) for index in indexes[:MAX_LISTED_INDEXES])
    more = len(indexes) - MAX_LISTED_INDEXES
    return f"[{listed}, ... ({more} more)]" if more > 0 else f"[{listed}]"


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
