"""Housekeeping, sent by the scheduler: delete rows whose purpose has passed."""

from __future__ import annotations

import logging

from settle.core.settings import get_settings
from settle.services import housekeeping
from settle.tasks.broker import actor

log = logging.getLogger(__name__)

PRUNE_JOB = "housekeeping.prune"


# No retries: the next day's run starts over from the rows themselves.
@actor(PRUNE_JOB, max_retries=0)
async def prune() -> None:
    """Delete published outbox rows and handled Telegram updates past their keep."""
    pruned = await housekeeping.prune(get_settings())
    log.info("housekeeping.pruned", extra={"counts": pruned.counts()})
