"""The janitor: finds work that was stored but never finished, and sends its job again.

A job's message can be lost after its change committed: the Redis broker gives a
dead worker's messages back (``settle.tasks.broker.redis_broker``), but Redis
restarted without its data, a queue flushed by hand or a dead-lettered message
leave the row waiting forever. Each kind of work has a row that says whether it
finished, and the janitor (``janitor.resend_stuck``, on the scheduler) re-sends
the job of every row stored more than ``janitor_stale_seconds`` ago and not
finished:

============================  ===========================================  ========================
work                          unfinished                                   job sent again
============================  ===========================================  ========================
a verified webhook event      not processed, attempts left                 payment.process_webhook
an issued invoice             no rendered PDF                              invoice.render_pdf
an invoice email              pending: never tried, or its attempt's       invoice.send_email
                              claim abandoned (older than the send lease)
a refund Settle asked for     pending and never answered by the gateway    payment.refund
a notification                pending and never tried (and not held back   notification.send
                              by the email limit), or its claim abandoned
a CSV export                  pending (its job lost or given back after    export.run
                              a failure), or running with a claim not
                              refreshed for ``export.LEASE`` (its run died)
a CSV import                  queued or running, no batch committed for    csv_import.run
                              a while (its job was lost or died)
============================  ===========================================  ========================

Each run takes at most ``janitor_batch_size`` rows of each kind, oldest first,
and nothing stored more than ``janitor_give_up_seconds`` ago (a refund, never
more than a day): work that old needs a person, not another try. What it
re-sends is one attempt (the janitor's next run is the retry), so a row that
keeps failing costs one run of its job a minute instead of a new chain of
retries each time. A webhook event stops being re-sent once its attempts are
used up; an email that failed is retried by its own actor and is not the
janitor's.

Every job re-sent here is safe next to its original still running:

- ``payment.process_webhook`` applies the event under its row lock and marks it
  processed in the same transaction;
- ``invoice.render_pdf`` never replaces a stored object and sets the key with a
  conditional update;
- ``invoice.send_email`` claims the attempt first, and a second run stands back
  while the claim is younger than ``invoice_delivery.SEND_LEASE``;
- ``notification.send`` claims the row with a conditional update, and a
  second run stands back while the claim is younger than
  ``notification.SEND_LEASE``;
- ``export.run`` claims the export with a conditional update, stands back
  while another run's claim is fresh, and writes each run's file under a new
  key: only the run holding the claim marks it completed;
- ``csv_import.run`` commits each batch with the import's checkpoint under the
  import's row lock, and a run that finds the checkpoint moved skips what the
  other committed;
- ``payment.refund`` asks the gateway with the refund's id as the idempotency
  key and records the answer under the refund's row lock. Stripe keeps an
  idempotency key for 24 hours, so a refund older than that is never re-sent:
  the gateway could then refund it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from settle.core import clock
from settle.core.settings import Settings, get_settings
from settle.models.csv_import import CsvImport
from settle.models.export import Export, ExportStatus
from settle.models.invoice import DeliveryStatus, Invoice, InvoiceDelivery, InvoiceStatus
from settle.models.notification import Notification, NotificationStatus
from settle.models.payment import Refund, RefundStatus, WebhookEvent
from settle.services import csv_import, invoice_delivery, webhook
from settle.services import export as export_service
from settle.services import notification as notification_service
from settle.services.invoice import RENDER_PDF_JOB, SEND_EMAIL_JOB
from settle.services.payment import PROCESS_WEBHOOK_JOB, REFUND_JOB

# Stripe keeps idempotency keys at least this long; a refund re-sent later could be paid twice.
REFUND_RESEND_LIMIT = timedelta(hours=24)

# Sends one job for one row id (the actor sends it to the broker as a single attempt).
Send = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Window:
    """Rows stored at or before ``stale_before`` and after ``give_up_before`` are stuck."""

    now: datetime
    stale_before: datetime
    give_up_before: datetime
    batch_size: int

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> Window:
        return cls(
            now=now,
            stale_before=now - timedelta(seconds=settings.janitor_stale_seconds),
            give_up_before=now - timedelta(seconds=settings.janitor_give_up_seconds),
            batch_size=settings.janitor_batch_size,
        )


@dataclass(frozen=True, slots=True)
class Stuck:
    """The ids found stuck in one run, per job to send again, oldest first."""

    jobs: dict[str, list[uuid.UUID]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {job: len(ids) for job, ids in self.jobs.items()}


async def _oldest(query: QuerySet[Any], stored: str, window: Window) -> list[uuid.UUID]:
    """The ids of a batch of rows, the longest stored first."""
    ids = await query.order_by(stored, "id").limit(window.batch_size).values_list("id", flat=True)
    return cast(list[uuid.UUID], ids)


async def unprocessed_webhook_events(window: Window) -> list[uuid.UUID]:
    """Verified events not applied yet, with processing attempts left."""
    return await _oldest(
        WebhookEvent.filter(
            processed_at__isnull=True,
            received_at__lte=window.stale_before,
            received_at__gt=window.give_up_before,
            attempts__lt=webhook.MAX_ATTEMPTS,
        ),
        "received_at",
        window,
    )


async def invoices_without_pdf(window: Window) -> list[uuid.UUID]:
    """Issued invoices (voided ones too: they keep their number) whose PDF was never rendered."""
    return await _oldest(
        Invoice.filter(
            pdf_key__isnull=True,
            issued_at__lte=window.stale_before,
            issued_at__gt=window.give_up_before,
        ).exclude(status=InvoiceStatus.DRAFT),
        "issued_at",
        window,
    )


async def unsent_deliveries(window: Window) -> list[uuid.UUID]:
    """Pending emails: never tried, or claimed by an attempt that died (past the send lease).

    A failed delivery is left to its actor's retries: after a temporary failure
    the retry is a delayed message the broker keeps like any other.
    """
    claim_abandoned_before = min(window.stale_before, window.now - invoice_delivery.SEND_LEASE)
    return await _oldest(
        InvoiceDelivery.filter(
            Q(attempts=0, updated_at__lte=window.stale_before)
            | Q(attempts__gt=0, updated_at__lte=claim_abandoned_before),
            status=DeliveryStatus.PENDING,
            created_at__gt=window.give_up_before,
        ),
        "created_at",
        window,
    )


async def unsent_refunds(window: Window) -> list[uuid.UUID]:
    """Refunds a user asked for that the gateway never answered (no refund id, still pending).

    A refund Settle made from a gateway's own event has no requester and was
    never Settle's to ask for, so it is not sent.
    """
    give_up_before = max(window.give_up_before, window.now - REFUND_RESEND_LIMIT)
    return await _oldest(
        Refund.filter(
            status=RefundStatus.PENDING,
            provider_refund_id__isnull=True,
            created_by_id__isnull=False,
            created_at__lte=window.stale_before,
            created_at__gt=give_up_before,
        ),
        "created_at",
        window,
    )


async def unsent_notifications(window: Window) -> list[uuid.UUID]:
    """Notifications pending and never tried, or claimed by a run that died (past the lease).

    One that failed for now (attempts counted, pending) is its actor's to
    retry, one held back by the agency's email limit comes back by itself, and
    one held for a digest is the digest's.
    """
    claim_abandoned_before = min(window.stale_before, window.now - notification_service.SEND_LEASE)
    return await _oldest(
        Notification.filter(
            Q(
                Q(not_before__isnull=True) | Q(not_before__lte=window.now),
                status=NotificationStatus.PENDING,
                attempts=0,
                digest=False,
                updated_at__lte=window.stale_before,
            )
            | Q(status=NotificationStatus.SENDING, claimed_at__lte=claim_abandoned_before),
            created_at__gt=window.give_up_before,
        ),
        "created_at",
        window,
    )


async def unfinished_exports(window: Window) -> list[uuid.UUID]:
    """Exports waiting for a run (their job lost), or whose run stopped refreshing its claim."""
    claim_abandoned_before = min(window.stale_before, window.now - export_service.LEASE)
    return await _oldest(
        Export.filter(
            Q(status=ExportStatus.PENDING, updated_at__lte=window.stale_before)
            | Q(status=ExportStatus.RUNNING, heartbeat_at__lte=claim_abandoned_before),
            created_at__gt=window.give_up_before,
        ),
        "created_at",
        window,
    )


async def unfinished_imports(window: Window) -> list[uuid.UUID]:
    """Imports queued or running whose last batch (or start) is older than the stale time.

    Every committed batch moves ``updated_at``, so a running import's job is alive
    while it keeps committing.
    """
    return await _oldest(
        CsvImport.filter(
            status__in=list(csv_import.UNFINISHED),
            updated_at__lte=window.stale_before,
            created_at__gt=window.give_up_before,
        ),
        "updated_at",
        window,
    )


async def find_stuck(settings: Settings | None = None, now: datetime | None = None) -> Stuck:
    """Every kind of unfinished work, at most a batch of each, by the job that finishes it."""
    window = Window.of(settings or get_settings(), now or clock.now())
    return Stuck(
        {
            PROCESS_WEBHOOK_JOB: await unprocessed_webhook_events(window),
            RENDER_PDF_JOB: await invoices_without_pdf(window),
            SEND_EMAIL_JOB: await unsent_deliveries(window),
            REFUND_JOB: await unsent_refunds(window),
            notification_service.SEND_JOB: await unsent_notifications(window),
            export_service.EXPORT_JOB: await unfinished_exports(window),
            csv_import.RUN_JOB: await unfinished_imports(window),
        }
    )


async def resend_stuck(send: Send, settings: Settings | None = None) -> Stuck:
    """Send the job of every stuck row once; returns what was sent."""
    stuck = await find_stuck(settings)
    for job, ids in stuck.jobs.items():
        for row_id in ids:
            await send(job, str(row_id))
    return stuck
