"""Telegram: linking a user's chat with a one-time deep link, and sending to that chat.

A user asks for a link (``create_link``): ``https://t.me/<bot>?start=<token>``.
Opening it in Telegram sends ``/start <token>`` to the bot; Telegram posts that
update to ``/webhooks/telegram`` (``handle_update``), which consumes the token
once and stores the chat for the user. ``send_to_user`` is what the
notification channel calls; a chat that blocked the bot is unlinked there.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from tortoise.exceptions import IntegrityError

from settle.core import clock
from settle.core.auth import hash_opaque_token
from settle.core.errors import NotFoundError, ValidationError
from settle.core.outbox import transaction
from settle.core.settings import Settings, get_settings
from settle.core.tenancy import Actor
from settle.models.agency import Agency, User
from settle.models.notification import Channel
from settle.models.telegram import (
    TelegramChat,
    TelegramLinkToken,
    TelegramUnlinkReason,
    TelegramUpdate,
)
from settle.notifications.channels import (
    ChannelError,
    OutgoingMessage,
    RecipientUnreachableError,
    SendResult,
)
from settle.notifications.telegram import (
    TelegramBlockedError,
    TelegramClient,
    TelegramPermanentError,
    TelegramTemporaryError,
)

log = logging.getLogger(__name__)

# Telegram's start parameter: up to 64 characters of A-Z, a-z, 0-9, _ and -.
START_PARAMETER = re.compile(r"[A-Za-z0-9_-]{1,64}")
# "/start <token>", or "/start@bot_name <token>" as group chats write it.
_START = re.compile(r"/start(?:@[A-Za-z0-9_]+)?(?:\s+(.*?))?\s*", re.DOTALL)
# token_urlsafe(32): 43 characters, all allowed in a start parameter.
TOKEN_BYTES = 32

LINKED_TEXT = (
    "Connected to Settle as {name} ({agency}). Settle's notifications will arrive in "
    "this chat. To stop them, unlink Telegram in Settle or block this bot."
)
ALREADY_LINKED_TEXT = "This chat is already connected to Settle as {name} ({agency})."
INVALID_LINK_TEXT = (
    "This link is invalid, used or expired. Ask Settle for a new Telegram link and open it "
    "within a few minutes."
)
NO_TOKEN_TEXT = "To connect this chat, open the Telegram link Settle gives you when you sign in."


@dataclass(frozen=True, slots=True)
class TelegramLink:
    url: str
    expires_at: datetime


def _require_enabled(settings: Settings) -> str:
    if not settings.telegram_enabled or not settings.telegram_bot_username:
        raise ValidationError(
            None,
            "Telegram is not configured on this server",
            code="TELEGRAM_NOT_CONFIGURED",
        )
    return settings.telegram_bot_username


async def create_link(settings: Settings, actor: Actor) -> TelegramLink:
    """A one-time deep link that links the chat it is opened in to the actor."""
    bot = _require_enabled(settings)
    now = clock.now()
    # One link per user: asking again ends the previous one (and keeps the table small).
    await TelegramLinkToken.filter(user_id=actor.user_id).delete()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires_at = now + timedelta(seconds=settings.telegram_link_ttl_seconds)
    await TelegramLinkToken.create(
        agency_id=actor.agency_id,
        user_id=actor.user_id,
        token_hash=hash_opaque_token(token),
        expires_at=expires_at,
    )
    return TelegramLink(url=f"https://t.me/{quote(bot)}?start={token}", expires_at=expires_at)


async def chat_for(actor: Actor) -> TelegramChat | None:
    """The actor's own chat, linked or not; None if they never linked one."""
    return await TelegramChat.get_or_none(user_id=actor.user_id, agency_id=actor.agency_id)


