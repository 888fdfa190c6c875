"""Telegram channel: a small Bot API client over httpx, or .txt files when no token is set.

Settle calls three methods (sendMessage, getMe, setWebhook), so plain HTTP with
httpx, already a dependency, is all it takes: the client libraries
(python-telegram-bot, aiogram) are whole bot frameworks with their own
application loop, and one brings its own HTTP stack. Here each call's failure
maps to exactly what the caller must do:

- ``TelegramTemporaryError``: try again (429 Too Many Requests with
  ``retry_after`` in seconds, 5xx, or no answer at all);
- ``TelegramBlockedError``: 403, the user blocked the bot: stop writing to the chat;
- ``TelegramPermanentError``: any other refusal (400 chat not found, 401 bad token):
  the same request will fail again.

Without a bot token (the embedded run, tests) messages are logged and written
under ``<var_dir>/telegram/`` instead, so a developer can read what would have
been sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from settle.core.settings import Settings

log = logging.getLogger(__name__)

# Telegram refuses a message longer than this (counted in UTF-16 code units).
MAX_MESSAGE_LENGTH = 4096
TIMEOUT_SECONDS = 10.0
# The characters MarkdownV2 reserves; each must be escaped with a backslash in plain text.
MARKDOWN_V2_RESERVED = "_*[]()~`>#+-=|{}.!\\"
_MARKDOWN_V2 = re.compile("([" + re.escape(MARKDOWN_V2_RESERVED) + "])")
# The token is part of every Bot API URL (https://api.telegram.org/bot<token>/sendMessage).
_TOKEN_IN_URL = re.compile(r"/bot[^/\s]+/")


class _RedactBotToken(logging.Filter):
    """httpx logs each request's URL at INFO; the bot token in it must not reach the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_URL.sub("/bot[redacted]/", str(arg))
                if isinstance(arg, str | httpx.URL)
                else arg
                for arg in record.args
            )
        return True


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, _RedactBotToken) for f in _httpx_log.filters):
    _httpx_log.addFilter(_RedactBotToken())


