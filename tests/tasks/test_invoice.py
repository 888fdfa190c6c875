"""Invoice actors: an approved milestone gets one issued, emailed invoice; failures show."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from pypdf import PdfReader

from settle.core import clock
from settle.core.errors import ValidationError
from settle.core.outbox import transaction
from settle.core.settings import Settings, configure_settings
from settle.models.activity import ActivityEvent
from settle.models.client import Client
from settle.models.invoice import (
    DeliveryStatus,
    Invoice,
    InvoiceCounter,
    InvoiceDelivery,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceSource,
    InvoiceStatus,
)
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.project import Project
from settle.notifications.email import EmailDeliveryError
from settle.services import invoice as invoice_service
from settle.services import milestone as milestone_service
from settle.tasks.broker import actor_names
from settle.tasks.invoice import (
    GENERATION_FAILED,
    generate_for_milestone,
    mark_overdue,
    render_pdf,
    send_email,
)
from settle.tasks.scheduler import ScheduledJob, default_jobs
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_contact
from tests.fixtures.smtp import Mailbox, free_port, use_smtp

# The day everything is issued on; the project's terms make invoices due 30 days later.
TODAY = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
PRIMARY = "priya@globex.test"
AMOUNT_MINOR = 10_000_000  # ₹1,00,000.00


class MovableClock:
    """Starts at ``TODAY`` and runs on from wherever it was last moved to."""

    def __init__(self) -> None:
        self.move_to(TODAY)

    def move_to(self, moment: datetime) -> None:
        self._base = moment
        self._started = datetime.now(UTC)

    def now(self) -> datetime:
        return self._base + (datetime.now(UTC) - self._started)


@pytest.fixture
def movable_clock() -> Iterator[MovableClock]:
    moving = MovableClock()
    clock.set_clock(moving.now)
    try:
        yield moving
    finally:
        clock.set_clock(None)


@contextmanager
def running_smtp(mailbox: Mailbox) -> Iterator[Mailbox]:
    """A real SMTP server answering with ``mailbox``, configured while the block runs."""
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)
    try:
        yield mailbox
    finally:
        configure_settings(previous)
        controller.stop()


@pytest.fixture
def smtp(db: Backend) -> Iterator[Mailbox]:
    with running_smtp(Mailbox()) as mailbox:
        yield mailbox


@pytest.fixture
async def client(owner: Account) -> Client:
    globex = await create_client(owner, name="Globex", currency="INR")
    await create_contact(owner, globex, primary=True, name="Priya", email=PRIMARY)
    return globex


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await Project.create(
        agency_id=owner.agency_id, client_id=client.id, name="Website", currency="INR"
    )


async def create_milestone(project: Project, status: MilestoneStatus) -> Milestone:
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title="Design phase",
        amount_minor=AMOUNT_MINOR,
        status=status,
    )


async def issue_invoice(db: Backend, owner: Account, client: Client, **values: object) -> Invoice:
    """An invoice issued by hand (no email requested), its PDF rendered."""
    async with transaction():
        draft = await invoice_service.create_invoice(
            owner.actor,
            client.id,
            None,
            dict(values),
            [{"description": "Brand identity", "quantity": "1", "unit_price": "100000.00"}],
        )
        invoice = await invoice_service.finalize_invoice(owner.actor, draft.id)
    await db.drain()
    return invoice


async def request_delivery(invoice: Invoice) -> InvoiceDelivery:
    """A delivery as the invoice service writes it, without sending its job (the test runs it)."""
    return await InvoiceDelivery.create(
        agency_id=invoice.agency_id, invoice_id=invoice.id, recipients=[PRIMARY]
    )


async def timeline(entity_id: uuid.UUID) -> list[str]:
    events = ActivityEvent.filter(entity_type="invoice", entity_id=entity_id)
    return [event.verb for event in await events.order_by("created_at", "id")]


def pdf_attachment(message: EmailMessage) -> tuple[str | None, str]:
    """The one attachment's file name and its text."""
    [attachment] = list(message.iter_attachments())
    pages = PdfReader(io.BytesIO(attachment.get_content())).pages
    return attachment.get_filename(), "\n".join(page.extract_text() for page in pages)


async def generate_now(milestone: Milestone) -> Invoice | None:
    async with transaction():
        return await invoice_service.generate_for_milestone(milestone.id)


# --- the automatic invoice of an approved milestone -----------------------------------