async def unlink(actor: Actor) -> TelegramChat:
    """Stop sending to the actor's chat; NotFoundError when none is linked."""
    chat = await (
        TelegramChat.filter(user_id=actor.user_id, agency_id=actor.agency_id)
        .select_for_update()
        .get_or_none()
    )
    if chat is None or chat.unlinked_at is not None:
        raise NotFoundError("Telegram chat")
    chat.unlinked_at = clock.now()
    chat.unlink_reason = TelegramUnlinkReason.USER
    chat.unlink_detail = None
    await chat.save(update_fields=["unlinked_at", "unlink_reason", "unlink_detail", "updated_at"])
    log.info("telegram.unlinked", extra={"user_id": str(actor.user_id)})
    return chat


# --- updates from the webhook ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartCommand:
    update_id: int
    chat_id: int
    username: str | None
    token: str | None


def parse_start(update: Any) -> StartCommand | None:
    """The ``/start`` command in a private chat that ``update`` carries, else None.

    Anything Settle does not act on (other messages, edits, group chats, shapes
    it does not know) is None, and is acknowledged and ignored.
    """
    if not isinstance(update, dict):
        return None
    update_id = update.get("update_id")
    message = update.get("message")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return None
    if not isinstance(message, dict):
        return None
    chat = message.get("chat")
    text = message.get("text")
    if not isinstance(chat, dict) or not isinstance(text, str) or len(text) > 4096:
        return None
    chat_id = chat.get("id")
    if not isinstance(chat_id, int) or isinstance(chat_id, bool) or chat.get("type") != "private":
        return None
    match = _START.fullmatch(text)
    if match is None:
        return None
    token = match.group(1)
    username = chat.get("username")
    return StartCommand(
        update_id=update_id,
        chat_id=chat_id,
        username=username[:64] if isinstance(username, str) and username else None,
        token=token if token is not None and START_PARAMETER.fullmatch(token) else None,
    )


async def handle_start(command: StartCommand) -> str | None:
    """Link the chat of a ``/start <token>`` once; the text to answer in the chat.

    None for an update already handled (Telegram redelivers until it gets a 2xx):
    its answer went out with the first delivery. Runs in the caller's transaction,
    which must be the one that records the update.
    """
    try:
        async with transaction():
            await TelegramUpdate.create(update_id=command.update_id, received_at=clock.now())
    except IntegrityError:
        return None
    if command.token is None:
        return NO_TOKEN_TEXT
    now = clock.now()
    token_hash = hash_opaque_token(command.token)
    claimed = await TelegramLinkToken.filter(
        token_hash=token_hash, used_at__isnull=True, expires_at__gt=now
    ).update(used_at=now)
    link = await TelegramLinkToken.get_or_none(token_hash=token_hash)
    if link is None:
        return INVALID_LINK_TEXT
    user = await User.get_or_none(id=link.user_id, is_active=True)
    if user is None:
        return INVALID_LINK_TEXT
    agency = await Agency.get(id=user.agency_id)
    if not claimed:
        # The same link opened twice in the chat it already linked: say so, kindly.
        same_chat = await TelegramChat.filter(
            user_id=user.id, chat_id=command.chat_id, unlinked_at__isnull=True
        ).exists()
        if same_chat:
            return ALREADY_LINKED_TEXT.format(name=user.name, agency=agency.name)
        return INVALID_LINK_TEXT
    chat = await TelegramChat.filter(user_id=user.id).select_for_update().get_or_none()
    if chat is None:
        await TelegramChat.create(
            agency_id=user.agency_id,
            user_id=user.id,
            chat_id=command.chat_id,
            username=command.username,
            linked_at=now,
        )
    else:
        chat.chat_id = command.chat_id
        chat.username = command.username
        chat.linked_at = now
        chat.unlinked_at = None
        chat.unlink_reason = None  # type: ignore[assignment]
        chat.unlink_detail = None
        await chat.save()
    log.info("telegram.linked", extra={"user_id": str(user.id), "chat_id": command.chat_id})
    return LINKED_TEXT.format(name=user.name, agency=agency.name)


