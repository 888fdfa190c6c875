"""Invoice emails: a real SMTP server receives the invoice with its PDF, once, and every
outcome is recorded on the delivery and the invoice's timeline."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from pypdf import PdfReader

from settle.core import clock
from settle.core.outbox import transaction
from settle.core.settings import configure_settings
from settle.core.storage import ObjectNotFoundError, get_storage
from settle.models.activity import ActivityEvent
from settle.models.agency import Agency
from settle.models.client import Client
from settle.models.invoice import DeliveryStatus, Invoice, InvoiceDelivery, InvoiceStatus
from settle.notifications.templates import format_email_date
from settle.services import invoice as invoice_service
from settle.services import invoice_delivery, payment_link, settlement
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import Account, create_client, create_contact
from tests.fixtures.smtp import Mailbox, body, free_port, use_smtp
from tests.notifications.test_email import assert_subject_sent_as_written, header_lines

# Issued on this day, due 30 days later (the agency default), numbered INV-2026-0001.
TODAY = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
PRIMARY = "priya@globex.test"


@pytest.fixture
def frozen_clock() -> Iterator[None]:
    """The clock starts at ``TODAY`` and runs on, so rows still get distinct times."""
    started = datetime.now(UTC)
    clock.set_clock(lambda: TODAY + (datetime.now(UTC) - started))
    try:
        yield
    finally:
        clock.set_clock(None)


@dataclass
class PickyMailbox(Mailbox):
    """Refuses one recipient at RCPT and accepts the others, as a server with a dead mailbox."""

    refused: str = ""

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address == self.refused:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@dataclass
class HeldMailbox(Mailbox):
    """Holds each DATA reply until ``release`` is set, as a slow server in mid-conversation."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.entered.set()
        # The server runs on its own thread and loop; waiting there holds only this reply.
        await asyncio.to_thread(self.release.wait, 10)
        return await super().handle_DATA(server, session, envelope)


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
    await Agency.filter(id=owner.agency_id).update(email="billing@northwind.test")
    globex = await create_client(owner, name="Globex", currency="INR")
    await create_contact(owner, globex, primary=True, name="Priya", email=PRIMARY)
    return globex


async def issue_invoice(db: Backend, owner: Account, client: Client) -> Invoice:
    """An issued invoice of ₹1,00,000.00 plus 18% tax, its PDF already rendered."""
    async with transaction():
        draft = await invoice_service.create_invoice(
            owner.actor,
            client.id,
            None,
            {"tax_rate": "18"},
            [{"description": "Brand identity", "quantity": "1", "unit_price": "100000.00"}],
        )
        invoice = await invoice_service.finalize_invoice(owner.actor, draft.id)
    await db.drain()
    return invoice


async def request_delivery(
    invoice: Invoice, *, attempts: int = 0, status: DeliveryStatus = DeliveryStatus.PENDING
) -> InvoiceDelivery:
    """A delivery as the invoice service writes it, without sending its job (the test runs it)."""
    return await InvoiceDelivery.create(
        agency_id=invoice.agency_id,
        invoice_id=invoice.id,
        recipients=[PRIMARY],
        attempts=attempts,
        status=status,
    )


async def timeline(invoice: Invoice) -> list[str]:
    events = ActivityEvent.filter(entity_type="invoice", entity_id=invoice.id)
    return [event.verb for event in await events.order_by("created_at", "id")]


def text_of(message: EmailMessage, subtype: str = "plain") -> str:
    """A text part with the wire's CRLF line ends read back as newlines."""
    return body(message, subtype).replace("\r\n", "\n")


def pdf_text(message: EmailMessage) -> tuple[str | None, str, str]:
    """The one attachment's file name, content type and text."""
    [attachment] = list(message.iter_attachments())
    data = attachment.get_content()
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    return attachment.get_filename(), attachment.get_content_type(), text