async def test_approving_a_milestone_issues_and_emails_its_invoice(
    db: Backend,
    movable_clock: MovableClock,
    smtp: Mailbox,
    owner: Account,
    client: Client,
    project: Project,
) -> None:
    # given
    milestone = await create_milestone(project, MilestoneStatus.SUBMITTED)

    # when the client's work is approved and the workers have run
    async with transaction():
        await milestone_service.approve_milestone(owner.actor, milestone.id)
    await db.drain()

    # then exactly one invoice is issued for it
    [invoice] = await Invoice.filter(agency_id=owner.agency_id)
    assert (
        invoice.number,
        invoice.status,
        invoice.source,
        invoice.client_id,
        invoice.project_id,
        invoice.total_minor,
        invoice.issue_date,
        invoice.due_date,
    ) == (
        "INV-2026-0001",
        InvoiceStatus.SENT,
        InvoiceSource.MILESTONE_APPROVAL,
        client.id,
        project.id,
        AMOUNT_MINOR,
        date(2026, 11, 22),
        date(2026, 12, 22),
    )
    assert invoice.pdf_key is not None
    [line] = await InvoiceLine.filter(invoice_id=invoice.id)
    assert (line.kind, line.description, line.milestone_id, line.amount_minor) == (
        InvoiceLineKind.MILESTONE,
        "Design phase",
        milestone.id,
        AMOUNT_MINOR,
    )
    approved = await Milestone.get(id=milestone.id)
    assert (approved.invoice_id, approved.invoice_error) == (invoice.id, None)
    # and emailed once to the client's primary contact, with its PDF
    assert [e.rcpt_tos for e in smtp.envelopes] == [[PRIMARY]]
    [message] = smtp.messages()
    assert message["Subject"] == (
        "Invoice INV-2026-0001 from Northwind Studio — ₹1,00,000.00 due 22 Dec 2026"
    )
    filename, text = pdf_attachment(message)
    assert filename == "INV-2026-0001.pdf"
    assert "INV-2026-0001" in text
    assert "Design phase" in text
    assert "₹1,00,000.00" in text
    [delivery] = await InvoiceDelivery.filter(invoice_id=invoice.id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
    assert invoice.last_sent_at == delivery.sent_at
    assert delivery.sent_at is not None
    assert sorted(await timeline(invoice.id)) == [
        "created",
        "email_requested",
        "emailed",
        "finalized",
        "pdf_rendered",
    ]


async def test_running_the_actor_again_makes_no_second_invoice_or_email(
    db: Backend,
    movable_clock: MovableClock,
    smtp: Mailbox,
    owner: Account,
    project: Project,
) -> None:
    # given a milestone whose invoice was issued and emailed
    milestone = await create_milestone(project, MilestoneStatus.SUBMITTED)
    async with transaction():
        await milestone_service.approve_milestone(owner.actor, milestone.id)
    await db.drain()

    # when its message is delivered to the worker again
    await asyncio.to_thread(generate_for_milestone.fn, str(milestone.id))
    await db.drain()

    # then
    assert await Invoice.filter(agency_id=owner.agency_id).count() == 1
    assert await InvoiceDelivery.filter(agency_id=owner.agency_id).count() == 1
    assert len(smtp.envelopes) == 1


async def test_generating_twice_at_once_makes_one_invoice(
    db: Backend, movable_clock: MovableClock, owner: Account, project: Project
) -> None:
    # given
    milestone = await create_milestone(project, MilestoneStatus.APPROVED)

    # when two workers generate its invoice at the same moment
    first, second = await asyncio.gather(generate_now(milestone), generate_now(milestone))
    await db.drain()

    # then both found the same, single invoice, and one number was used
    assert first is not None
    assert second is not None
    assert first.id == second.id
    [invoice] = await Invoice.filter(agency_id=owner.agency_id)
    assert invoice.number == "INV-2026-0001"
    assert await InvoiceDelivery.filter(invoice_id=invoice.id).count() == 1
    [counter] = await InvoiceCounter.filter(agency_id=owner.agency_id)
    assert counter.last_value == 1
    assert (await Milestone.get(id=milestone.id)).invoice_id == invoice.id


async def test_a_failed_generation_shows_on_the_milestone_until_a_retry_succeeds(
    db: Backend,
    movable_clock: MovableClock,
    owner: Account,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given numbering that fails once, as when the database drops the connection
    milestone = await create_milestone(project, MilestoneStatus.APPROVED)
    real_next_sequence = invoice_service.next_sequence
    failures = [ConnectionError("connection to the database was lost")]

    async def next_sequence_failing_once(agency_id: uuid.UUID, scope: str) -> int:
        if failures:
            raise failures.pop()
        return await real_next_sequence(agency_id, scope)

    monkeypatch.setattr(invoice_service, "next_sequence", next_sequence_failing_once)

    # when the actor runs, it raises so Dramatiq retries it
    with pytest.raises(ConnectionError):
        await asyncio.to_thread(generate_for_milestone.fn, str(milestone.id))

    # then the milestone has no invoice, and says so in words for the agency
    failed = await Milestone.get(id=milestone.id)
    assert (failed.invoice_id, failed.invoice_error) == (None, GENERATION_FAILED)
    assert await Invoice.filter(agency_id=owner.agency_id).count() == 0

    # when the retry runs
    await asyncio.to_thread(generate_for_milestone.fn, str(milestone.id))
    await db.drain()

    # then the invoice exists, with the number the failed run did not keep, and the error is gone
    [invoice] = await Invoice.filter(agency_id=owner.agency_id)
    assert invoice.number == "INV-2026-0001"
    recovered = await Milestone.get(id=milestone.id)
    assert (recovered.invoice_id, recovered.invoice_error) == (invoice.id, None)


async def test_a_domain_error_is_shown_on_the_milestone_in_its_own_words(
    db: Backend, movable_clock: MovableClock, owner: Account, project: Project
) -> None:
    # given payment terms that would make the invoice due before it is issued
    await Project.filter(id=project.id).update(invoice_due_days=-1)
    milestone = await create_milestone(project, MilestoneStatus.APPROVED)

    # when
    with pytest.raises(ValidationError):
        await asyncio.to_thread(generate_for_milestone.fn, str(milestone.id))

    # then
    failed = await Milestone.get(id=milestone.id)
    assert (failed.invoice_id, failed.invoice_error) == (
        None,
        "The invoice could not be generated: dueDate must not be before the issue date",
    )

    # when the terms are fixed and the retry runs
    await Project.filter(id=project.id).update(invoice_due_days=15)
    await asyncio.to_thread(generate_for_milestone.fn, str(milestone.id))
    await db.drain()

    # then
    [invoice] = await Invoice.filter(agency_id=owner.agency_id)
    assert invoice.due_date == date(2026, 12, 7)
    recovered = await Milestone.get(id=milestone.id)
    assert (recovered.invoice_id, recovered.invoice_error) == (invoice.id, None)


async def test_a_milestone_no_longer_approved_gets_no_invoice(
    db: Backend, movable_clock: MovableClock, owner: Account, project: Project
) -> None:
    # given a milestone cancelled before the worker got to it
    milestone = await create_milestone(project, MilestoneStatus.CANCELLED)

    # when
    await asyncio.to_thread(generate_for_milestone.fn, str(milestone.id))

    # then
    assert await Invoice.filter(agency_id=owner.agency_id).count() == 0
    row = await Milestone.get(id=milestone.id)
    assert (row.invoice_id, row.invoice_error) == (None, None)


# --- the PDF and the email ----------------------------------------------------------------


async def test_rendering_the_pdf_again_keeps_the_first(
    db: Backend, movable_clock: MovableClock, owner: Account, client: Client
) -> None:
    # given an issued invoice whose PDF the worker rendered
    invoice = await issue_invoice(db, owner, client)
    rendered = await Invoice.get(id=invoice.id)
    assert rendered.pdf_key is not None

    # when the job is delivered again
    await asyncio.to_thread(render_pdf.fn, str(invoice.id))

    # then
    again = await Invoice.get(id=invoice.id)
    assert (again.pdf_key, again.pdf_rendered_at) == (rendered.pdf_key, rendered.pdf_rendered_at)
    assert (await timeline(invoice.id)).count("pdf_rendered") == 1


async def test_a_451_reply_fails_the_attempt_and_the_retry_sends_the_email_once(
    db: Backend, movable_clock: MovableClock, owner: Account, client: Client
) -> None:
    # given
    invoice = await issue_invoice(db, owner, client)
    delivery = await request_delivery(invoice)
    with running_smtp(Mailbox(data_reply="451 4.3.0 Try again later")) as mailbox:
        # when the server is busy, the actor raises so Dramatiq retries with backoff
        with pytest.raises(EmailDeliveryError) as caught:
            await asyncio.to_thread(send_email.fn, str(delivery.id))

        # then the attempt is recorded, and the invoice is not marked sent
        assert caught.value.temporary is True
        failed = await InvoiceDelivery.get(id=delivery.id)
        assert (failed.status, failed.attempts, failed.last_error) == (
            DeliveryStatus.FAILED,
            1,
            "SMTP server replied 451 4.3.0 Try again later",
        )
        assert (await Invoice.get(id=invoice.id)).last_sent_at is None

        # when the retry finds the server taking mail again
        mailbox.data_reply = "250 OK"
        await asyncio.to_thread(send_email.fn, str(delivery.id))

        # then the email arrived once, and the delivery and the invoice say so
        assert [e.rcpt_tos for e in mailbox.envelopes] == [[PRIMARY]]
    sent = await InvoiceDelivery.get(id=delivery.id)
    assert (sent.status, sent.attempts, sent.last_error) == (DeliveryStatus.SENT, 2, None)
    assert (await Invoice.get(id=invoice.id)).last_sent_at == sent.sent_at
    verbs = await timeline(invoice.id)
    assert (verbs.count("emailed"), verbs.count("email_failed")) == (1, 0)


async def test_a_550_reply_fails_the_delivery_without_a_retry(
    db: Backend, movable_clock: MovableClock, owner: Account, client: Client
) -> None:
    # given
    invoice = await issue_invoice(db, owner, client)
    delivery = await request_delivery(invoice)
    with running_smtp(Mailbox(data_reply="550 5.7.1 Message rejected")) as mailbox:
        # when: the actor returns normally, so Dramatiq does not retry
        await asyncio.to_thread(send_email.fn, str(delivery.id))

        # then
        assert mailbox.envelopes == []
    failed = await InvoiceDelivery.get(id=delivery.id)
    assert (failed.status, failed.attempts, failed.last_error) == (
        DeliveryStatus.FAILED,
        1,
        "SMTP server replied 550 5.7.1 Message rejected",
    )
    assert (await Invoice.get(id=invoice.id)).last_sent_at is None
    assert (await timeline(invoice.id)).count("email_failed") == 1


async def test_a_redelivered_send_for_a_sent_delivery_sends_nothing(
    db: Backend, movable_clock: MovableClock, smtp: Mailbox, owner: Account, client: Client
) -> None:
    # given a delivery the actor already sent
    invoice = await issue_invoice(db, owner, client)
    delivery = await request_delivery(invoice)
    await asyncio.to_thread(send_email.fn, str(delivery.id))

    # when its message comes again
    await asyncio.to_thread(send_email.fn, str(delivery.id))

    # then
    assert len(smtp.envelopes) == 1
    row = await InvoiceDelivery.get(id=delivery.id)
    assert (row.status, row.attempts) == (DeliveryStatus.SENT, 1)


# --- the overdue sweep ----------------------------------------------------------------------


async def test_the_sweep_marks_past_due_invoices_overdue_once(
    db: Backend, movable_clock: MovableClock, owner: Account, client: Client
) -> None:
    # given one invoice due on 22 Dec and one due at the end of January
    due_soon = await issue_invoice(db, owner, client)
    due_later = await issue_invoice(db, owner, client, due_date=date(2027, 1, 31))

    # when the sweep runs on 23 Dec, twice
    movable_clock.move_to(datetime(2026, 12, 23, 0, 15, tzinfo=UTC))
    await asyncio.to_thread(mark_overdue.fn)
    await asyncio.to_thread(mark_overdue.fn)

    # then only the first is overdue, with one timeline event
    overdue = await Invoice.get(id=due_soon.id)
    assert overdue.status == InvoiceStatus.OVERDUE
    assert overdue.overdue_at is not None
    assert overdue.overdue_at - datetime(2026, 12, 23, 0, 15, tzinfo=UTC) < timedelta(minutes=1)
    assert (await timeline(due_soon.id)).count("overdue") == 1
    assert (await Invoice.get(id=due_later.id)).status == InvoiceStatus.SENT
    assert "overdue" not in await timeline(due_later.id)


# --- declarations -----------------------------------------------------------------------------


def test_the_actors_are_declared_with_retries_under_their_job_names() -> None:
    # given / when / then
    assert {
        declared.actor_name: declared.options.get("max_retries")
        for declared in (generate_for_milestone, render_pdf, send_email, mark_overdue)
    } == {
        invoice_service.GENERATE_FOR_MILESTONE_JOB: 10,
        invoice_service.RENDER_PDF_JOB: 10,
        invoice_service.SEND_EMAIL_JOB: 10,
        "invoice.mark_overdue": 3,
    }


def test_the_overdue_sweep_is_scheduled_daily_and_every_scheduled_job_is_an_actor() -> None:
    # given
    jobs = default_jobs(Settings())

    # when / then
    assert ScheduledJob("invoice.mark_overdue", "15 0 * * *", "invoice.mark_overdue") in jobs
    assert {job.actor_name for job in jobs} <= set(actor_names())
