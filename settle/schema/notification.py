"""Notifications as the API shows them: the history and each user's preferences."""

from __future__ import annotations

from datetime import datetime

import strawberry

from settle.models import notification as models
from settle.services import notification as notification_service

NotificationKind = strawberry.enum(
    models.NotificationKind, description="What a notification tells (one template per kind)."
)
NotificationChannel = strawberry.enum(
    models.Channel, name="NotificationChannel", description="How a notification is sent."
)
NotificationStatus = strawberry.enum(
    models.NotificationStatus,
    description="pending (waiting or retrying), sending, sent, failed (for good), suppressed "
    "(turned off by the recipient) or skipped (the recipient cannot be reached; see reason).",
)
NotificationFrequency = strawberry.enum(
    models.Frequency,
    name="NotificationFrequency",
    description="IMMEDIATE, held for the DAILY_DIGEST, or OFF.",
)


@strawberry.type
class Notification:
    id: strawberry.ID
    kind: NotificationKind  # type: ignore[valid-type]
    channel: NotificationChannel  # type: ignore[valid-type]
    status: NotificationStatus  # type: ignore[valid-type]
    reason: str | None
    user_id: strawberry.ID | None
    contact_id: strawberry.ID | None
    address: str | None = strawberry.field(description="The email address or chat it went to.")
    subject_type: str = strawberry.field(description="payment, invoice, milestone, ...")
    subject_id: strawberry.ID | None
    attempts: int
    last_error: str | None
    provider_message_id: str | None = strawberry.field(
        description="The channel's id of the message (an email's Message-ID)."
    )
    sent_at: datetime | None
    created_at: datetime

    @classmethod
    def from_model(cls, row: models.Notification) -> Notification:
        return cls(
            id=strawberry.ID(str(row.id)),
            kind=row.kind,
            channel=row.channel,
            status=row.status,
            reason=row.reason,
            user_id=strawberry.ID(str(row.user_id)) if row.user_id else None,
            contact_id=strawberry.ID(str(row.contact_id)) if row.contact_id else None,
            address=row.address,
            subject_type=row.subject_type,
            subject_id=strawberry.ID(str(row.subject_id)) if row.subject_id else None,
            attempts=row.attempts,
            last_error=row.last_error,
            provider_message_id=row.provider_message_id,
            sent_at=row.sent_at,
            created_at=row.created_at,
        )


@strawberry.input
class NotificationFilter:
    kind: NotificationKind | None = None  # type: ignore[valid-type]
    status: NotificationStatus | None = None  # type: ignore[valid-type]
    channel: NotificationChannel | None = None  # type: ignore[valid-type]


@strawberry.type
class NotificationPreference:
    kind: NotificationKind  # type: ignore[valid-type]
    channels: list[NotificationChannel]  # type: ignore[valid-type]
    frequency: NotificationFrequency  # type: ignore[valid-type]
    can_turn_off: bool = strawberry.field(
        description="False for receipts (payment confirmations, refunds), always sent at once."
    )

    @classmethod
    def from_value(cls, value: notification_service.Preference) -> NotificationPreference:
        return cls(
            kind=value.kind,
            channels=list(value.channels),
            frequency=value.frequency,
            can_turn_off=value.can_turn_off,
        )


@strawberry.type
class NotificationPreferences:
    preferences: list[NotificationPreference]


@strawberry.input
class NotificationPreferenceInput:
    kind: NotificationKind  # type: ignore[valid-type]
    channels: list[NotificationChannel]  # type: ignore[valid-type]
    frequency: NotificationFrequency  # type: ignore[valid-type]
