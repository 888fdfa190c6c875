"""Request body limits for ``/graphql`` and ``/webhooks/*``, enforced as the body arrives.

A body is refused with 413 as soon as it is known to be too large: at once when
its ``Content-Length`` says so, else when the bytes received so far pass the
limit (a chunked body, or one whose ``Content-Length`` lied). The handler never
sees a byte of a refused body and the rest of it is never read, so a few
concurrent 100 MB uploads cost no more memory than a few 1 MB ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from settle.core.settings import Settings

# The paths whose bodies are limited: GraphQL operations and gateway webhooks are all
# small (a gateway sends a few KiB). File uploads have their own limits and routes.
LIMITED_PATHS: Sequence[str] = ("/graphql", "/webhooks/")


class BodyTooLarge(Exception):
    """Raised into the handler's ``receive`` when the body passes the limit."""


class BodySizeLimit:
    """Pure ASGI middleware: 413 for a body over ``settings.max_body_bytes`` on LIMITED_PATHS."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_bytes = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _limited(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            if started:
                # The handler answered before it read the whole body and then asked for
                # more: its answer stands, and the server closes the connection.
                return
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"The request body is larger than {self.max_bytes} bytes"
        if scope["path"].startswith("/graphql"):
            payload: dict[str, object] = {
                "data": None,
                "errors": [
                    {
                        "message": message,
                        "extensions": {"code": "REQUEST_TOO_LARGE", "maxBytes": self.max_bytes},
                    }
                ],
            }
        else:
            payload = {"code": "REQUEST_TOO_LARGE", "message": message}
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is never read, so the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _limited(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix) for prefix in LIMITED_PATHS)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