class TelegramError(Exception):
    """The Bot API refused or did not answer; ``description`` is Telegram's own words."""

    def __init__(self, description: str, *, error_code: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.error_code = error_code


class TelegramTemporaryError(TelegramError):
    """Worth retrying; after ``retry_after`` seconds when Telegram said so (429)."""

    def __init__(
        self, description: str, *, error_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(description, error_code=error_code)
        self.retry_after = retry_after


class TelegramBlockedError(TelegramError):
    """403: the chat blocked the bot (or the user deleted their account)."""


class TelegramPermanentError(TelegramError):
    """Refused for good: the same request fails again (400 chat not found, 401 bad token)."""


class TelegramNotConfiguredError(Exception):
    """A call that needs the bot token (getMe, setWebhook) without one."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    transport: Literal["api", "file"]
    # Telegram's message id, or for a written message the file's name.
    message_id: str
    path: Path | None = None


def escape_markdown_v2(text: str) -> str:
    """``text`` as MarkdownV2 that shows exactly ``text``: every reserved character escaped."""
    return _MARKDOWN_V2.sub(r"\\\1", text)


def fit_message(text: str) -> str:
    """``text`` cut to Telegram's 4096 UTF-16 code units, ending with an ellipsis if cut."""
    if _utf16_length(text) <= MAX_MESSAGE_LENGTH:
        return text
    kept: list[str] = []
    used = 1  # the ellipsis
    for char in text:
        used += _utf16_length(char)
        if used > MAX_MESSAGE_LENGTH:
            break
        kept.append(char)
    return "".join(kept) + "…"


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class TelegramClient:
    """The Bot API at ``settings.telegram_api_base`` with ``settings.telegram_bot_token``."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float = TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self._transport = transport

    @property
    def configured(self) -> bool:
        return self.settings.telegram_bot_token is not None

    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        parse_mode: Literal["MarkdownV2"] | None = None,
    ) -> SentMessage:
        """Send ``text`` to ``chat_id`` (plain text unless ``parse_mode``); no token: a file."""
        if not text.strip():
            raise ValueError("a Telegram message needs some text")
        text = fit_message(text)
        if not self.configured:
            path = await asyncio.to_thread(
                _write_message, self.settings.telegram_dir, chat_id, text, parse_mode
            )
            log.info(
                "telegram.message_written",
                extra={"chat_id": chat_id, "path": str(path), "text": text},
            )
            return SentMessage(transport="file", message_id=path.stem, path=path)
        payload: dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            # Payment links must not unfurl into a preview of the checkout page.
            "link_preview_options": {"is_disabled": True},
        }
        if parse_mode is not None:
            payload["parse_mode"] = parse_mode
        result = await self._call("sendMessage", payload)
        return SentMessage(transport="api", message_id=str(result["message_id"]))

    async def get_me(self) -> dict[str, Any]:
        """The bot itself: ``{"id", "is_bot", "username", ...}``; checks the token works."""
        result: dict[str, Any] = await self._call("getMe", {})
        return result

    async def set_webhook(
        self, url: str, *, secret_token: str, drop_pending_updates: bool = False
    ) -> None:
        """Have Telegram post the bot's messages to ``url`` with ``secret_token`` in a header."""
        await self._call(
            "setWebhook",
            {
                "url": url,
                "secret_token": secret_token,
                # Only messages: /start is all Settle reads.
                "allowed_updates": ["message"],
                "drop_pending_updates": drop_pending_updates,
            },
        )

    async def get_webhook_info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("getWebhookInfo", {})
        return result

    async def _call(self, method: str, payload: dict[str, Any]) -> Any:
        token = self.settings.telegram_bot_token
        if token is None:
            raise TelegramNotConfiguredError("SETTLE_TELEGRAM_BOT_TOKEN is not set")
        url = (
            f"{self.settings.telegram_api_base.rstrip('/')}/bot{token.get_secret_value()}/{method}"
        )
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as http:
                response = await http.post(url, json=payload)
        except httpx.HTTPError as exc:
            # The exception's text may carry the URL, and with it the token.
            reason = _TOKEN_IN_URL.sub("/bot[redacted]/", str(exc)) or type(exc).__name__
            raise TelegramTemporaryError(f"Telegram did not answer: {reason}") from None
        return _result(response)


@dataclass(frozen=True, slots=True)
class WebhookRegistration:
    bot_username: str
    url: str


async def register_webhook(
    settings: Settings, *, drop_pending_updates: bool = False, client: TelegramClient | None = None
) -> WebhookRegistration:
    """Point the bot's updates at ``<SETTLE_PUBLIC_BASE_URL>/webhooks/telegram`` (the CLI's)."""
    secret = settings.telegram_webhook_secret
    if settings.telegram_bot_token is None:
        raise TelegramNotConfiguredError("SETTLE_TELEGRAM_BOT_TOKEN is not set")
    if secret is None:
        raise TelegramNotConfiguredError("SETTLE_TELEGRAM_WEBHOOK_SECRET is not set")
    url = f"{settings.public_base_url.rstrip('/')}/webhooks/telegram"
    if not url.startswith("https://"):
        raise TelegramNotConfiguredError(
            f"Telegram delivers webhooks over HTTPS only, and {url} is not: set "
            "SETTLE_PUBLIC_BASE_URL to the https:// address Telegram can reach"
        )
    client = client or TelegramClient(settings)
    me = await client.get_me()
    username = str(me.get("username") or "")
    expected = settings.telegram_bot_username
    if expected and username.lower() != expected.lower():
        # Links would open a different bot than the one whose updates arrive.
        raise TelegramNotConfiguredError(
            f"the token is @{username}'s, but SETTLE_TELEGRAM_BOT_USERNAME is @{expected}"
        )
    await client.set_webhook(
        url, secret_token=secret.get_secret_value(), drop_pending_updates=drop_pending_updates
    )
    return WebhookRegistration(bot_username=username, url=url)


def _result(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        description = f"HTTP {response.status_code} without a Bot API answer"
        if response.status_code == 429:
            # A proxy in front of the Bot API may say when in the header instead.
            header = response.headers.get("retry-after", "")
            retry_after = float(header) if header.isdigit() else None
            raise TelegramTemporaryError(description, error_code=429, retry_after=retry_after)
        if response.status_code >= 500:
            raise TelegramTemporaryError(description, error_code=response.status_code)
        raise TelegramPermanentError(description, error_code=response.status_code)
    if body.get("ok") is True and response.status_code == 200:
        return body.get("result")
    code = body.get("error_code")
    error_code = code if isinstance(code, int) else response.status_code
    description = str(body.get("description") or f"HTTP {response.status_code}")
    parameters = body.get("parameters")
    if not isinstance(parameters, dict):
        parameters = {}
    if error_code == 429:
        retry_after = parameters.get("retry_after")
        raise TelegramTemporaryError(
            description,
            error_code=error_code,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        )
    if error_code >= 500:
        raise TelegramTemporaryError(description, error_code=error_code)
    if error_code == 403:
        raise TelegramBlockedError(description, error_code=error_code)
    raise TelegramPermanentError(description, error_code=error_code)


def _write_message(directory: Path, chat_id: int, text: str, parse_mode: str | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    digest = hashlib.sha256(f"{chat_id}:{now.isoformat()}:{text}".encode()).hexdigest()[:12]
    path = directory / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{digest}.txt"
    header = {"chat_id": chat_id, "parse_mode": parse_mode, "date": now.isoformat()}
    content = f"{json.dumps(header)}\n\n{text}\n"
    # Written aside and renamed, as .eml files are: a reader never sees half a message.
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=".", suffix=".txt.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(content)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path
