"""The janitor's run on the in-process worker: jobs whose messages were lost are sent again
and finish their work, once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from settle.core import clock
from settle.core.outbox import relay_later, transaction
from settle.core.storage import get_storage
from settle.models.activity import ActivityEvent
from settle.models.invoice import DeliveryStatus, Invoice, InvoiceDelivery
from settle.models.milestone import Milestone
from settle.models.outbox import OutboxMessage
from settle.models.payment import (
    Payment,
    PaymentAuditEntry,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.models.project import Project
from settle.services import csv_import, janitor
from settle.services import export as export_service
from settle.services import notification as notification_service
from settle.services import payment as payment_service
from settle.services.invoice import RENDER_PDF_JOB, SEND_EMAIL_JOB
from settle.services.payment import PROCESS_WEBHOOK_JOB, REFUND_JOB
from settle.tasks.invoice import render_pdf
from settle.tasks.janitor import resend_stuck
from settle.tasks.payment import process_webhook
from settle.tasks.payment import refund as refund_job
from tests.conftest import Backend
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_project,
    issue_invoice,
)
from tests.fixtures.sandbox import approved_milestone, deliver, pay_milestones


@contextmanager
def clock_ahead() -> Iterator[None]:
    """Settle's clock ten minutes ahead: what is stored now is past the five-minute threshold."""
    clock.set_clock(lambda: datetime.now(UTC) + timedelta(minutes=10))
    try:
        yield
    finally:
        clock.set_clock(None)


@pytest.fixture
async def project(owner: Account) -> Project:
    return await create_project(owner, await create_client(owner, currency="USD"), currency="USD")


async def invoiced_milestone(
    db: Backend, owner: Account, project: Project, title: str
) -> Milestone:
    approved = await approved_milestone(owner, project, title=title, amount="500.00")
    await db.drain()
    return await Milestone.get(id=approved.id)


async def lose_unsent_messages() -> None:
    """The outbox handed its jobs to the broker, which lost them (Redis restarted empty, say)."""
    await OutboxMessage.filter(published_at__isnull=True).update(published_at=clock.now())


async def test_a_run_sends_lost_jobs_again_and_each_finishes_its_work_once(
    db: Backend, owner: Account, project: Project
) -> None:
    # given a captured payment whose refund was asked for, and a pending one whose success
    # webhook was stored; an issued invoice, and an email requested for it
    captured, _ = await pay_milestones(owner, [await invoiced_milestone(db, owner, project, "A")])
    await deliver(captured, "payment.succeeded")
    await db.drain()
    pending, _ = await pay_milestones(owner, [await invoiced_milestone(db, owner, project, "B")])
    with relay_later():
        async with transaction():
            asked = await payment_service.request_refund(owner.actor, captured.id, "100.00", "Fix")
        received = await deliver(pending, "payment.succeeded")
        invoice = await issue_invoice(
            owner, await create_invoice(owner, await create_client(owner, currency="USD"))
        )
        email = await InvoiceDelivery.create(
            agency_id=invoice.agency_id, invoice_id=invoice.id, recipients=["ap@acme.test"]
        )
    # and every one of their messages lost, so the worker has nothing to run
    await lose_unsent_messages()
    await db.drain()
    assert (await Payment.get(id=pending.id)).status == PaymentStatus.PENDING
    assert (await Invoice.get(id=invoice.id)).pdf_key is None
    assert (await InvoiceDelivery.get(id=email.id)).status == DeliveryStatus.PENDING
    assert (await Refund.get(id=asked.id)).status == RefundStatus.PENDING

    # when the janitor runs, five minutes and more later
    with clock_ahead():
        await asyncio.to_thread(resend_stuck.send)
        await db.drain()

        # then each job ran and finished its work
        assert (await Payment.get(id=pending.id)).status == PaymentStatus.SUCCEEDED
        event = await WebhookEvent.get(id=received.event.id)
        assert (event.outcome, event.attempts) == ("applied", 1)
        assert (await Invoice.get(id=invoice.id)).pdf_key is not None
        sent = await InvoiceDelivery.get(id=email.id)
        assert (sent.status, sent.attempts) == (DeliveryStatus.SENT, 1)
        refund = await Refund.get(id=asked.id)
        assert (refund.status, refund.provider_refund_id) == (
            RefundStatus.SUCCEEDED,
            f"sbx_rf_{asked.id}",
        )
        assert (await Payment.get(id=captured.id)).amount_refunded_minor == 10_000
        # and the next run finds nothing left to send
        assert (await janitor.find_stuck()).counts() == {
            PROCESS_WEBHOOK_JOB: 0,
            RENDER_PDF_JOB: 0,
            SEND_EMAIL_JOB: 0,
            REFUND_JOB: 0,
            notification_service.SEND_JOB: 0,
            export_service.EXPORT_JOB: 0,
            csv_import.RUN_JOB: 0,
        }
    # and the payment was applied once
    succeeded = PaymentAuditEntry.filter(payment_id=pending.id, action="payment_succeeded")
    assert await succeeded.count() == 1


