"""Subscription: timeline events of the subscriber's agency, as they happen."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

import strawberry

from settle.resolvers.common import parse_id, require_actor
from settle.schema.activity import ActivityEvent
from settle.schema.context import Info
from settle.services.activity import visible_to
from settle.subscriptions import channels
from settle.subscriptions.bus import Message, once_per_event
from settle.subscriptions.stream import After, resumable


async def activity_added(
    info: Info, client_id: strawberry.ID | None = None, after: After = None
) -> AsyncGenerator[ActivityEvent, None]:
    """Every new timeline event the subscriber may see, optionally for one client.

    With ``after`` (an event's ``cursor``), the events since that one come first.
    """
    actor = require_actor(info)
    only_client = parse_id(client_id, "clientId") if client_id is not None else None
    agency = str(actor.agency_id)

    def keep(message: Message) -> bool:
        event_client = uuid.UUID(message["clientId"]) if message.get("clientId") else None
        if message.get("agencyId") != agency:
            return False
        if only_client is not None and event_client != only_client:
            return False
        return visible_to(
            actor, event_client, message["entityType"], internal=bool(message.get("internal"))
        )

    async for message in resumable(agency, [channels.activity(actor.agency_id)], after, keep):
        yield once_per_event(message, "activity", ActivityEvent.from_message)
