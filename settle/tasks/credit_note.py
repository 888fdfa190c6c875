"""Credit note actors: the PDF of an issued credit note.

Takes an id, opens its own transaction and is safe to run twice: a credit note
whose PDF is stored is left as it is.
"""

from __future__ import annotations

import uuid

from settle.services import credit_note_files
from settle.services.credit_note import RENDER_PDF_JOB
from settle.tasks.broker import actor


@actor(RENDER_PDF_JOB, max_retries=10, min_backoff=5_000, max_backoff=600_000)
async def render_pdf(credit_note_id: str) -> None:
    """Render and store an issued credit note's PDF, once."""
    # No transaction() here: the service lays the PDF out first and opens its own
    # for the update, so no lock is held while it renders.
    await credit_note_files.render_pdf(uuid.UUID(credit_note_id))
