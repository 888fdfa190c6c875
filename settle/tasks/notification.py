"""Notification actor: render and send one notification, once.

It takes the notification's id and is safe to run twice: the service claims the
row before sending, and a second run finds it claimed or sent.
"""

from __future__ import annotations

import logging
import uuid

from settle.services import notification as notification_service
from settle.services import notification_sweep
from settle.tasks.broker import actor

log = logging.getLogger(__name__)


# Backoff from ten seconds, capped at an hour: seven retries ride out a mail
# server's outage of a few hours; a lasting one is recorded as failed.
@actor(
    notification_service.SEND_JOB,
    max_retries=notification_service.MAX_ATTEMPTS - 1,
    min_backoff=10_000,
    max_backoff=3_600_000,
)
async def send(notification_id: str) -> None:
    """Send one notification; beyond the agency's email limit (or Telegram's), come back later."""
    outcome = await notification_service.deliver(uuid.UUID(notification_id))
    if outcome is not None:
        # Deferred, not dropped: the same message again once there is room.
        log.info(
            "notification.deferred",
            extra={"notification_id": notification_id, "seconds": outcome.seconds},
        )
        send.send_with_options(args=(notification_id,), delay=outcome.seconds * 1000)


# No retries: the next scheduled run is the retry, and it starts over from stored state.
@actor(notification_sweep.SWEEP_JOB, max_retries=0)
async def sweep() -> None:
    """Record and send every reminder, notice and digest that is due now, once."""
    result = await notification_sweep.sweep()
    if result.written or result.cancelled:
        log.info(
            "notification.swept",
            extra={"written": dict(result.written), "cancelled": result.cancelled},
        )
