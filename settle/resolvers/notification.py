"""Notification resolvers: the history, and the caller's own preferences."""

from __future__ import annotations

from typing import Annotated

import strawberry

from settle.resolvers.common import mutate, parse_id, public_errors, require_actor
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.errors import NotFoundError, PermissionDeniedError, ValidationError
from settle.schema.notification import (
    Notification,
    NotificationFilter,
    NotificationPreference,
    NotificationPreferenceInput,
    NotificationPreferences,
)
from settle.services import notification as notification_service

UpdateNotificationPreferencesResult = Annotated[
    NotificationPreferences | ValidationError | NotFoundError | PermissionDeniedError,
    strawberry.union("UpdateNotificationPreferencesResult"),
]


async def notifications(
    info: Info, first: int = 20, after: str | None = None, filter: NotificationFilter | None = None
) -> Connection[Notification]:
    """Newest first: owners and admins see the agency's, everyone else their own."""
    actor = require_actor(info)
    given = filter or NotificationFilter()
    with public_errors():
        page = await notification_service.list_notifications(
            actor,
            notification_service.NotificationFilter(
                kind=given.kind, status=given.status, channel=given.channel
            ),
            first=first,
            after=after,
        )
    return Connection.from_page(page, Notification.from_model)


async def notification_preferences(
    info: Info, contact_id: strawberry.ID | None = None
) -> list[NotificationPreference]:
    """The preference for every kind (stored, or the default): the caller's, or a contact's."""
    actor = require_actor(info)
    with public_errors():
        target = parse_id(contact_id, "contactId") if contact_id is not None else None
        values = await notification_service.preferences(actor, target)
    return [NotificationPreference.from_value(value) for value in values]


async def update_notification_preferences(
    info: Info,
    preferences: list[NotificationPreferenceInput],
    contact_id: strawberry.ID | None = None,
) -> UpdateNotificationPreferencesResult:
    actor = require_actor(info)
    changes = [
        notification_service.PreferenceChange(
            kind=item.kind, channels=tuple(item.channels), frequency=item.frequency
        )
        for item in preferences
    ]

    async def run() -> NotificationPreferences:
        target = parse_id(contact_id, "contactId") if contact_id is not None else None
        values = await notification_service.update_preferences(actor, changes, target)
        return NotificationPreferences(
            preferences=[NotificationPreference.from_value(value) for value in values]
        )

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class NotificationQuery:
    notifications: Connection[Notification] = strawberry.field(resolver=notifications)
    notification_preferences: list[NotificationPreference] = strawberry.field(
        resolver=notification_preferences,
        description="The caller's preferences, or with contactId (owners and admins) a contact's.",
    )


@strawberry.type
class NotificationMutation:
    update_notification_preferences: UpdateNotificationPreferencesResult = strawberry.mutation(
        resolver=update_notification_preferences,
        description="Set the channels and frequency of the kinds given, the caller's own or "
        "(owners and admins, with contactId) a contact's; receipts (payment confirmations, "
        "refunds) cannot be turned off or delayed.",
    )