# --- a re-send racing its original: each job run twice at once finishes its work once ---------


async def twice_at_once(job: Callable[[str], Awaitable[None]], row_id: object) -> None:
    """Run an actor's function twice concurrently, as two workers would."""
    await asyncio.gather(*(asyncio.to_thread(job, str(row_id)) for _ in range(2)))


async def test_a_webhook_processed_twice_at_once_is_applied_once(
    db: Backend, owner: Account, project: Project
) -> None:
    # given a stored success whose job was lost
    pending, _ = await pay_milestones(owner, [await invoiced_milestone(db, owner, project, "A")])
    with relay_later():
        received = await deliver(pending, "payment.succeeded")

    # when the janitor's re-send and the original run at once
    await twice_at_once(process_webhook.fn, received.event.id)

    # then it is applied once
    event = await WebhookEvent.get(id=received.event.id)
    assert (event.outcome, event.attempts) == ("applied", 1)
    succeeded = PaymentAuditEntry.filter(payment_id=pending.id, action="payment_succeeded")
    assert await succeeded.count() == 1
    assert (await Payment.get(id=pending.id)).status == PaymentStatus.SUCCEEDED


async def test_a_pdf_rendered_twice_at_once_is_stored_and_recorded_once(
    db: Backend, owner: Account
) -> None:
    # given an issued invoice whose PDF job was lost
    with relay_later():
        invoice = await issue_invoice(
            owner, await create_invoice(owner, await create_client(owner, currency="USD"))
        )

    # when two runs render it at once
    await twice_at_once(render_pdf.fn, invoice.id)

    # then it has one PDF and one timeline entry for it
    rendered = await Invoice.get(id=invoice.id)
    assert rendered.pdf_key is not None
    reader = await get_storage().open(rendered.pdf_key)
    try:
        assert (await reader.__anext__()).startswith(b"%PDF-")
    finally:
        await reader.aclose()
    events = ActivityEvent.filter(entity_id=invoice.id, verb="pdf_rendered")
    assert await events.count() == 1


async def test_a_refund_sent_twice_at_once_refunds_once(
    db: Backend, owner: Account, project: Project
) -> None:
    # given a captured payment and a refund asked for, its job lost
    captured, _ = await pay_milestones(owner, [await invoiced_milestone(db, owner, project, "A")])
    await deliver(captured, "payment.succeeded")
    await db.drain()
    with relay_later():
        async with transaction():
            asked = await payment_service.request_refund(owner.actor, captured.id, "100.00", "Fix")

    # when two runs ask the gateway at once (with the refund's id as the idempotency key)
    await twice_at_once(refund_job.fn, asked.id)

    # then the money went back once
    row = await Refund.get(id=asked.id)
    assert (row.status, row.provider_refund_id) == (RefundStatus.SUCCEEDED, f"sbx_rf_{asked.id}")
    payment = await Payment.get(id=captured.id)
    assert (payment.status, payment.amount_refunded_minor) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        10_000,
    )
    assert await PaymentAuditEntry.filter(action="refund_succeeded").count() == 1