async def test_a_sent_invoice_arrives_with_its_pdf_and_is_recorded_as_emailed(
    db: Backend, frozen_clock: None, smtp: Mailbox, owner: Account, client: Client
) -> None:
    # given
    async with transaction():
        draft = await invoice_service.create_invoice(
            owner.actor,
            client.id,
            None,
            {"tax_rate": "18"},
            [{"description": "Brand identity", "quantity": "1", "unit_price": "100000.00"}],
        )

    # when the owner sends it with a note, to one more address and a copy
    async with transaction():
        await invoice_service.send_invoice(
            owner.actor,
            draft.id,
            to=["ap@globex.test"],
            cc=["cfo@globex.test"],
            message="Thank you for the project.\nPayment by bank transfer, please.",
        )
    await db.drain()

    # then one message reached every recipient
    assert [e.rcpt_tos for e in smtp.envelopes] == [[PRIMARY, "ap@globex.test", "cfo@globex.test"]]
    [message] = smtp.messages()
    pay_url = payment_link.payment_url(await Invoice.get(id=draft.id))
    assert pay_url is not None
    assert message["To"] == f"{PRIMARY}, ap@globex.test"
    assert message["Cc"] == "cfo@globex.test"
    assert message["Reply-To"] == "billing@northwind.test"
    assert message["Subject"] == (
        "Invoice INV-2026-0001 from Northwind Studio — ₹1,18,000.00 due 22 Dec 2026"
    )
    assert text_of(message) == (
        "Hello,\n"
        "\n"
        "Northwind Studio has sent you invoice INV-2026-0001, issued 22 Nov 2026.\n"
        "\n"
        "Thank you for the project.\n"
        "Payment by bank transfer, please.\n"
        "\n"
        "Total: ₹1,18,000.00\n"
        "Amount due: ₹1,18,000.00\n"
        "Due date: 22 Dec 2026\n"
        "\n"
        f"Pay online: {pay_url}\n"
        "\n"
        "The invoice is attached as a PDF (INV-2026-0001.pdf).\n"
        "\n"
        "Questions about this invoice? Reply to this email or write to billing@northwind.test.\n"
        "\n"
        "Northwind Studio\n"
    )
    html = text_of(message, "html")
    assert "Thank you for the project.\nPayment by bank transfer, please." in html
    assert '<td style="padding: 4px 0; font-weight: 600;" align="right">₹1,18,000.00</td>' in html
    assert f'<a href="{pay_url}"' in html
    assert "Pay ₹1,18,000.00 online</a>" in html
    # with the invoice's PDF attached
    filename, content_type, pdf = pdf_text(message)
    assert (filename, content_type) == ("INV-2026-0001.pdf", "application/pdf")
    assert "INV-2026-0001" in pdf
    assert "Brand identity" in pdf
    assert "₹1,18,000.00" in pdf
    # and the delivery, the invoice and its timeline say it was emailed
    [delivery] = await InvoiceDelivery.filter(invoice_id=draft.id)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        DeliveryStatus.SENT,
        1,
        None,
    )
    invoice = await Invoice.get(id=draft.id)
    assert invoice.status == InvoiceStatus.SENT
    assert invoice.last_sent_at == delivery.sent_at
    assert delivery.sent_at is not None
    assert (await timeline(invoice)).count("emailed") == 1
    event = await ActivityEvent.get(entity_id=invoice.id, verb="emailed")
    assert event.summary == f"Invoice INV-2026-0001 emailed to {PRIMARY}, ap@globex.test"
    assert event.actor_id is None


async def test_a_delivery_already_sent_is_not_sent_again(
    db: Backend, frozen_clock: None, smtp: Mailbox, owner: Account, client: Client
) -> None:
    # given a delivery that went out
    invoice = await issue_invoice(db, owner, client)
    delivery = await request_delivery(invoice)
    await invoice_delivery.deliver(delivery.id)
    sent = await InvoiceDelivery.get(id=delivery.id)

    # when its message is delivered to the worker again
    await invoice_delivery.deliver(delivery.id)

    # then nothing more is sent or recorded
    assert len(smtp.envelopes) == 1
    again = await InvoiceDelivery.get(id=delivery.id)
    assert (again.status, again.attempts, again.sent_at) == (DeliveryStatus.SENT, 1, sent.sent_at)
    assert (await timeline(invoice)).count("emailed") == 1


async def test_a_second_run_while_the_first_is_sending_stands_back_and_one_email_goes(
    db: Backend, frozen_clock: None, owner: Account, client: Client
) -> None:
    # given a delivery whose first run is in the middle of the SMTP conversation
    invoice = await issue_invoice(db, owner, client)
    delivery = await request_delivery(invoice)
    with running_smtp(HeldMailbox()) as mailbox:
        assert isinstance(mailbox, HeldMailbox)
        first = asyncio.create_task(invoice_delivery.deliver(delivery.id))

        async def talking() -> bool:
            return mailbox.entered.is_set()

        await wait_for(talking)

        # when the same delivery runs again meanwhile (a redelivered or re-sent message)
        with pytest.raises(invoice_delivery.DeliveryInProgressError):
            await invoice_delivery.deliver(delivery.id)

        # then only the first run sends it, once
        mailbox.release.set()
        await first
        assert [e.rcpt_tos for e in mailbox.envelopes] == [[PRIMARY]]
    row = await InvoiceDelivery.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_error) == (DeliveryStatus.SENT, 1, None)
    assert (await timeline(invoice)).count("emailed") == 1


