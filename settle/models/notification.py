"""Notifications: one row per message to one recipient on one channel, and preferences."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields

from settle.models.base import TenantModel

if TYPE_CHECKING:
    from settle.models.agency import User
    from settle.models.client import Contact


class NotificationKind(StrEnum):
    """What a notification tells; the value names its template folder and never changes."""

    PAYMENT_REQUEST = "payment_request"
    ADVANCE_PAYMENT_CONFIRMATION = "advance_payment_confirmation"
    BALANCE_PAYMENT_CONFIRMATION = "balance_payment_confirmation"
    PAYMENT_CONFIRMATION = "payment_confirmation"
    PAYMENT_FAILED = "payment_failed"
    ADVANCE_PAYMENT_REMINDER = "advance_payment_reminder"
    BALANCE_PAYMENT_REMINDER = "balance_payment_reminder"
    INVOICE_READY = "invoice_ready"
    INVOICE_OVERDUE = "invoice_overdue"
    ACCESS_EXPIRING = "access_expiring"
    ACCESS_EXPIRED = "access_expired"
    REFUND_PROCESSED = "refund_processed"
    PAYMENT_RECEIVED = "payment_received"
    PAYMENT_FAILED_ALERT = "payment_failed_alert"
    INVOICE_UPLOAD_REMINDER = "invoice_upload_reminder"
    DAILY_DIGEST = "daily_digest"
    MILESTONE_APPROVED = "milestone_approved"
    MILESTONE_REJECTED = "milestone_rejected"


class Channel(StrEnum):
    EMAIL = "email"
    TELEGRAM = "telegram"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    # Claimed by one run of the actor, which is talking to the channel right now.
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"


class Frequency(StrEnum):
    IMMEDIATE = "immediate"
    DAILY_DIGEST = "daily_digest"
    OFF = "off"


class Notification(TenantModel):
    """One message of one kind to one recipient on one channel: its content and its fate.

    ``recipient_key`` (``user:<id>`` or ``contact:<id>``) is what the dedupe
    key is unique with: the user or contact columns may go null when the row
    they point at is deleted, and the history must keep its uniqueness.
    """

    kind = fields.CharEnumField(NotificationKind, max_length=40)
    channel = fields.CharEnumField(Channel, max_length=20)
    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    user_id: uuid.UUID | None
    contact: fields.ForeignKeyNullableRelation[Contact] = fields.ForeignKeyField(
        "settle.Contact", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    contact_id: uuid.UUID | None
    recipient_key = fields.CharField(max_length=60)
    # The address the message went (or goes) to: an email address or a chat id.
    address = fields.CharField(max_length=254, null=True)
    subject_type = fields.CharField(max_length=40)
    subject_id = fields.UUIDField(null=True)
    data: dict[str, Any] = fields.JSONField(default=dict)
    dedupe_key = fields.CharField(max_length=200)
    status = fields.CharEnumField(
        NotificationStatus, max_length=20, default=NotificationStatus.PENDING
    )
    # Why a notification was suppressed or skipped.
    reason = fields.TextField(null=True)
    # Held for the recipient's daily digest instead of being sent on its own.
    digest = fields.BooleanField(default=False)
    attempts = fields.IntField(default=0)
    last_error = fields.TextField(null=True)
    provider_message_id = fields.CharField(max_length=255, null=True)
    claimed_at: datetime | None = fields.DatetimeField(null=True)
    # Held back until then by the agency's email limit; its job comes back by itself.
    not_before: datetime | None = fields.DatetimeField(null=True)
    sent_at: datetime | None = fields.DatetimeField(null=True)

    class Meta:
        table = "notification"
        unique_together = (("recipient_key", "channel", "dedupe_key"),)
        indexes = (("agency_id", "created_at"), ("subject_type", "subject_id"))


class NotificationPreference(TenantModel):
    """How one user or one contact wants one kind: on which channels, how often."""

    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.CASCADE
    )
    user_id: uuid.UUID | None
    contact: fields.ForeignKeyNullableRelation[Contact] = fields.ForeignKeyField(
        "settle.Contact", related_name=False, null=True, on_delete=fields.CASCADE
    )
    contact_id: uuid.UUID | None
    recipient_key = fields.CharField(max_length=60)
    kind = fields.CharEnumField(NotificationKind, max_length=40)
    channels: list[str] = fields.JSONField(default=list)
    frequency = fields.CharEnumField(Frequency, max_length=20, default=Frequency.IMMEDIATE)

    class Meta:
        table = "notification_preference"
        unique_together = (("recipient_key", "kind"),)
