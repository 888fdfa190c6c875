"""Timeline resolvers."""

from __future__ import annotations

import uuid

from settle.resolvers.common import parse_id, public_errors, require_actor
from settle.schema.activity import ActivityEvent, TimelineFilter
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.services import activity as activity_service


async def timeline(
    info: Info,
    first: int = 20,
    after: str | None = None,
    flt: TimelineFilter | None = None,
    client_id: uuid.UUID | None = None,
) -> Connection[ActivityEvent]:
    """Timeline events the actor may see, newest first, optionally for one client."""
    actor = require_actor(info)
    given = flt or TimelineFilter()
    with public_errors():
        if client_id is None and given.client_id is not None:
            client_id = parse_id(given.client_id, "filter.clientId")
        page = await activity_service.timeline(
            actor,
            activity_service.TimelineFilter(
                client_id=client_id,
                entity_types=tuple(given.entity_types or ()),
                since=given.from_,
                until=given.to,
            ),
            first=first,
            after=after,
        )
    return Connection.from_page(page, ActivityEvent.from_model)


async def client_timeline(
    info: Info, client_id: uuid.UUID, *, first: int, after: str | None, flt: TimelineFilter | None
) -> Connection[ActivityEvent]:
    """Client.timeline: the clients of a list get their pages through one loader.

    The client is the parent's; a ``clientId`` in the filter is not looked at.
    """
    require_actor(info)
    given = flt or TimelineFilter()
    narrowed = activity_service.TimelineFilter(
        entity_types=tuple(given.entity_types or ()), since=given.from_, until=given.to
    )
    loader = info.context.loaders.timelines(narrowed, "client_id", first=first, after=after)
    with public_errors():
        page = await loader.load(client_id)
    return Connection.from_page(page, ActivityEvent.from_model)


async def agency_timeline(
    info: Info, first: int = 20, after: str | None = None, filter: TimelineFilter | None = None
) -> Connection[ActivityEvent]:
    """The agency's timeline (a client user's is limited to their client)."""
    return await timeline(info, first=first, after=after, flt=filter)