# --- sending ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelegramSent:
    message_id: str
    transport: Literal["api", "file"]
    status: Literal["sent"] = "sent"


@dataclass(frozen=True, slots=True)
class TelegramSkipped:
    reason: Literal["not_linked"]
    status: Literal["skipped"] = "skipped"


@dataclass(frozen=True, slots=True)
class TelegramTemporary:
    """Try again later: after ``retry_after`` seconds when Telegram said (429)."""

    reason: str
    retry_after: float | None
    status: Literal["temporary"] = "temporary"


@dataclass(frozen=True, slots=True)
class TelegramPermanent:
    """Will fail again: ``code`` is ``blocked`` (the chat was unlinked) or ``rejected``."""

    code: Literal["blocked", "rejected"]
    reason: str
    status: Literal["permanent"] = "permanent"


TelegramOutcome = TelegramSent | TelegramSkipped | TelegramTemporary | TelegramPermanent


async def send_to_user(
    settings: Settings,
    user_id: uuid.UUID,
    text: str,
    *,
    parse_mode: Literal["MarkdownV2"] | None = None,
    client: TelegramClient | None = None,
) -> TelegramOutcome:
    """Send ``text`` to the user's linked chat; a chat that blocked the bot is unlinked.

    Call it outside a transaction: it waits on the network. The unlinking write
    opens its own (or joins the caller's).
    """
    chat = await TelegramChat.get_or_none(user_id=user_id, unlinked_at__isnull=True)
    if chat is None:
        return TelegramSkipped(reason="not_linked")
    client = client or TelegramClient(settings)
    try:
        sent = await client.send_message(chat.chat_id, text, parse_mode=parse_mode)
    except TelegramTemporaryError as exc:
        return TelegramTemporary(reason=exc.description, retry_after=exc.retry_after)
    except TelegramBlockedError as exc:
        await _unlink_blocked(chat.chat_id, exc.description)
        return TelegramPermanent(code="blocked", reason=exc.description)
    except TelegramPermanentError as exc:
        log.warning(
            "telegram.message_rejected",
            extra={
                "user_id": str(user_id),
                "error_code": exc.error_code,
                "reason": exc.description,
            },
        )
        return TelegramPermanent(code="rejected", reason=exc.description)
    return TelegramSent(message_id=sent.message_id, transport=sent.transport)


async def _unlink_blocked(chat_id: int, description: str) -> None:
    # Every user linked to this chat: the person blocked the bot, not one account of theirs.
    async with transaction():
        users = await TelegramChat.filter(chat_id=chat_id, unlinked_at__isnull=True).values_list(
            "user_id", flat=True
        )
        await TelegramChat.filter(chat_id=chat_id, unlinked_at__isnull=True).update(
            unlinked_at=clock.now(),
            unlink_reason=TelegramUnlinkReason.BLOCKED,
            unlink_detail=description[:500],
        )
    log.warning(
        "telegram.chat_blocked",
        extra={"user_ids": [str(user) for user in users], "reason": description},
    )


class TelegramSender:
    """Notifications by Telegram, to the recipient user's linked chat (contacts have none).

    Without a bot token the client writes each message under ``var/telegram/``
    and logs it, so the embedded run shows what would have been sent.
    """

    channel = Channel.TELEGRAM

    async def send(self, message: OutgoingMessage) -> SendResult:
        user_id = message.notification.user_id
        if user_id is None:
            raise RecipientUnreachableError("Only users link a Telegram chat; contacts have none")
        outcome = await send_to_user(get_settings(), user_id, message.rendered.telegram)
        if isinstance(outcome, TelegramSkipped):
            raise RecipientUnreachableError("The recipient has no linked Telegram chat")
        if isinstance(outcome, TelegramTemporary):
            raise ChannelError(outcome.reason, temporary=True, retry_after=outcome.retry_after)
        if isinstance(outcome, TelegramPermanent):
            raise ChannelError(outcome.reason, temporary=False)
        return SendResult(provider_message_id=outcome.message_id)