async def test_a_claim_abandoned_by_a_dead_run_is_taken_over_after_the_lease(
    db: Backend, frozen_clock: None, smtp: Mailbox, owner: Account, client: Client
) -> None:
    # given a delivery whose attempt was claimed by a run that died before recording it
    invoice = await issue_invoice(db, owner, client)
    delivery = await request_delivery(invoice, attempts=1)
    claimed_at = clock.now() - invoice_delivery.SEND_LEASE - timedelta(seconds=1)
    await InvoiceDelivery.filter(id=delivery.id).update(updated_at=claimed_at)

    # when its message runs again
    await invoice_delivery.deliver(delivery.id)

    # then it is sent, and both attempts are counted
    assert [e.rcpt_tos for e in smtp.envelopes] == [[PRIMARY]]
    row = await InvoiceDelivery.get(id=delivery.id)
    assert (row.status, row.attempts) == (DeliveryStatus.SENT, 2)


async def test_a_delivery_of_an_invoice_voided_meanwhile_is_not_sent(
    db: Backend, frozen_clock: None, smtp: Mailbox, owner: Account, client: Client
) -> None:
    # given a delivery requested before the invoice was voided
    invoice = await issue_invoice(db, owner, client)
    delivery = await request_delivery(invoice)
    async with transaction():
        await invoice_service.void_invoice(owner.actor, invoice.id, "Issued to the wrong entity")

    # when the worker gets to it
    await invoice_delivery.deliver(delivery.id)

    # then the client gets nothing, and the delivery says why
    assert smtp.envelopes == []
    row = await InvoiceDelivery.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_error) == (
        DeliveryStatus.FAILED,
        0,
        "Not sent: the invoice was voided",
    )
    assert (await Invoice.get(id=invoice.id)).last_sent_at is None


async def test_a_recipient_refused_among_accepted_ones_is_noted_on_a_sent_delivery(
    db: Backend, frozen_clock: None, owner: Account, client: Client
) -> None:
    # given a server that refuses one of two recipients
    invoice = await issue_invoice(db, owner, client)
    delivery = await InvoiceDelivery.create(
        agency_id=invoice.agency_id,
        invoice_id=invoice.id,
        recipients=[PRIMARY, "gone@globex.test"],
    )
    with running_smtp(PickyMailbox(refused="gone@globex.test")) as mailbox:
        # when
        await invoice_delivery.deliver(delivery.id)

        # then the message went to the other one, once, and is not retried
        assert [e.rcpt_tos for e in mailbox.envelopes] == [[PRIMARY]]
    row = await InvoiceDelivery.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_error) == (
        DeliveryStatus.SENT,
        1,
        "Refused by the mail server: gone@globex.test: 550 5.1.1 No such user",
    )
    assert (await Invoice.get(id=invoice.id)).last_sent_at == row.sent_at


async def test_a_temporary_failure_on_the_last_attempt_is_final(
    db: Backend, frozen_clock: None, owner: Account, client: Client
) -> None:
    # given a delivery whose attempts but one failed, and a busy server
    invoice = await issue_invoice(db, owner, client)
    delivery = await request_delivery(
        invoice, attempts=invoice_delivery.MAX_ATTEMPTS - 1, status=DeliveryStatus.FAILED
    )
    with running_smtp(Mailbox(data_reply="451 4.3.0 Try again later")) as mailbox:
        # when the last attempt fails too, it returns instead of asking for a retry
        await invoice_delivery.deliver(delivery.id)

        # then
        assert mailbox.envelopes == []
    row = await InvoiceDelivery.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_error) == (
        DeliveryStatus.FAILED,
        invoice_delivery.MAX_ATTEMPTS,
        "SMTP server replied 451 4.3.0 Try again later",
    )
    assert (await Invoice.get(id=invoice.id)).last_sent_at is None
    event = await ActivityEvent.get(entity_id=invoice.id, verb="email_failed")
    assert event.summary == (
        f"Invoice INV-2026-0001 could not be emailed to {PRIMARY}: "
        "SMTP server replied 451 4.3.0 Try again later"
    )


