"""ASGI middleware of the orchestrator: bearer-key auth and a request body size limit.

Both are plain ASGI so that they guard every route the same way, the MCP
endpoint and the OpenAPI document included, not only the FastAPI routes.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset({"/health"})


def bearer_matches(authorization: str | None, api_key: str) -> bool:
    """Return whether an ``Authorization`` header carries ``Bearer <api_key>``.

    The key is compared with ``hmac.compare_digest``, so the time taken does
    not reveal how much of a wrong key matched. The scheme name is
    case-insensitive (RFC 9110 11.1).
    """
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), api_key.encode("utf-8"))


async def send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON response."""
    payload = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode("ascii")),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BearerAuthMiddleware:
    """Reject every HTTP request but ``/health`` with 401 unless it carries the API key."""

    def __init__(self, app: ASGIApp, *, api_key: str):
        if not api_key:
            raise ValueError("api_key must not be empty; leave it unset to turn authentication off")
        self.app = app
        self._api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return

        if bearer_matches(_header(scope, b"authorization"), self._api_key):
            await self.app(scope, receive, send)
            return

        await send_json(
            send,
            401,
            {
                "detail": "missing or invalid API key",
                "error": {
                    "type": "unauthorized",
                    "message": "missing or invalid API key; send the header 'Authorization: Bearer <key>' "
                    "with the key set in ORCHESTRATOR_API_KEY on the server",
                    "fields": [],
                },
            },
            headers=[(b"www-authenticate", b'Bearer realm="rewardpilot"')],
        )


class BodyLimitMiddleware:
    """Answer 413 for a request body over ``max_body_bytes``.

    A declared ``Content-Length`` over the limit is rejected before any byte
    is read. A body without one (chunked transfer) is counted as it streams
    in. Once the count passes the limit the client gets the 413, and the
    route sees a disconnect and its own response is dropped.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int):
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            await send_json(send, 413, self._error_body(f"Content-Length {int(declared)}"))
            return

        received = 0
        rejected = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}

            message = await receive()
            if message["type"] != "http.request":
                return message

            received += len(message.get("body", b""))
            if received <= self.max_body_bytes:
                return message

            rejected = True
            if not response_started:
                await send_json(send, 413, self._error_body(f"more than {self.max_body_bytes} bytes"))
            return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    def _error_body(self, size: str) -> dict:
        message = (
            f"request body too large: {size} is over the limit of {self.max_body_bytes} bytes; "
            "split the batch into smaller requests, or raise the orchestrator's --max-body-bytes"
        )
        return {"detail": message, "error": {"type": "payload_too_large", "message": message, "fields": []}}
