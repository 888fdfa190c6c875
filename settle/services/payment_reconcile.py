"""Reconciliation: ask the gateways about payments nobody has heard of for too long.

A webhook can be lost (a gateway outage, a misconfigured endpoint). Every open
payment with a gateway order is asked about after
``payment_reconcile_after_seconds``, then at doubling intervals; the answer is
applied like a webhook (the same ``apply_event``, audited as reconciliation).
After ``payment_reconcile_max_attempts`` unanswered questions the payment is
flagged for a person to look at, and no longer asked about.

A superseded payment is asked about on the same schedule while its gateway
could not close it (a Razorpay order): a capture whose webhook was lost is
found that way and refunded as a duplicate, never silently kept. Any other
answer about it changes nothing, and it is not flagged when the questions end.
"""

from __future__ import annotations

import logging
import uuid

from settle.core import clock
from settle.core.db import lock_rows
from settle.core.outbox import transaction
from settle.core.settings import get_settings
from settle.gateways import get_gateway
from settle.gateways.base import EventKind, GatewayError, GatewayEvent, RemoteState, RemoteStatus
from settle.models.payment import Payment, PaymentProvider, PaymentStatus
from settle.services import payment as payment_service

log = logging.getLogger(__name__)

GATEWAY_PROVIDERS = (PaymentProvider.STRIPE, PaymentProvider.RAZORPAY, PaymentProvider.SANDBOX)
ASKED_STATUSES = payment_service.OPEN_PAYMENT_STATUSES | {PaymentStatus.SUPERSEDED}

_KINDS = {
    RemoteState.SUCCEEDED: EventKind.PAYMENT_SUCCEEDED,
    RemoteState.FAILED: EventKind.PAYMENT_FAILED,
    RemoteState.CANCELLED: EventKind.PAYMENT_CANCELLED,
}


async def reconcile_pending() -> int:
    """Ask about every open payment that is due; returns how many were asked about."""
    settings = get_settings()
    now = clock.now()
    candidates = await Payment.filter(
        status__in=list(ASKED_STATUSES),
        provider__in=list(GATEWAY_PROVIDERS),
        provider_order_id__isnull=False,
        reconcile_attempts__lt=settings.payment_reconcile_max_attempts,
    ).order_by("created_at")
    asked = 0
    for payment in candidates:
        if not payment_service.reconcile_due(payment, now):
            continue
        asked += 1
        try:
            status = await get_gateway(payment.provider).fetch_status(
                provider_order_id=payment.provider_order_id or "",
                provider_payment_id=payment.provider_payment_id,
            )
        except GatewayError as error:
            log.warning(
                "payment.reconcile_failed",
                extra={"payment_id": str(payment.id), "error": str(error)},
            )
            status = None
        await apply_status(payment.id, status)
    return asked


async def apply_status(payment_id: uuid.UUID, status: RemoteStatus | None) -> None:
    """Apply a gateway's answer (None: no answer) to an open payment, in one transaction."""
    settings = get_settings()
    async with transaction():
        payment = await lock_rows(Payment.filter(id=payment_id)).get()
        if payment.status not in ASKED_STATUSES:
            return
        kind = _KINDS.get(status.state) if status is not None else None
        if payment.status is PaymentStatus.SUPERSEDED and kind is not EventKind.PAYMENT_SUCCEEDED:
            # Only money taken matters for a closed checkout; a failure or silence is expected.
            kind = None
        if kind is not None and status is not None:
            event = GatewayEvent(
                provider=payment.provider,
                event_id=f"reconcile:{payment.id}:{payment.reconcile_attempts}",
                event_type=f"reconcile.{status.state.value}",
                kind=kind,
                payload={"state": status.state.value},
                provider_order_id=payment.provider_order_id,
                provider_payment_id=status.provider_payment_id,
                payment_id=str(payment.id),
                amount_minor=status.amount_minor,
                currency=status.currency,
                failure_reason=status.failure_reason,
            )
            await payment_service.apply_event(event, source="reconciliation")
        payment = await lock_rows(Payment.filter(id=payment_id)).get()
        payment.reconcile_attempts += 1
        payment.last_reconciled_at = clock.now()
        fields = ["reconcile_attempts", "last_reconciled_at", "updated_at"]
        unresolved = payment.status in payment_service.OPEN_PAYMENT_STATUSES
        if unresolved and payment.reconcile_attempts >= settings.payment_reconcile_max_attempts:
            before = payment_service.snapshot(payment)
            payment.flagged_reason = (
                f"Still {payment.status.value} after {payment.reconcile_attempts} questions to "
                f"{payment.provider.value}; no longer asked about"
            )
            fields.append("flagged_reason")
            await payment.save(update_fields=fields)
            await payment_service.audit(
                payment,
                "reconcile_gave_up",
                before=before,
                source="reconciliation",
                reason=payment.flagged_reason,
            )
            return
        await payment.save(update_fields=fields)
