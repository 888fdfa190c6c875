"""Invoice documents: what is printed, rendering once, signed URLs and declared uploads.

The routes that use these URLs are tested through the ASGI app in
``tests/test_invoice_files.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from settle.core import clock
from settle.core.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from settle.core.money import Money
from settle.core.outbox import transaction
from settle.core.settings import configure_settings, get_settings
from settle.core.signing import SignedUrl
from settle.core.storage import get_storage
from settle.documents.invoice import DocumentLine, InvoiceDocument, Party, TaxLine
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import DiscountKind, Invoice, InvoiceStatus
from settle.services import invoice as invoice_service
from settle.services import invoice_files, payment_link, settlement
from settle.services.invoice import DiscountInput
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.files import acme, pdf_text, stored_files

pytestmark = pytest.mark.usefixtures("files_dir")

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime


@pytest.fixture(autouse=True)
def frozen() -> Iterator[Clock]:
    current = Clock(NOW)
    clock.set_clock(lambda: current.now)
    yield current
    clock.set_clock(None)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def draft(owner: Account, client: Client, **values: Any) -> Invoice:
    """A draft: 2 x $1,500 of design at 18%, $100 of hosting untaxed, 10% off."""
    async with transaction():
        return await invoice_service.create_invoice(
            owner.actor,
            client.id,
            None,
            {
                "tax_rate": "18",
                "discount": DiscountInput(DiscountKind.PERCENT, "10"),
                "notes": "Thank you for your business.",
                "terms": "Payable within 30 days.",
                **values,
            },
            [
                {"description": "Design", "quantity": "2", "unit_price": "1500.00"},
                {"description": "Hosting", "quantity": "1", "unit_price": "100", "tax_rate": "0"},
            ],
        )


async def issued(db: Backend, owner: Account, client: Client) -> Invoice:
    """A finalized invoice, once the worker has run the jobs finalizing sent (its PDF)."""
    invoice = await draft(owner, client)
    async with transaction():
        await invoice_service.finalize_invoice(owner.actor, invoice.id)
    await db.drain()
    return await Invoice.get(id=invoice.id)


async def awaiting_pdf(owner: Account, client: Client) -> Invoice:
    """An issued invoice as finalization leaves it before any worker rendered its PDF.

    Written straight to the row, so no render job is sent that could race the test.
    """
    invoice = await draft(owner, client)
    await Invoice.filter(id=invoice.id).update(
        status=InvoiceStatus.SENT,
        number="INV-2026-0001",
        issue_date=date(2026, 5, 4),
        due_date=date(2026, 6, 3),
        issued_at=NOW,
    )
    return await Invoice.get(id=invoice.id)


def usd(minor: int) -> Money:
    return Money(minor, "USD")


# --- the document ---------------------------------------------------------------------


async def test_the_document_prints_the_parties_lines_and_server_totals(
    db: Backend, owner: Account
) -> None:
    # given an issued invoice with a percent discount, two tax rates and a payment
    client = await acme(owner)
    invoice = await issued(db, owner, client)
    async with transaction():
        invoice = await settlement.receive_on_invoice(invoice.id, 1_000_00, actor=None)

    # when its document is built
    document = await invoice_files.invoice_document(invoice, draft=False)

    # then it holds exactly what the invoice says, totals by the server's rule
    assert document == InvoiceDocument(
        agency=Party(
            "Northwind Studio",
            ("4 Mill Lane", "Leeds LS1 2AB", "billing@northwind.test", "Tax ID: GB999"),
        ),
        client=Party(
            "Acme Ltd", ("12 Harbour Road", "Bristol BS1 4QA", "Tax ID: GB123", "ap@acme.test")
        ),
        number="INV-2026-0001",
        issue_date=date(2026, 5, 4),
        due_date=date(2026, 6, 3),
        currency="USD",
        lines=(
            DocumentLine("Design", Decimal("2.00"), usd(1500_00), usd(3000_00), None),
            DocumentLine("Hosting", Decimal("1.00"), usd(100_00), usd(100_00), Decimal("0.000")),
        ),
        subtotal=usd(3100_00),
        discount=usd(310_00),
        discount_label="Discount (10%)",
        taxes=(TaxLine(Decimal("18"), usd(486_00)),),
        tax=usd(486_00),
        total=usd(3276_00),
        amount_paid=usd(1000_00),
        amount_due=usd(2276_00),
        notes="Thank you for your business.",
        terms="Payable within 30 days.",
        payment_url=payment_link.payment_url(invoice),
        draft=False,
    )
    # and the payment link opens this invoice's balance
    assert document.payment_url is not None
    token = document.payment_url.removeprefix("http://settle.test/pay/invoices/")
    assert payment_link.invoice_of(token) == invoice.id


async def test_an_amount_discount_is_labelled_plainly_and_no_discount_not_at_all(
    owner: Account,
) -> None:
    # given a draft with an amount discount and one without any
    client = await create_client(owner, name="Plain", currency="INR")
    with_amount = await draft(
        owner, client, discount=DiscountInput(DiscountKind.AMOUNT, "12.50"), notes=None
    )
    without = await draft(owner, client, discount=None, terms=None)
    # when their documents are built
    first = await invoice_files.invoice_document(with_amount, draft=True)
    second = await invoice_files.invoice_document(without, draft=True)
    # then the labels say so, and a client without details prints its name alone
    assert (first.discount_label, first.discount, first.draft, first.number) == (
        "Discount",
        Money(12_50, "INR"),
        True,
        None,
    )
    assert (second.discount_label, second.discount, second.notes, second.terms) == (
        None,
        Money(0, "INR"),
        "Thank you for your business.",
        None,
    )
    assert first.client == Party("Plain", ())


# --- rendering once ---------------------------------------------------------------------


async def test_render_pdf_stores_the_issued_invoice_once(owner: Account, files_dir: Path) -> None:
    # given an issued invoice whose PDF was never rendered
    client = await acme(owner)
    invoice = await awaiting_pdf(owner, client)

    # when its PDF is rendered
    await invoice_files.render_pdf(invoice.id)

    # then the PDF is stored under the invoice's key and the row points at it
    row = await Invoice.get(id=invoice.id)
    key = f"invoices/{owner.agency_id}/{invoice.id}/invoice.pdf"
    assert (row.pdf_key, row.pdf_rendered_at) == (key, NOW)
    files = stored_files(files_dir)
    assert list(files) == [key]
    # and it reads back with the number, the lines and the totals
    text = pdf_text(files[key])
    for expected in (
        "INV-2026-0001",
        "Northwind Studio",
        "Acme Ltd",
        "Design",
        "Hosting",
        "$1,500.00",
        "$3,000.00",
        "Subtotal",
        "$3,100.00",
        "Discount (10%)",
        "-$310.00",
        "Tax 18%",
        "$486.00",
        "$3,276.00",
        "Thank you for your business.",
    ):
        assert expected in text, expected
    assert "DRAFT" not in text
    # and the timeline says so, without an actor
    events = await ActivityEvent.filter(entity_id=invoice.id, verb="pdf_rendered")
    assert [(e.actor_id, e.client_id, e.entity_type, e.summary) for e in events] == [
        (None, client.id, "invoice", "Invoice INV-2026-0001 PDF rendered")
    ]


async def test_finalizing_renders_once_however_often_the_job_runs_again(
    db: Backend, owner: Account, files_dir: Path
) -> None:
    # given a finalized invoice whose PDF the worker has rendered
    client = await acme(owner)
    invoice = await issued(db, owner, client)
    first = stored_files(files_dir)
    assert list(first) == [invoice.pdf_key]

    # when the job runs again, twice in turn and then three times at once
    await invoice_files.render_pdf(invoice.id)
    await invoice_files.render_pdf(invoice.id)
    await asyncio.gather(*(invoice_files.render_pdf(invoice.id) for _ in range(3)))

    # then the one stored file is unchanged, and one event was written
    assert stored_files(files_dir) == first
    assert (await Invoice.get(id=invoice.id)).pdf_rendered_at == invoice.pdf_rendered_at
    assert await ActivityEvent.filter(entity_id=invoice.id, verb="pdf_rendered").count() == 1


async def test_racing_first_renders_store_one_file_and_one_event(
    owner: Account, files_dir: Path
) -> None:
    # given an issued invoice whose PDF was never rendered
    client = await acme(owner)
    invoice = await awaiting_pdf(owner, client)
    # when four renders race from the start
    await asyncio.gather(*(invoice_files.render_pdf(invoice.id) for _ in range(4)))
    # then one file is stored, and the row and the timeline name it once
    row = await Invoice.get(id=invoice.id)
    assert list(stored_files(files_dir)) == [row.pdf_key]
    assert await ActivityEvent.filter(entity_id=invoice.id, verb="pdf_rendered").count() == 1


async def test_render_pdf_keeps_a_file_a_crashed_run_stored(
    owner: Account, files_dir: Path
) -> None:
    # given an issued invoice whose PDF a run stored before dying uncommitted
    client = await acme(owner)
    invoice = await awaiting_pdf(owner, client)
    key = f"invoices/{owner.agency_id}/{invoice.id}/invoice.pdf"
    earlier = b"%PDF-1.7 stored by the run that died %%EOF"
    await get_storage().put(key, _chunks(earlier))

    # when the job runs again
    await invoice_files.render_pdf(invoice.id)

    # then the stored file is kept as it was, and the row and the timeline catch up
    assert stored_files(files_dir) == {key: earlier}
    assert (await Invoice.get(id=invoice.id)).pdf_key == key
    assert await ActivityEvent.filter(entity_id=invoice.id, verb="pdf_rendered").count() == 1


async def test_render_pdf_leaves_drafts_and_unknown_invoices_alone(
    owner: Account, files_dir: Path
) -> None:
    # given a draft
    client = await acme(owner)
    invoice = await draft(owner, client)
    before = await row_counts(Invoice)
    # when the job runs for it, and for an invoice that does not exist
    await invoice_files.render_pdf(invoice.id)
    await invoice_files.render_pdf(client.id)
    # then nothing is stored or written
    assert stored_files(files_dir) == {}
    assert await row_counts(Invoice) == before
    assert (await Invoice.get(id=invoice.id)).pdf_key is None


# --- the email attachment ---------------------------------------------------------------


async def test_document_renders_a_missing_pdf_and_prefers_an_upload(
    owner: Account, files_dir: Path
) -> None:
    # given an issued invoice whose PDF no worker has rendered yet
    client = await acme(owner)
    invoice = await awaiting_pdf(owner, client)

    # when the email worker asks for its document
    filename, data = await invoice_files.document(invoice)

    # then the PDF is rendered and stored now, and attached as <number>.pdf
    row = await Invoice.get(id=invoice.id)
    assert (filename, row.pdf_key) == ("INV-2026-0001.pdf", invoice_files.pdf_storage_key(row))
    assert stored_files(files_dir) == {row.pdf_key: data}
    assert "INV-2026-0001" in pdf_text(data)

    # when a PDF issued elsewhere is attached to it
    await get_storage().put("invoices/elsewhere.pdf", _chunks(b"%PDF-1.4 elsewhere %%EOF"))
    await Invoice.filter(id=invoice.id).update(uploaded_pdf_key="invoices/elsewhere.pdf")
    # then that is the document sent
    assert await invoice_files.document(await Invoice.get(id=invoice.id)) == (
        "INV-2026-0001.pdf",
        b"%PDF-1.4 elsewhere %%EOF",
    )


async def test_a_draft_has_no_document_to_email(owner: Account) -> None:
    # given a draft
    invoice = await draft(owner, await acme(owner))
    # when its document is asked for, then there is none
    with pytest.raises(ConflictError):
        await invoice_files.document(invoice)


# --- signed URLs --------------------------------------------------------------------------


async def test_pdf_url_exists_once_there_is_a_document(db: Backend, owner: Account) -> None:
    # given a draft, then the same invoice issued but not yet rendered (inside its transaction)
    client = await acme(owner)
    invoice = await draft(owner, client)
    assert await invoice_files.pdf_url(owner.actor, invoice.id) is None
    async with transaction():
        await invoice_service.finalize_invoice(owner.actor, invoice.id)
        assert await invoice_files.pdf_url(owner.actor, invoice.id) is None
    # when the worker has rendered its PDF
    await db.drain()
    # then it has a download URL of the configured lifetime
    signed = await invoice_files.pdf_url(owner.actor, invoice.id)
    assert isinstance(signed, SignedUrl)
    assert signed.url.startswith("http://settle.test/files/invoices/")
    assert signed.expires_at == NOW + timedelta(minutes=15)


async def test_pdf_url_follows_the_visibility_of_invoices(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given a client's draft and issued invoice, its user, and another client's user
    client = await acme(owner)
    other = await create_client(owner, name="Other", currency="USD")
    waiting = await draft(owner, client)
    invoice = await issued(db, owner, client)
    own_user = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    other_user = await create_user(owner, role=Role.CLIENT_LEAD, client=other)
    member = await create_user(owner, role=Role.MEMBER)
    # when each asks for URLs
    # then the agency and the client's own user get one; nobody sees the draft or another's
    assert await invoice_files.pdf_url(member.actor, invoice.id) is not None
    assert await invoice_files.pdf_url(own_user.actor, invoice.id) is not None
    for account, invoice_id in (
        (own_user, waiting.id),
        (other_user, invoice.id),
        (rival, invoice.id),
    ):
        with pytest.raises(NotFoundError):
            await invoice_files.pdf_url(account.actor, invoice_id)


async def test_preview_url_is_for_managers_and_drafts(db: Backend, owner: Account) -> None:
    # given a draft and an issued invoice
    client = await acme(owner)
    waiting = await draft(owner, client)
    invoice = await issued(db, owner, client)
    member = await create_user(owner, role=Role.MEMBER)
    viewer = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    # when the owner asks for the draft's preview, it is signed
    signed = await invoice_files.preview_url(owner.actor, waiting.id)
    assert signed.url.startswith("http://settle.test/files/invoice-previews/")
    assert signed.expires_at == NOW + timedelta(minutes=15)
    # then an issued invoice has none, a member may not, and a client user sees no draft
    with pytest.raises(ConflictError):
        await invoice_files.preview_url(owner.actor, invoice.id)
    with pytest.raises(PermissionDeniedError):
        await invoice_files.preview_url(member.actor, waiting.id)
    with pytest.raises(NotFoundError):
        await invoice_files.preview_url(viewer.actor, waiting.id)


async def test_url_lifetime_follows_settings(owner: Account) -> None:
    # given invoice URLs configured to last a minute
    configure_settings(get_settings().model_copy(update={"invoice_url_ttl_seconds": 60}))
    invoice = await draft(owner, await acme(owner))
    # when a preview and an upload URL are made
    preview = await invoice_files.preview_url(owner.actor, invoice.id)
    upload = await invoice_files.create_upload(
        owner.actor, invoice.id, filename="a.pdf", size_bytes=10
    )
    # then each expires a minute from now
    assert preview.expires_at == upload.upload.expires_at == NOW + timedelta(minutes=1)


# --- declaring an upload --------------------------------------------------------------------


async def test_create_upload_signs_a_url_and_writes_nothing(owner: Account) -> None:
    # given a draft
    invoice = await draft(owner, await acme(owner))
    before = await row_counts(Invoice)
    # when the owner declares a PDF of the largest size allowed
    created = await invoice_files.create_upload(
        owner.actor, invoice.id, filename="Acme 2026-05.pdf", size_bytes=10 * 1024 * 1024
    )
    # then it gets an upload URL, and nothing is written until the file arrives
    assert created.invoice.id == invoice.id
    assert created.upload.url.startswith("http://settle.test/files/invoice-uploads/")
    assert created.upload.expires_at == NOW + timedelta(minutes=15)
    assert await row_counts(Invoice) == before


BAD_UPLOADS: dict[str, tuple[str, Any, str, str]] = {
    "too large": ("a.pdf", 10 * 1024 * 1024 + 1, "sizeBytes", "TOO_LARGE"),
    "empty": ("a.pdf", 0, "sizeBytes", "OUT_OF_RANGE"),
    "not a number": ("a.pdf", "12", "sizeBytes", "OUT_OF_RANGE"),
    "a path": ("../a.pdf", 12, "filename", "INVALID_FILENAME"),
    "no name": ("  ", 12, "filename", "REQUIRED"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS), ids=list(BAD_UPLOADS))
async def test_create_upload_refuses_a_bad_declaration(owner: Account, case: str) -> None:
    # given a draft
    invoice = await draft(owner, await acme(owner))
    filename, size, field, code = BAD_UPLOADS[case]
    # when an upload is declared with a bad name or size
    with pytest.raises(ValidationError) as raised:
        await invoice_files.create_upload(
            owner.actor, invoice.id, filename=filename, size_bytes=size
        )
    # then it is refused with the field and the reason
    assert (raised.value.field, raised.value.code) == (field, code)


async def test_create_upload_is_for_managers_of_a_live_invoice(db: Backend, owner: Account) -> None:
    # given an issued invoice that is then voided, a draft, a member and a client user
    client = await acme(owner)
    waiting = await draft(owner, client)
    invoice = await issued(db, owner, client)
    async with transaction():
        await invoice_service.void_invoice(owner.actor, invoice.id, "Issued twice")
    member = await create_user(owner, role=Role.MEMBER)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    # when each tries to declare an upload
    # then a void invoice takes none, a member may not, and a client user sees no draft
    with pytest.raises(ConflictError):
        await invoice_files.create_upload(owner.actor, invoice.id, filename="a.pdf", size_bytes=9)
    with pytest.raises(PermissionDeniedError):
        await invoice_files.create_upload(member.actor, waiting.id, filename="a.pdf", size_bytes=9)
    with pytest.raises(NotFoundError):
        await invoice_files.create_upload(lead.actor, waiting.id, filename="a.pdf", size_bytes=9)
    assert (await Invoice.get(id=invoice.id)).status == InvoiceStatus.VOID
