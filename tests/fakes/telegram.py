"""A small stateful fake of the Telegram Bot API, for tests.

It speaks the part of the Bot API Settle uses, as Telegram documents it: every
method at ``POST /bot<token>/<method>`` with a JSON (or form) body, answered with
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": ...,
"description": ...}`` (a wrong token is 401 Unauthorized, an unknown method 404
Not Found). ``getMe``; ``sendMessage`` (to a chat that started the bot, 1-4096
characters; with ``parse_mode`` MarkdownV2 every reserved character outside an
escape is refused, as Telegram refuses it — stricter than Telegram, which also
takes formatting, but Settle sends escaped text only); ``setWebhook``
(``secret_token`` 1-256 of ``A-Za-z0-9_-``), ``getWebhookInfo``, ``deleteWebhook``.

Test controls under ``/_fake/`` (never part of the Bot API): a user starts the
bot (``start``: the chat exists from then on, and an update is built as Telegram
would deliver it), a user blocks the bot (403 ``Forbidden: bot was blocked by the
user`` for that chat), the next requests answer 429 with ``retry_after`` or 5xx,
answer as a proxy in front of the API would (an HTML page, maybe ``Retry-After``),
read the messages of a chat, and reset.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

Handler = Callable[[dict[str, Any]], dict[str, Any] | bool | list[Any]]

_RESERVED = set("_*[]()~`>#+-=|{}.!")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


class BotApiError(Exception):
    def __init__(
        self, error_code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return JSONResponse(body, status_code=self.error_code)


def check_markdown_v2(text: str) -> None:
    """Refuse, as Telegram does, a reserved character that is not escaped."""
    escaped = False
    for offset, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _RESERVED:
            raise BotApiError(
                400,
                f"Bad Request: can't parse entities: Character '{char}' is reserved and must "
                f"be escaped with the preceding '\\' (offset {offset})",
            )


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeTelegram:
    """The fake's state and its Starlette app (``app``); one instance per test session."""

    def __init__(self, *, token: str, username: str) -> None:
        self.token = token
        self.username = username
        self.bot_id = int(token.split(":", 1)[0])
        self.reset_state()
        methods: dict[str, Handler] = {
            "getMe": self.get_me,
            "sendMessage": self.send_message,
            "setWebhook": self.set_webhook,
            "getWebhookInfo": self.get_webhook_info,
            "deleteWebhook": self.delete_webhook,
        }
        self.methods = methods
        controls: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = [
            ("GET", "/_fake/health", self.health),
            ("POST", "/_fake/start", self.start),
            ("POST", "/_fake/chats/{chat_id:int}/block", self.block),
            ("GET", "/_fake/chats/{chat_id:int}/messages", self.messages),
            ("GET", "/_fake/state", self.state),
            ("POST", "/_fake/faults", self.add_faults),
            ("POST", "/_fake/reset", self.reset),
        ]
        routes = [Route("/bot{token}/{method}", self.api, methods=["GET", "POST"])]
        routes += [Route(path, handler, methods=[m]) for m, path, handler in controls]
        self.app = Starlette(routes=routes)

    def reset_state(self) -> None:
        self.chats: dict[int, dict[str, Any]] = {}
        self.blocked: set[int] = set()
        self.sent: dict[int, list[dict[str, Any]]] = {}
        self.faults: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] = {"url": ""}
        self.requests: list[str] = []
        self.next_message_id = 1
        self.next_update_id = 700_000_001

    # --- the Bot API -------------------------------------------------------------------------

    async def api(self, request: Request) -> Response:
        given = request.path_params["token"]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return BotApiError(401, "Unauthorized").response()
        method = request.path_params["method"]
        handler = self.methods.get(method)
        if handler is None:
            return BotApiError(404, "Not Found").response()
        self.requests.append(method)
        try:
            if self.faults:
                fault = self.faults.pop(0)
                if fault["mode"] == "proxy":
                    return self._proxy_answer(fault)
                self._fault(fault)
            result = handler(await self._params(request))
        except BotApiError as exc:
            return exc.response()
        return JSONResponse({"ok": True, "result": result})

    @staticmethod
    def _proxy_answer(fault: dict[str, Any]) -> Response:
        """What a proxy in front of the Bot API answers: a page, not the API's JSON."""
        status = int(fault.get("status", 502))
        headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
        return HTMLResponse(f"<html><body>{status}</body></html>", status, headers=headers)

    @staticmethod
    def _fault(fault: dict[str, Any]) -> None:
        if fault["mode"] == "429":
            retry_after = int(fault.get("retry_after", 1))
            raise BotApiError(
                429,
                f"Too Many Requests: retry after {retry_after}",
                {"retry_after": retry_after},
            )
        raise BotApiError(int(fault.get("status", 500)), "Internal Server Error")

    @staticmethod
    async def _params(request: Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = json.loads(await request.body() or b"{}")
            except ValueError:
                raise BotApiError(400, "Bad Request: can't parse JSON") from None
            if not isinstance(data, dict):
                raise BotApiError(400, "Bad Request: parameters must be an object")
            return data
        form = await request.form()
        return {key: value for key, value in form.items() if isinstance(value, str)}

    def get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Settle",
            "username": self.username,
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            chat_id = int(params.get("chat_id", ""))
        except (TypeError, ValueError):
            raise BotApiError(400, "Bad Request: chat not found") from None
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BotApiError(400, "Bad Request: message text is empty")
        if _utf16_length(text) > 4096:
            raise BotApiError(400, "Bad Request: message is too long")
        parse_mode = params.get("parse_mode")
        if parse_mode == "MarkdownV2":
            check_markdown_v2(text)
        elif parse_mode is not None:
            raise BotApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
        if chat_id in self.blocked:
            raise BotApiError(403, "Forbidden: bot was blocked by the user")
        chat = self.chats.get(chat_id)
        if chat is None:
            raise BotApiError(400, "Bad Request: chat not found")
        message = {
            "message_id": self.next_message_id,
            "from": self.get_me({}),
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }
        self.next_message_id += 1
        self.sent.setdefault(chat_id, []).append(
            message
            | {"parse_mode": parse_mode, "link_preview_options": params.get("link_preview_options")}
        )
        return message

    def set_webhook(self, params: dict[str, Any]) -> bool:
        url = params.get("url")
        if not isinstance(url, str) or (not url.startswith("https://") and url != ""):
            raise BotApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        secret = params.get("secret_token")
        if secret is not None and (not isinstance(secret, str) or not _SECRET.fullmatch(secret)):
            raise BotApiError(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = {
            "url": url,
            "secret_token": secret,
            "allowed_updates": params.get("allowed_updates"),
            "drop_pending_updates": params.get("drop_pending_updates"),
        }
        return True

    def get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": self.webhook["url"],
            "has_custom_certificate": False,
            "pending_update_count": 0,
            "allowed_updates": self.webhook.get("allowed_updates") or [],
        }

    def delete_webhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {"url": ""}
        return True

    # --- test controls -----------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def start(self, request: Request) -> Response:
        """A user opens the bot: their chat exists from now on; the update Telegram sends."""
        data = await request.json()
        chat_id = int(data["chat_id"])
        username = data.get("username")
        user = {"id": chat_id, "is_bot": False, "first_name": data.get("first_name", "Test")}
        chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
        if username:
            user["username"] = chat["username"] = username
        self.chats[chat_id] = chat
        self.blocked.discard(chat_id)
        text = data.get("text", "/start")
        command_length = len(text.split(" ", 1)[0]) if text.startswith("/") else 0
        message: dict[str, Any] = {
            "message_id": self.next_message_id,
            "from": user,
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }
        if command_length:
            message["entities"] = [{"offset": 0, "length": command_length, "type": "bot_command"}]
        self.next_message_id += 1
        update = {"update_id": self.next_update_id, "message": message}
        self.next_update_id += 1
        return JSONResponse(update)

    async def block(self, request: Request) -> Response:
        self.blocked.add(request.path_params["chat_id"])
        return JSONResponse({"ok": True})

    async def messages(self, request: Request) -> Response:
        return JSONResponse(self.sent.get(request.path_params["chat_id"], []))

    async def state(self, request: Request) -> Response:
        return JSONResponse({"webhook": self.webhook, "requests": self.requests})

    async def add_faults(self, request: Request) -> Response:
        """The next ``count`` API requests answer 429 (``retry_after``), a 5xx ``status``, or
        (``proxy``) a page with ``status`` and maybe a ``Retry-After`` header."""
        data = await request.json()
        fault = {key: data[key] for key in ("mode", "retry_after", "status") if key in data}
        self.faults.extend(dict(fault) for _ in range(int(data.get("count", 1))))
        return JSONResponse({"ok": True})

    async def reset(self, request: Request) -> Response:
        self.reset_state()
        return JSONResponse({"ok": True})
