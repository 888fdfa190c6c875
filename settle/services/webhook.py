"""Gateway webhooks: verify, store once, acknowledge, then process once in a worker.

``receive`` runs in the request: it verifies the signature over the raw body,
and inserts the event under its unique (provider, event id). Only the request
that inserted it sends the processing job, in the same transaction, so five
deliveries of one event at once store one row and send one job, and all five
are answered 2xx. ``process`` runs in the worker under the event's row lock and
marks it processed in the transaction that applies it: a redelivered job, or
two workers at once, apply it once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from settle.core import clock
from settle.core.db import lock_rows
from settle.core.outbox import send_job, transaction
from settle.gateways import get_gateway
from settle.gateways.base import GatewayEvent
from settle.models.payment import PaymentProvider, WebhookEvent
from settle.services import payment as payment_service

# Processing attempts of one event before it is left for a person: the actor's
# first run and its retries (an hour or so of backoff). The janitor re-sends an
# unprocessed event only while it has attempts left.
MAX_ATTEMPTS = 13


@dataclass(frozen=True, slots=True)
class Received:
    event: WebhookEvent
    new: bool


async def receive(provider: PaymentProvider, body: bytes, headers: Mapping[str, str]) -> Received:
    """Verify and store a delivery; GatewayNotConfiguredError / InvalidSignatureError otherwise."""
    gateway = get_gateway(provider)
    event = gateway.verify_webhook(body, headers)
    return await store(event)


async def store(event: GatewayEvent) -> Received:
    """Store a verified event once and send its processing job (only the first time)."""
    # The column's width; a duplicate is looked up by the same cut id it was stored under.
    event_id = event.event_id[:255]
    async with transaction():
        try:
            # A savepoint: a duplicate's unique-key conflict must not end the transaction.
            async with in_transaction():
                row = await WebhookEvent.create(
                    provider=event.provider,
                    event_id=event_id,
                    event_type=event.event_type[:100],
                    payload={"raw": event.payload, "event": payment_service.as_dict(event)},
                    received_at=clock.now(),
                )
        except IntegrityError:
            existing = await WebhookEvent.get(provider=event.provider, event_id=event_id)
            return Received(existing, new=False)
        await send_job(payment_service.PROCESS_WEBHOOK_JOB, str(row.id))
    return Received(row, new=True)


async def process(webhook_event_id: uuid.UUID) -> str | None:
    """Apply a stored event once; returns its outcome (None if it was processed already).

    PaymentNotFoundYetError propagates (the payment may not be committed yet):
    the worker records the attempt and retries with backoff.
    """
    async with transaction():
        row = await lock_rows(WebhookEvent.filter(id=webhook_event_id)).first()
        if row is None or row.processed_at is not None:
            return None
        event = payment_service.from_dict(row.payload["event"], row.payload["raw"])
        applied = await payment_service.apply_event(event, webhook_event_id=row.id)
        row.processed_at = clock.now()
        row.outcome = applied.outcome
        row.attempts += 1
        row.last_error = None
        if applied.payment is not None:
            row.payment_id = applied.payment.id
            row.agency_id = applied.payment.agency_id
        else:
            # An event applied to nothing (a kind Settle ignores) still belongs to the
            # agency of the payment it names, whose webhookEvents list shows it.
            row.agency_id = await _agency_named(row)
        await row.save(
            update_fields=[
                "processed_at",
                "outcome",
                "attempts",
                "last_error",
                "payment_id",
                "agency_id",
            ]
        )
        return applied.outcome


async def record_failure(webhook_event_id: uuid.UUID, error: str) -> None:
    """Count a failed processing attempt and keep its error (the event stays unprocessed)."""
    async with transaction():
        row = await lock_rows(WebhookEvent.filter(id=webhook_event_id)).first()
        if row is None or row.processed_at is not None:
            return
        row.attempts += 1
        row.last_error = error[:2000]
        if row.agency_id is None:
            # A failure with the payment found (an error while applying it) is the
            # agency's to see; with no payment, it is unmatched and only counted in
            # the operations metrics.
            row.agency_id = await _agency_named(row)
        await row.save(update_fields=["attempts", "last_error", "agency_id"])


async def _agency_named(row: WebhookEvent) -> uuid.UUID | None:
    """The agency of the payment a stored event names, found as processing finds it."""
    event = payment_service.from_dict(row.payload["event"], row.payload["raw"])
    payment = await payment_service.find_payment_for(event)
    return payment.agency_id if payment is not None else None


async def events_for_payment(payment_id: uuid.UUID) -> list[WebhookEvent]:
    """The webhook events matched to a payment, oldest first (the caller checked visibility)."""
    return await WebhookEvent.filter(payment_id=payment_id).order_by("received_at", "id")
