"""The janitor's run, sent by the scheduler: re-send the jobs of work stored but not finished."""

from __future__ import annotations

import asyncio
import logging

from settle.services import janitor
from settle.tasks.broker import actor, send_by_name

log = logging.getLogger(__name__)

RESEND_STUCK_JOB = "janitor.resend_stuck"


async def send_once(job: str, row_id: str) -> None:
    """Send ``job`` for one row as a single attempt: the janitor's next run is its retry."""
    # Enqueueing on Redis is a blocking call; keep it off the event loop.
    await asyncio.to_thread(send_by_name, job, [row_id], {}, max_retries=0)


# No retries: the next scheduled run starts over from the rows themselves.
@actor(RESEND_STUCK_JOB, max_retries=0)
async def resend_stuck() -> None:
    """Find webhook events, PDFs, emails and refunds left unfinished, and send their jobs again."""
    sent = await janitor.resend_stuck(send_once)
    counts = {job: count for job, count in sent.counts().items() if count}
    if counts:
        # A warning: every re-send is work some message lost, worth a look if it recurs.
        log.warning("janitor.resent", extra={"counts": counts})
