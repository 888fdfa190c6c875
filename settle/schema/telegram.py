"""Telegram: the caller's linked chat and the one-time link that links it."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from settle.models import telegram as models


@strawberry.enum(description="Whether Settle's Telegram messages reach the chat.")
class TelegramChatStatus(Enum):
    LINKED = "linked"
    UNLINKED = strawberry.enum_value("unlinked", description="Unlinked by the user.")
    BLOCKED = strawberry.enum_value(
        "blocked", description="Telegram refused a message (the user blocked the bot): unlinked."
    )


@strawberry.type(description="The caller's Telegram chat: where their notifications go.")
class TelegramChat:
    status: TelegramChatStatus
    username: str | None = strawberry.field(description="The chat's @username, if it has one.")
    linked_at: datetime
    unlinked_at: datetime | None
    blocked_reason: str | None = strawberry.field(
        description="What Telegram said when it refused a message (status BLOCKED)."
    )

    @classmethod
    def from_model(cls, chat: models.TelegramChat) -> TelegramChat:
        if chat.unlinked_at is None:
            status = TelegramChatStatus.LINKED
        elif chat.unlink_reason is models.TelegramUnlinkReason.BLOCKED:
            status = TelegramChatStatus.BLOCKED
        else:
            status = TelegramChatStatus.UNLINKED
        return cls(
            status=status,
            username=chat.username,
            linked_at=chat.linked_at,
            unlinked_at=chat.unlinked_at,
            blocked_reason=chat.unlink_detail if status is TelegramChatStatus.BLOCKED else None,
        )


@strawberry.type(
    description="A one-time link: opened in Telegram, it links that chat to the caller. "
    "It works once, until expiresAt; asking for a new one ends the previous one."
)
class TelegramLink:
    url: str
    expires_at: datetime
