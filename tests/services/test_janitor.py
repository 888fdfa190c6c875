"""The janitor's selection: what counts as stored but not finished, and what it leaves alone."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from settle.core import clock
from settle.core.settings import Settings
from settle.models.client import Client
from settle.models.csv_import import CsvImport, ImportEntity, ImportStatus
from settle.models.export import Export, ExportEntity, ExportStatus
from settle.models.invoice import DeliveryStatus, Invoice, InvoiceDelivery
from settle.models.notification import (
    Channel,
    Notification,
    NotificationKind,
    NotificationStatus,
)
from settle.models.payment import (
    Payment,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.services import csv_import, invoice_delivery, janitor, webhook
from settle.services import export as export_service
from settle.services import notification as notification_service
from settle.services.invoice import RENDER_PDF_JOB, SEND_EMAIL_JOB
from settle.services.payment import PROCESS_WEBHOOK_JOB, REFUND_JOB
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_invoice, issue_invoice

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


@pytest.fixture
def now() -> datetime:
    return clock.now()


@pytest.fixture
def settings(db: Backend) -> Settings:
    """Five minutes to stale, three days to giving up (longer than a refund may wait)."""
    return db.settings.model_copy(
        update={
            "janitor_stale_seconds": 300,
            "janitor_give_up_seconds": 3 * 24 * 3600,
            "janitor_batch_size": 100,
        }
    )


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, currency="USD")


async def export(owner: Account, at: datetime, **values: Any) -> uuid.UUID:
    """An export asked for (and last changed) at ``at``."""
    row = await Export.create(agency_id=owner.agency_id, entity=ExportEntity.CLIENTS, **values)
    await Export.filter(id=row.id).update(created_at=at, updated_at=at)
    return row.id


async def event(received_at: datetime, **values: Any) -> uuid.UUID:
    row = await WebhookEvent.create(
        provider=PaymentProvider.SANDBOX,
        event_id=f"sbx_evt_{uuid.uuid4().hex}",
        event_type="payment.succeeded",
        payload={},
        received_at=received_at,
        **values,
    )
    return row.id


async def issued(db: Backend, owner: Account, client: Client, issued_at: datetime) -> Invoice:
    """An issued invoice whose PDF job was lost (its key cleared after the worker ran)."""
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    await db.drain()
    await Invoice.filter(id=invoice.id).update(issued_at=issued_at, pdf_key=None)
    return await Invoice.get(id=invoice.id)


async def delivery(
    invoice: Invoice, created_at: datetime, updated_at: datetime | None = None, **values: Any
) -> uuid.UUID:
    row = await InvoiceDelivery.create(
        agency_id=invoice.agency_id, invoice_id=invoice.id, recipients=["ap@acme.test"], **values
    )
    # A queryset update: the model's auto_now would stamp the wall clock instead.
    await InvoiceDelivery.filter(id=row.id).update(
        created_at=created_at, updated_at=updated_at or created_at
    )
    return row.id


async def refund(payment: Payment, created_at: datetime, **values: Any) -> uuid.UUID:
    row = await Refund.create(
        agency_id=payment.agency_id,
        payment_id=payment.id,
        amount_minor=1_000,
        currency="USD",
        reason="Scope reduced",
        **values,
    )
    await Refund.filter(id=row.id).update(created_at=created_at)
    return row.id


async def notification(
    owner: Account, created_at: datetime, updated_at: datetime | None = None, **values: Any
) -> uuid.UUID:
    row = await Notification.create(
        agency_id=owner.agency_id,
        kind=NotificationKind.PAYMENT_RECEIVED,
        channel=Channel.EMAIL,
        user_id=owner.user.id,
        recipient_key=f"user:{owner.user.id}",
        address=owner.user.email,
        subject_type="payment",
        dedupe_key=f"test:{uuid.uuid4()}",
        **values,
    )
    await Notification.filter(id=row.id).update(
        created_at=created_at, updated_at=updated_at or created_at
    )
    return row.id


async def csv_import_row(
    owner: Account,
    status: ImportStatus,
    updated_at: datetime,
    created_at: datetime | None = None,
) -> uuid.UUID:
    row = await CsvImport.create(
        agency_id=owner.agency_id,
        created_by_id=owner.user.id,
        entity=ImportEntity.CLIENTS,
        status=status,
        filename="clients.csv",
        size_bytes=10,
        storage_key=f"imports/{owner.agency_id}/{uuid.uuid4()}/source.csv",
    )
    await CsvImport.filter(id=row.id).update(
        created_at=created_at or updated_at, updated_at=updated_at
    )
    return row.id


async def test_the_janitor_picks_work_stored_but_not_finished_and_leaves_the_rest(
    db: Backend, owner: Account, client: Client, settings: Settings, now: datetime
) -> None:
    # given webhook events: lost (two, one retried meanwhile; one a day old), and left alone
    # (attempts used up, processed, fresh, past giving up)
    day_old_event = await event(now - 25 * 60 * MINUTE)
    retried_event = await event(now - 11 * MINUTE, attempts=3, last_error="PaymentNotFoundYet")
    lost_event = await event(now - 10 * MINUTE)
    await event(now - 10 * MINUTE, attempts=webhook.MAX_ATTEMPTS, last_error="gone")
    await event(now - 10 * MINUTE, processed_at=now - 9 * MINUTE, outcome="applied", attempts=1)
    await event(now - 4 * MINUTE)
    await event(now - 4 * DAY)
    # and issued invoices: one without its PDF; one fresh, one rendered, one too old, a draft
    no_pdf = await issued(db, owner, client, now - 10 * MINUTE)
    await issued(db, owner, client, now - 4 * MINUTE)
    rendered = await issue_invoice(owner, await create_invoice(owner, client))
    await db.drain()
    await Invoice.filter(id=rendered.id).update(issued_at=now - 10 * MINUTE)
    await issued(db, owner, client, now - 4 * DAY)
    await create_invoice(owner, client)
    # and emails: never tried, claimed by an attempt that died; left alone: fresh, an attempt
    # still within its lease, failed (its actor retries), sent, too old
    never_tried = await delivery(rendered, now - 10 * MINUTE)
    lease = invoice_delivery.SEND_LEASE
    abandoned = await delivery(
        rendered, now - 20 * MINUTE, attempts=1, updated_at=now - lease - MINUTE
    )
    await delivery(rendered, now - 4 * MINUTE)
    await delivery(rendered, now - 20 * MINUTE, attempts=1, updated_at=now - lease + MINUTE)
    await delivery(
        rendered, now - 10 * MINUTE, attempts=1, status=DeliveryStatus.FAILED, last_error="451"
    )
    await delivery(rendered, now - 10 * MINUTE, attempts=1, status=DeliveryStatus.SENT)
    await delivery(rendered, now - 4 * DAY)
    # and refunds: one asked for and never sent; left alone: answered by the gateway, made
    # from a gateway's own event, settled, fresh, and one past a day (idempotency keys expire)
    payment = await Payment.create(
        agency_id=owner.agency_id,
        client_id=client.id,
        provider=PaymentProvider.SANDBOX,
        status=PaymentStatus.SUCCEEDED,
        amount_minor=50_000,
        currency="USD",
        provider_payment_id="sbx_pay_1",
    )
    asked = await refund(payment, now - 10 * MINUTE, created_by_id=owner.user.id)
    await refund(
        payment, now - 10 * MINUTE, created_by_id=owner.user.id, provider_refund_id="sbx_rf_1"
    )
    await refund(payment, now - 10 * MINUTE)
    await refund(
        payment, now - 10 * MINUTE, created_by_id=owner.user.id, status=RefundStatus.SUCCEEDED
    )
    await refund(payment, now - 4 * MINUTE, created_by_id=owner.user.id)
    await refund(payment, now - 25 * 60 * MINUTE, created_by_id=owner.user.id)

    # and notifications: never tried, claimed by a run that died; left alone: fresh, held
    # back by the email limit, failing for now (its actor retries), claimed within the
    # lease, held for a digest, sent, too old
    notification_lease = notification_service.SEND_LEASE
    untried = await notification(owner, now - 10 * MINUTE)
    dead_claim = await notification(
        owner,
        now - 30 * MINUTE,
        status=NotificationStatus.SENDING,
        attempts=1,
        claimed_at=now - notification_lease - MINUTE,
    )
    await notification(owner, now - 4 * MINUTE)
    await notification(owner, now - 10 * MINUTE, not_before=now + 30 * MINUTE)
    await notification(owner, now - 10 * MINUTE, attempts=1, last_error="451")
    await notification(
        owner,
        now - 10 * MINUTE,
        status=NotificationStatus.SENDING,
        attempts=1,
        claimed_at=now - notification_lease + MINUTE,
    )
    await notification(owner, now - 10 * MINUTE, digest=True)
    await notification(owner, now - 10 * MINUTE, status=NotificationStatus.SENT, attempts=1)
    await notification(owner, now - 4 * DAY)
    # and exports: one whose job was lost, one whose run died; left alone: fresh, running
    # within the lease, completed, failed, too old
    export_lease = export_service.LEASE
    running = ExportStatus.RUNNING
    dead_run = await export(
        owner, now - 30 * MINUTE, status=running, heartbeat_at=now - export_lease - 6 * MINUTE
    )
    lost_export = await export(owner, now - 10 * MINUTE)
    await export(owner, now - 4 * MINUTE)
    await export(owner, now - 30 * MINUTE, status=running, heartbeat_at=now - MINUTE)
    await export(owner, now - 30 * MINUTE, status=ExportStatus.COMPLETED)
    await export(owner, now - 30 * MINUTE, status=ExportStatus.FAILED)
    await export(owner, now - 4 * DAY)

    # and CSV imports: running with no batch committed for ten minutes (started an hour
    # ago), queued and never picked up; left alone: running and committing, finished,
    # waiting for the user to start, too old
    stalled = await csv_import_row(
        owner, ImportStatus.RUNNING, now - 10 * MINUTE, created_at=now - 60 * MINUTE
    )
    never_run = await csv_import_row(owner, ImportStatus.QUEUED, now - 20 * MINUTE)
    await csv_import_row(owner, ImportStatus.RUNNING, now - MINUTE, created_at=now - 60 * MINUTE)
    await csv_import_row(owner, ImportStatus.COMPLETED, now - 10 * MINUTE)
    await csv_import_row(owner, ImportStatus.FAILED, now - 10 * MINUTE)
    await csv_import_row(owner, ImportStatus.UPLOADED, now - 10 * MINUTE)
    await csv_import_row(owner, ImportStatus.RUNNING, now - 10 * MINUTE, created_at=now - 4 * DAY)

    # when the janitor looks
    stuck = await janitor.find_stuck(settings, now)

    # then it finds exactly the unfinished work, oldest first, by the job that finishes it
    assert stuck.jobs == {
        PROCESS_WEBHOOK_JOB: [day_old_event, retried_event, lost_event],
        RENDER_PDF_JOB: [no_pdf.id],
        SEND_EMAIL_JOB: [abandoned, never_tried],
        REFUND_JOB: [asked],
        notification_service.SEND_JOB: [dead_claim, untried],
        export_service.EXPORT_JOB: [dead_run, lost_export],
        csv_import.RUN_JOB: [never_run, stalled],
    }


async def test_a_run_takes_at_most_a_batch_of_each_kind_oldest_first(
    db: Backend, settings: Settings, now: datetime
) -> None:
    # given five lost webhook events
    ids = [await event(now - (20 - minutes) * MINUTE) for minutes in range(5)]

    # when the janitor looks with a batch of two, then again once those are processed
    small = settings.model_copy(update={"janitor_batch_size": 2})
    first = await janitor.find_stuck(small, now)
    await WebhookEvent.filter(id__in=ids[:2]).update(processed_at=now, outcome="applied")
    second = await janitor.find_stuck(small, now)

    # then each run takes the two oldest still waiting
    assert first.jobs[PROCESS_WEBHOOK_JOB] == ids[:2]
    assert second.jobs[PROCESS_WEBHOOK_JOB] == ids[2:4]
    assert first.counts() == {
        PROCESS_WEBHOOK_JOB: 2,
        RENDER_PDF_JOB: 0,
        SEND_EMAIL_JOB: 0,
        REFUND_JOB: 0,
        notification_service.SEND_JOB: 0,
        export_service.EXPORT_JOB: 0,
        csv_import.RUN_JOB: 0,
    }
