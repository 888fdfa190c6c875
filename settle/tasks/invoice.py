"""Invoice actors: the automatic invoice of an approved milestone, PDFs, emails, the overdue sweep.

Each takes ids, opens its own transactions and is safe to run twice: the
services they call find work already done and leave it as it is.
"""

from __future__ import annotations

import logging
import uuid

from settle.core.errors import AppError
from settle.core.outbox import transaction
from settle.services import invoice as invoice_service
from settle.services import invoice_delivery, invoice_files
from settle.services.invoice import (
    GENERATE_FOR_MILESTONE_JOB,
    RENDER_PDF_JOB,
    SEND_EMAIL_JOB,
)
from settle.tasks.broker import actor

log = logging.getLogger(__name__)

MARK_OVERDUE_JOB = "invoice.mark_overdue"

# Shown on the milestone for a failure that is not a domain error: its own text
# (SQL, connection details) is for the log, not for the agency's screen.
GENERATION_FAILED = "The invoice could not be generated; it will be retried automatically"


def milestone_invoice_error(error: Exception) -> str:
    """What the milestone shows while its automatic invoice fails."""
    if isinstance(error, AppError):
        return f"The invoice could not be generated: {error.message}"
    return GENERATION_FAILED


# Ten retries with backoff capped at an hour span a few hours: long enough to ride
# out a database or storage outage, short enough that a lasting problem is looked at.
@actor(GENERATE_FOR_MILESTONE_JOB, max_retries=10, min_backoff=10_000, max_backoff=3_600_000)
async def generate_for_milestone(milestone_id: str) -> None:
    """Issue an approved milestone's invoice; until that works, the milestone says why not."""
    target = uuid.UUID(milestone_id)
    try:
        async with transaction():
            await invoice_service.generate_for_milestone(target)
    except Exception as error:
        # Dramatiq logs the traceback when the actor raises; this line ties it to the milestone.
        log.warning(
            "invoice.generation_failed",
            extra={"milestone_id": milestone_id, "error": f"{type(error).__name__}: {error}"},
        )
        try:
            async with transaction():
                await invoice_service.record_milestone_invoice_error(
                    target, milestone_invoice_error(error)
                )
        except Exception:
            # The retry matters more than the note: the generation error is raised below.
            log.exception(
                "invoice.generation_error_not_recorded", extra={"milestone_id": milestone_id}
            )
        raise


@actor(RENDER_PDF_JOB, max_retries=10, min_backoff=5_000, max_backoff=600_000)
async def render_pdf(invoice_id: str) -> None:
    """Render and store an issued invoice's PDF, once."""
    # No transaction() here: the service lays the PDF out first and opens its own
    # for the update, so no lock is held while it renders.
    await invoice_files.render_pdf(uuid.UUID(invoice_id))


@actor(
    SEND_EMAIL_JOB,
    max_retries=invoice_delivery.MAX_ATTEMPTS - 1,
    min_backoff=10_000,
    max_backoff=3_600_000,
)
async def send_email(delivery_id: str) -> None:
    """Email one requested delivery of an invoice; a sent delivery is not sent again."""
    await invoice_delivery.deliver(uuid.UUID(delivery_id))


@actor(MARK_OVERDUE_JOB, max_retries=3)
async def mark_overdue() -> None:
    """The daily sweep: issued, unpaid invoices past their due date become overdue."""
    async with transaction():
        moved = await invoice_service.mark_overdue()
    if moved:
        log.info("invoice.marked_overdue", extra={"count": moved})
