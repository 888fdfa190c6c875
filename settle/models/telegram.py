"""Telegram: the chat each user linked, one-time link tokens, and the updates acted on."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

from settle.models.base import TenantModel

if TYPE_CHECKING:
    from settle.models.agency import User


class TelegramUnlinkReason(StrEnum):
    # The user unlinked it (unlinkTelegram).
    USER = "user"
    # Telegram answered 403: the user blocked the bot (or deleted the chat).
    BLOCKED = "blocked"


class TelegramChat(TenantModel):
    """The Telegram chat a user receives messages in: one per user, kept when unlinked."""

    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "settle.User", related_name=False, on_delete=fields.CASCADE
    )
    user_id: uuid.UUID
    # Telegram's chat ids exceed 32 bits.
    chat_id = fields.BigIntField(db_index=True)
    username = fields.CharField(max_length=64, null=True)
    linked_at = fields.DatetimeField()
    # Set when the chat no longer receives messages; a new link clears both.
    unlinked_at = fields.DatetimeField(null=True)
    unlink_reason = fields.CharEnumField(TelegramUnlinkReason, max_length=20, null=True)
    # What Telegram said when it refused a message ("Forbidden: bot was blocked by the user").
    unlink_detail = fields.CharField(max_length=500, null=True)

    class Meta:
        table = "telegram_chat"


class TelegramLinkToken(TenantModel):
    """A one-time token of a ``t.me/<bot>?start=<token>`` link, stored only as its hash."""

    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, on_delete=fields.CASCADE, db_index=True
    )
    user_id: uuid.UUID
    token_hash = fields.CharField(max_length=64, unique=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "telegram_link_token"


class TelegramUpdate(Model):
    """An update Settle acted on, so a redelivery (Telegram retries) is not acted on twice.

    Only updates that changed something are kept (a ``/start`` with a token); the
    rest are ignored each time they come, which needs no record.
    """

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    update_id = fields.BigIntField(unique=True)
    received_at = fields.DatetimeField()

    class Meta:
        table = "telegram_update"
