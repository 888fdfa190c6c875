"""Telegram resolvers: link the caller's chat, unlink it, and show it."""

from __future__ import annotations

from typing import Annotated

import strawberry

from settle.resolvers.common import mutate, require_actor
from settle.schema.context import Info
from settle.schema.errors import NotFoundError, ValidationError
from settle.schema.telegram import TelegramChat, TelegramLink
from settle.services import telegram as telegram_service

TelegramLinkResult = Annotated[
    TelegramLink | ValidationError, strawberry.union("TelegramLinkResult")
]
UnlinkTelegramResult = Annotated[
    TelegramChat | NotFoundError, strawberry.union("UnlinkTelegramResult")
]


async def telegram_chat(info: Info) -> TelegramChat | None:
    actor = require_actor(info)
    chat = await telegram_service.chat_for(actor)
    return TelegramChat.from_model(chat) if chat else None


async def telegram_link(info: Info) -> TelegramLinkResult:
    actor = require_actor(info)

    async def run() -> TelegramLink:
        link = await telegram_service.create_link(info.context.settings, actor)
        return TelegramLink(url=link.url, expires_at=link.expires_at)

    return await mutate(run)  # type: ignore[return-value]


async def unlink_telegram(info: Info) -> UnlinkTelegramResult:
    actor = require_actor(info)

    async def run() -> TelegramChat:
        return TelegramChat.from_model(await telegram_service.unlink(actor))

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class TelegramQuery:
    telegram_chat: TelegramChat | None = strawberry.field(
        resolver=telegram_chat,
        description="The caller's own Telegram chat; null if they never linked one.",
    )


@strawberry.type
class TelegramMutation:
    telegram_link: TelegramLinkResult = strawberry.mutation(
        resolver=telegram_link,
        description="A one-time https://t.me/<bot>?start=<token> link for the caller: opened in "
        "Telegram, it links that chat (ValidationError TELEGRAM_NOT_CONFIGURED without a bot).",
    )
    unlink_telegram: UnlinkTelegramResult = strawberry.mutation(
        resolver=unlink_telegram,
        description="Stop sending the caller's notifications to Telegram (NotFoundError when "
        "no chat is linked).",
    )
