"""How GraphQL requests arrive: JSON bodies and websocket frames, parsed safely.

Strawberry parses bodies, query-string variables and websocket frames with
``json.loads`` and answers a body it cannot use with a plain-text 400. Here the
same view parses them with ``settle.core.json_input`` (UTF-8 only, nested at
most 64 deep, numbers Python can convert) and answers a bad request as a
GraphQL response with a code; a websocket frame that is not a message object
closes the socket with 4400 (``graphql-transport-ws``) or is ignored (the
legacy ``graphql-ws``, which ignores what it cannot parse) instead of crashing
the handler.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, WebSocketDisconnected

from settle.core import json_input

# Codes of the requests Strawberry refuses before any operation is read.
_STATUS_CODES = {405: "METHOD_NOT_ALLOWED", 415: "UNSUPPORTED_MEDIA_TYPE"}


class SafeWebSocketAdapter(ASGIWebSocketAdapter):
    """Hands the protocol handlers only JSON objects with a string ``type``."""

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        async for message in super().iter_json(ignore_parsing_errors=ignore_parsing_errors):
            if isinstance(message, dict) and isinstance(message.get("type"), str):
                yield message
            elif not ignore_parsing_errors:
                # The handlers index the message as an object: an array, a number or a
                # string would raise inside them and drop the socket without a close code.
                raise NonJsonMessageReceived

    async def send_text(self, text: str) -> None:
        """Send an already encoded frame (see ``settle.subscriptions.frames``)."""
        try:
            await self.ws.send_text(text)
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class SafeInputView:
    """Mixed into the GraphQL view, before Strawberry's ``GraphQL``."""

    websocket_adapter_class = SafeWebSocketAdapter

    def decode_json(self, data: str | bytes) -> object:
        return json_input.loads(data)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # type: ignore[misc]
            return
        try:
            response: Response = await self.run(Request(scope, receive))  # type: ignore[attr-defined]
        except HTTPException as exc:
            response = bad_request(exc)
        await response(scope, receive, send)


def bad_request(exc: HTTPException) -> Response:
    """A request Strawberry refused, as a GraphQL response with a code."""
    cause = exc.__cause__
    error: dict[str, Any]
    if isinstance(cause, json_input.InvalidJSONError):
        error = {"message": cause.message, "extensions": {"code": cause.code}}
    else:
        code = _STATUS_CODES.get(exc.status_code, "BAD_REQUEST")
        error = {"message": exc.reason, "extensions": {"code": code}}
    # ASCII JSON, as Strawberry writes its answers: a message may quote what the caller
    # sent (an operation name), and a lone surrogate in it has no UTF-8 encoding.
    body = json.dumps({"data": None, "errors": [error]})
    return Response(body, status_code=exc.status_code, media_type="application/json")
