"""CSV export actors: write one export's file into storage; delete files past retention."""

from __future__ import annotations

import logging
import uuid

from settle.services import export as export_service
from settle.services.export import EXPIRE_JOB, EXPORT_JOB
from settle.tasks.broker import actor

log = logging.getLogger(__name__)


# A failure that is not the export's own (the database or storage away) is retried a few
# times; after that the janitor sends the job again, until the export fails for good. A run
# may take up to RUN_TIME_LIMIT_MS (Dramatiq's default of ten minutes is short for a million
# rows); one stopped there is taken over like one whose worker died.
@actor(
    EXPORT_JOB,
    max_retries=3,
    min_backoff=5_000,
    max_backoff=300_000,
    time_limit=export_service.RUN_TIME_LIMIT_MS,
)
async def run(export_id: str) -> None:
    """Stream an export's rows into a new CSV object and mark it completed, once."""
    # No transaction() here: the run reads page by page and commits its progress and its
    # outcome in transactions of their own, so no lock is held while the file is written.
    await export_service.run_export(uuid.UUID(export_id))


# No retries: the next hourly run starts over from the rows themselves.
@actor(EXPIRE_JOB, max_retries=0)
async def expire() -> None:
    """Delete the files of exports kept longer than ``export_retention_seconds``."""
    expired = await export_service.expire_exports()
    if expired:
        log.info("export.expired", extra={"count": expired})
