"""The exportProgress subscription: an export's state now, then each time it moves on."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from settle.core.errors import NotFoundError
from settle.models.export import Export as ExportRow
from settle.resolvers.common import parse_optional_id, require_actor
from settle.schema.context import Info
from settle.schema.export import Export
from settle.services import export as export_service
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus
from settle.subscriptions.live_status import SubscriptionNotFound


async def _visible_export(info: Info, export_id: strawberry.ID) -> ExportRow:
    """The export named, as the export query finds it; malformed, foreign: NOT_FOUND."""
    actor = require_actor(info)
    parsed = parse_optional_id(export_id)
    try:
        if parsed is None:
            raise NotFoundError("Export", export_id)
        return await export_service.get_export(actor, parsed)
    except NotFoundError as exc:
        raise SubscriptionNotFound(exc) from None


async def export_progress(info: Info, id: strawberry.ID) -> AsyncGenerator[Export, None]:
    """The export now, then after each change of its rows or status; ends once it is done."""
    actor = require_actor(info)
    export = await _visible_export(info, id)
    agency, wanted = str(actor.agency_id), str(export.id)
    # Listen before the first read: a change committed in between is heard, not lost.
    async with get_bus().subscribe([channels.exports(actor.agency_id)]) as messages:
        current = await export_service.get_export(actor, export.id)
        yield Export.from_model(current, actor)
        last = (current.status, current.rows)
        if current.status in export_service.TERMINAL:
            return
        async for message in messages:
            if message.get("agencyId") != agency or message.get("exportId") != wanted:
                continue
            # The row holds the truth (a progress event may be overtaken by the next).
            current = await export_service.get_export(actor, export.id)
            if (current.status, current.rows) == last:
                continue
            last = (current.status, current.rows)
            yield Export.from_model(current, actor)
            if current.status in export_service.TERMINAL:
                return
