"""The outbox relay's catch-up, sent by the scheduler."""

from __future__ import annotations

import logging
from datetime import timedelta

from settle.core.relay import relay_pending
from settle.core.settings import get_settings
from settle.tasks.broker import actor

log = logging.getLogger(__name__)


@actor("outbox.relay_pending", max_retries=3)
async def relay_pending_messages() -> None:
    """Publish events and send jobs that committed but were not relayed (a crash)."""
    sent = await relay_pending(timedelta(seconds=get_settings().outbox_stale_seconds))
    if sent:
        log.warning("outbox.caught_up", extra={"count": sent})
