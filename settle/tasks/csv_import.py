"""CSV import actors: the import of one uploaded file.

Takes an id and is safe to run twice, also at the same time: each batch commits
with the import's checkpoint under its row lock (see ``settle.services.csv_import``).
"""

from __future__ import annotations

import uuid

from settle.services import csv_import
from settle.tasks.broker import actor


# The retries pick up after the last committed batch; the janitor re-sends an import
# left queued or running once they are spent.
@actor(csv_import.RUN_JOB, max_retries=5, min_backoff=1_000, max_backoff=60_000)
async def run(import_id: str) -> None:
    """Import the rows of an uploaded file not imported yet, a batch per transaction."""
    await csv_import.run(uuid.UUID(import_id))
