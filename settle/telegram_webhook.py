"""``POST /webhooks/telegram``: the bot's updates, as Telegram delivers them.

Telegram sends the ``secret_token`` given to setWebhook in the
``X-Telegram-Bot-Api-Secret-Token`` header; anything without it is refused
(401 missing, 403 wrong) and changes nothing. Telegram is not configured: 404.
The answer to ``/start`` goes back in the response body, as a Bot API call
Telegram makes on our behalf (``{"method": "sendMessage", ...}``): no second
request, and nothing to send when the update is a redelivery.
"""

from __future__ import annotations

import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from settle.core.outbox import transaction
from settle.core.settings import Settings
from settle.services import telegram as telegram_service

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def receive_update(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    secret = settings.telegram_webhook_secret
    if not settings.telegram_enabled or secret is None:
        return JSONResponse({"code": "NOT_FOUND", "message": "Telegram is not configured"}, 404)
    given = request.headers.get(SECRET_HEADER)
    if given is None:
        return JSONResponse({"code": "UNAUTHENTICATED", "message": f"{SECRET_HEADER} missing"}, 401)
    if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
        log.warning("telegram.webhook_invalid_secret")
        return JSONResponse({"code": "INVALID_SECRET", "message": f"{SECRET_HEADER} wrong"}, 403)
    body = await request.body()
    try:
        update = json.loads(body)
    except ValueError:
        return JSONResponse({"code": "INVALID_JSON", "message": "The body is not JSON"}, 400)
    command = telegram_service.parse_start(update)
    if command is None:
        # Telegram redelivers what is not acknowledged; what Settle ignores is acknowledged.
        return JSONResponse({})
    async with transaction():
        reply = await telegram_service.handle_start(command)
    if reply is None:
        log.info("telegram.update_redelivered", extra={"update_id": command.update_id})
        return JSONResponse({})
    return JSONResponse({"method": "sendMessage", "chat_id": command.chat_id, "text": reply})


def telegram_routes() -> list[Route]:
    """Listed before ``/webhooks/{provider}``, which would otherwise take the path."""
    return [Route("/webhooks/telegram", receive_update, methods=["POST"])]
