"""Credit note documents: what is printed, rendering once, and the signed URL.

The route that serves the URL is tested through the ASGI app in
``tests/test_credit_note_files.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from settle.core import clock
from settle.core.errors import NotFoundError
from settle.core.money import Money
from settle.core.outbox import relay_later, transaction
from settle.documents.invoice import DocumentLine, InvoiceDocument, Party, TotalRow
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import CreditNote
from settle.services import credit_note as credit_note_service
from settle.services import credit_note_files
from settle.services import invoice as invoice_service
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_invoice, create_user
from tests.fixtures.files import acme, pdf_text, stored_files

pytestmark = pytest.mark.usefixtures("files_dir")

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.set_clock(lambda: NOW)
    yield
    clock.set_clock(None)


async def credited(owner: Account, client: Client, reason: str = "Delivered late") -> CreditNote:
    """A credit note of $250.00 on INV-2026-0001 ($1,000.00), before any worker rendered it."""
    invoice = await create_invoice(
        owner, client, lines=({"description": "Design", "quantity": "1", "unit_price": "1000"},)
    )
    # The jobs wait in the outbox: each test runs the render itself.
    with relay_later():
        async with transaction():
            await invoice_service.finalize_invoice(owner.actor, invoice.id)
        async with transaction():
            return await credit_note_service.issue_credit_note(
                owner.actor, invoice.id, "250.00", reason
            )


def usd(minor: int) -> Money:
    return Money(minor, "USD")


# --- the document ---------------------------------------------------------------------


async def test_the_document_prints_the_parties_the_credit_and_no_amount_due(
    owner: Account,
) -> None:
    # given a credit note of $250.00 against an invoice of Acme Ltd
    note = await credited(owner, await acme(owner))

    # when its document is built
    document = await credit_note_files.credit_note_document(note)

    # then it is the invoice layout titled CREDIT NOTE, crediting the client, asking for nothing
    assert document == InvoiceDocument(
        agency=Party(
            "Northwind Studio",
            ("4 Mill Lane", "Leeds LS1 2AB", "billing@northwind.test", "Tax ID: GB999"),
        ),
        client=Party(
            "Acme Ltd", ("12 Harbour Road", "Bristol BS1 4QA", "Tax ID: GB123", "ap@acme.test")
        ),
        number="CN-2026-0001",
        issue_date=date(2026, 5, 4),
        due_date=None,
        currency="USD",
        lines=(
            DocumentLine(
                "Credit against Invoice INV-2026-0001\nReason: Delivered late",
                Decimal(1),
                usd(250_00),
                usd(250_00),
                None,
            ),
        ),
        subtotal=usd(250_00),
        discount=usd(0),
        discount_label=None,
        taxes=(),
        tax=usd(0),
        total=usd(250_00),
        amount_paid=usd(0),
        amount_due=usd(0),
        payment_url=None,
        title="Credit note",
        party_heading="CREDIT TO",
        total_rows=(TotalRow("Total credit", usd(250_00), emphasised=True),),
    )


# --- rendering once ---------------------------------------------------------------------


async def test_render_pdf_stores_the_credit_note_once(owner: Account, files_dir: Path) -> None:
    # given an issued credit note whose PDF was never rendered
    client = await acme(owner)
    note = await credited(owner, client)

    # when its PDF is rendered
    await credit_note_files.render_pdf(note.id)

    # then the PDF is stored under the credit note's key and the row points at it
    row = await CreditNote.get(id=note.id)
    key = f"credit-notes/{owner.agency_id}/{note.id}/credit-note.pdf"
    assert (row.pdf_key, row.pdf_rendered_at) == (key, NOW)
    files = stored_files(files_dir)
    assert list(files) == [key]
    # and it reads back with its number, the invoice it credits, the reason and the amount
    lines = pdf_text(files[key]).splitlines()
    for expected in (
        "Northwind Studio",
        "CREDIT NOTE",
        "Number CN-2026-0001",
        "Issue date 4 May 2026",
        "CREDIT TO",
        "Acme Ltd",
        "Credit against Invoice INV-2026-0001",
        "Reason: Delivered late",
        "1 $250.00 $250.00",
        "Total credit $250.00",
    ):
        assert expected in lines, expected
    text = "\n".join(lines)
    for absent in ("Amount due", "Pay online", "BILL TO", "DRAFT"):
        assert absent not in text, absent
    # and the timeline says so once, without an actor
    events = await ActivityEvent.filter(entity_id=note.id, verb="pdf_rendered")
    assert [(e.actor_id, e.client_id, e.entity_type, e.summary) for e in events] == [
        (None, client.id, "credit_note", "Credit note CN-2026-0001 PDF rendered")
    ]


async def test_rendering_again_or_at_once_keeps_one_file_and_one_event(
    owner: Account, files_dir: Path
) -> None:
    # given a credit note whose PDF was never rendered
    note = await credited(owner, await acme(owner))

    # when four renders race from the start, then two more run in turn
    await asyncio.gather(*(credit_note_files.render_pdf(note.id) for _ in range(4)))
    first = stored_files(files_dir)
    rendered = await CreditNote.get(id=note.id)
    await credit_note_files.render_pdf(note.id)
    await credit_note_files.render_pdf(note.id)

    # then one file is stored and kept, and the row and the timeline name it once
    assert list(first) == [rendered.pdf_key]
    assert stored_files(files_dir) == first
    again = await CreditNote.get(id=note.id)
    assert (again.pdf_key, again.pdf_rendered_at) == (rendered.pdf_key, rendered.pdf_rendered_at)
    assert await ActivityEvent.filter(entity_id=note.id, verb="pdf_rendered").count() == 1


async def test_render_pdf_leaves_an_unknown_credit_note_alone(
    owner: Account, files_dir: Path
) -> None:
    # given no credit note of that id
    before = await row_counts(CreditNote)
    # when the job runs for it, then nothing is stored or written
    await credit_note_files.render_pdf(owner.agency_id)
    assert stored_files(files_dir) == {}
    assert await row_counts(CreditNote) == before


# --- the signed URL ---------------------------------------------------------------------


async def test_pdf_url_exists_once_rendered_and_follows_visibility(
    owner: Account, rival: Account
) -> None:
    # given a credit note, the client's viewer, a member, and another client's lead
    client = await acme(owner)
    note = await credited(owner, client)
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    member = await create_user(owner, role=Role.MEMBER)
    other = await create_user(
        owner, role=Role.CLIENT_LEAD, client=await create_client(owner, name="Other")
    )
    # when it is not rendered yet, then there is no URL
    assert await credit_note_files.pdf_url(owner.actor, note.id) is None

    # when the worker has rendered it
    await credit_note_files.render_pdf(note.id)

    # then the agency and the client's own users get a URL of the configured lifetime
    for account in (owner, member, viewer):
        signed = await credit_note_files.pdf_url(account.actor, note.id)
        assert signed is not None
        assert signed.url.startswith("http://settle.test/files/credit-notes/")
        assert signed.expires_at == NOW + timedelta(minutes=15)
    # and another client's user and another agency find no such credit note
    for account in (other, rival):
        with pytest.raises(NotFoundError):
            await credit_note_files.pdf_url(account.actor, note.id)
