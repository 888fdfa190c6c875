"""Subscription: the progress of one CSV import, until it finishes."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from settle.core.errors import NotFoundError
from settle.models.csv_import import CsvImport, ImportStatus
from settle.resolvers.common import parse_optional_id, require_actor
from settle.schema.context import Info
from settle.schema.csv_import import ImportProgress
from settle.services import csv_import as csv_import_service
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus
from settle.subscriptions.live_status import SubscriptionNotFound


async def import_progress(info: Info, id: strawberry.ID) -> AsyncGenerator[ImportProgress, None]:
    """The import's progress now, then as its batches commit; ends once it has finished.

    The job announces at most once per ``import_progress_interval_seconds`` (and
    always its last batch), so a subscriber hears a few events a second at most.
    """
    actor = require_actor(info)
    import_id = parse_optional_id(id)
    try:
        if import_id is None:
            raise NotFoundError("Import", id)
        row = await csv_import_service.get_import(actor, import_id)
    except NotFoundError as exc:
        raise SubscriptionNotFound(exc) from None
    wanted = str(row.id)
    # Listen before reading: progress committed in between is heard, not lost.
    async with get_bus().subscribe([channels.imports(actor.agency_id)]) as messages:
        current = await CsvImport.get(id=row.id)
        last = ImportProgress.from_message(csv_import_service.progress_message(current))
        yield last
        if current.status in csv_import_service.TERMINAL:
            return
        async for message in messages:
            if message.get("importId") != wanted or message.get("agencyId") != str(actor.agency_id):
                continue
            progress = ImportProgress.from_message(message)
            # An event older than what was read first adds nothing.
            if progress.processed < last.processed or progress == last:
                continue
            last = progress
            yield progress
            if ImportStatus(message["status"]) in csv_import_service.TERMINAL:
                return
