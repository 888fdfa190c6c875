"""Payment actors: process a stored webhook, ask a gateway for a refund, reconcile.

Each takes ids, opens its own transactions and is safe to run twice or at once:
webhook events are applied under their row lock and marked processed in the
same transaction; a refund is asked for with its own id as the idempotency key.
"""

from __future__ import annotations

import logging
import uuid

from settle.core.outbox import transaction
from settle.gateways.base import GatewayError
from settle.services import payment as payment_service
from settle.services import payment_reconcile, webhook
from settle.tasks.broker import actor

log = logging.getLogger(__name__)


# An event may arrive before the payment it is about has committed (a gateway is
# fast); retrying with backoff for about an hour covers that and any outage.
@actor(
    payment_service.PROCESS_WEBHOOK_JOB,
    max_retries=webhook.MAX_ATTEMPTS - 1,
    min_backoff=1_000,
    max_backoff=600_000,
)
async def process_webhook(webhook_event_id: str) -> None:
    """Apply one stored gateway event to its payment, once."""
    event_id = uuid.UUID(webhook_event_id)
    try:
        outcome = await webhook.process(event_id)
    except Exception as error:
        await webhook.record_failure(event_id, f"{type(error).__name__}: {error}")
        raise
    if outcome is not None:
        log.info(
            "payment.webhook_processed",
            extra={"webhook_event_id": webhook_event_id, "outcome": outcome},
        )


@actor(payment_service.REFUND_JOB, max_retries=10, min_backoff=5_000, max_backoff=3_600_000)
async def refund(refund_id: str) -> None:
    """Ask the gateway for a pending refund; a temporary failure retries, a refusal is recorded."""
    try:
        async with transaction():
            await payment_service.send_refund(uuid.UUID(refund_id))
    except GatewayError as error:
        if error.temporary:
            raise
        async with transaction():
            await payment_service.refund_refused(uuid.UUID(refund_id), str(error))


@actor(payment_service.CLOSE_CHECKOUT_JOB, max_retries=10, min_backoff=5_000, max_backoff=3_600_000)
async def close_checkout(payment_id: str) -> None:
    """Close a superseded payment's checkout at its gateway; a gateway outage retries."""
    async with transaction():
        await payment_service.close_checkout(uuid.UUID(payment_id))


@actor(payment_service.RECONCILE_JOB, max_retries=0)
async def reconcile() -> None:
    """Ask the gateways about payments pending for too long, and apply their answers."""
    checked = await payment_reconcile.reconcile_pending()
    if checked:
        log.info("payment.reconciled", extra={"count": checked})