async def test_a_pdf_that_cannot_be_read_fails_the_attempt_for_a_retry(
    db: Backend, frozen_clock: None, smtp: Mailbox, owner: Account, client: Client
) -> None:
    # given storage that has lost the rendered PDF
    invoice = await issue_invoice(db, owner, client)
    rendered = await Invoice.get(id=invoice.id)
    assert rendered.pdf_key is not None
    await get_storage().delete(rendered.pdf_key)
    delivery = await request_delivery(invoice)

    # when
    with pytest.raises(ObjectNotFoundError):
        await invoice_delivery.deliver(delivery.id)

    # then nothing was sent, and the delivery says why without storage details
    assert smtp.envelopes == []
    row = await InvoiceDelivery.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_error) == (
        DeliveryStatus.FAILED,
        1,
        "The invoice PDF could not be prepared for the email",
    )
    assert (await Invoice.get(id=invoice.id)).last_sent_at is None


async def test_a_paid_invoice_emailed_again_says_it_is_paid(
    db: Backend, frozen_clock: None, smtp: Mailbox, owner: Account, client: Client
) -> None:
    # given an invoice paid in full
    invoice = await issue_invoice(db, owner, client)
    async with transaction():
        await settlement.receive_on_invoice(invoice.id, invoice.total_minor, actor=None)
    delivery = await request_delivery(invoice)

    # when
    await invoice_delivery.deliver(delivery.id)

    # then
    [message] = smtp.messages()
    assert message["Subject"] == "Invoice INV-2026-0001 from Northwind Studio — paid in full"
    assert "Total: ₹1,18,000.00\nPaid so far: ₹1,18,000.00\nAmount due: ₹0.00\n" in text_of(message)


@pytest.mark.parametrize(
    ("agency_name", "paid", "subject"),
    [
        (
            "Northwind Design and Motion Studio",
            False,
            "Invoice INV-2026-0001 from Northwind Design and Motion Studio"
            " — ₹1,18,000.00 due 22 Dec 2026",
        ),
        (
            "Northwind Design and Motion Studio LLP",
            True,
            "Invoice INV-2026-0001 from Northwind Design and Motion Studio LLP — paid in full",
        ),
        (
            "Northwind Creative Design and Motion Studio of Bengaluru",
            False,
            "Invoice INV-2026-0001 from Northwind Creative Design and Motion Studio of"
            " Bengaluru — ₹1,18,000.00 due 22 Dec 2026",
        ),
    ],
)
async def test_a_long_subject_arrives_as_written(
    db: Backend,
    frozen_clock: None,
    smtp: Mailbox,
    owner: Account,
    client: Client,
    agency_name: str,
    paid: bool,
    subject: str,
) -> None:
    # given an agency whose name makes the subject longer than one header line
    await Agency.filter(id=owner.agency_id).update(name=agency_name)
    invoice = await issue_invoice(db, owner, client)
    if paid:
        async with transaction():
            await settlement.receive_on_invoice(invoice.id, invoice.total_minor, actor=None)
    delivery = await request_delivery(invoice)

    # when it is emailed
    await invoice_delivery.deliver(delivery.id)

    # then the subject reads back exactly (one space each side of the dash), folded within
    # 78 characters a line and never right after "Subject:"
    [envelope] = smtp.envelopes
    assert isinstance(envelope.original_content, bytes)
    assert_subject_sent_as_written(envelope.original_content, subject)
    assert len(header_lines(envelope.original_content, "Subject")) > 1


async def test_without_an_agency_address_replies_go_to_the_sender(
    db: Backend, frozen_clock: None, smtp: Mailbox, owner: Account
) -> None:
    # given an agency without an email address of its own
    globex = await create_client(owner, name="Globex", currency="INR")
    invoice = await issue_invoice(db, owner, globex)
    delivery = await request_delivery(invoice)

    # when
    await invoice_delivery.deliver(delivery.id)

    # then
    [message] = smtp.messages()
    assert message["Reply-To"] is None
    assert "Questions about this invoice" not in text_of(message)
    assert text_of(message).endswith("(INV-2026-0001.pdf).\n\nNorthwind Studio\n")


def test_due_dates_read_the_same_on_every_machine() -> None:
    # given / when / then
    assert format_email_date(date(2026, 12, 22)) == "22 Dec 2026"
    assert format_email_date(date(2027, 1, 5)) == "5 Jan 2027"
