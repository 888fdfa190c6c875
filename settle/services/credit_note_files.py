"""Credit note documents: the PDF rendered once a credit note is issued, and its signed URL.

- ``render_pdf`` (the worker, after issue) renders the credit note with the
  invoice renderer, titled CREDIT NOTE, and stores it once under a fixed key
  (``document_files.store_rendered``): repeated or racing runs leave one file
  and one timeline event.
- ``pdf_url`` signs a short-lived download URL; ``GET /files/credit-notes/<token>``
  (``settle.files``) checks the credit note is still visible to the user and
  streams the PDF.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from decimal import Decimal

from settle.core.errors import NotFoundError
from settle.core.money import Money
from settle.core.signing import SignedUrl
from settle.core.tenancy import Actor
from settle.documents.invoice import DocumentLine, InvoiceDocument, TotalRow, render_invoice_pdf
from settle.models.invoice import CreditNote, Invoice
from settle.services import credit_note as credit_note_service
from settle.services import document_files, settlement

DOWNLOAD_PURPOSE = "credit_note.download"
FILE_KIND = "credit-notes"


def label(note: CreditNote) -> str:
    """How the timeline names a credit note."""
    return f"Credit note {note.number}"


async def credit_note_document(note: CreditNote) -> InvoiceDocument:
    """Everything printed on the credit note: parties, what it credits and why, the amount.

    No amount due and no payment link: a credit note asks for nothing.
    """
    invoice = await Invoice.get(id=note.invoice_id)
    agency, client = await document_files.parties(note.agency_id, note.client_id)
    amount = Money(note.amount_minor, note.currency)
    nothing = Money(0, note.currency)
    return InvoiceDocument(
        agency=agency,
        client=client,
        number=note.number,
        issue_date=note.issue_date,
        due_date=None,
        currency=note.currency,
        lines=(
            DocumentLine(
                description=f"Credit against {settlement.label(invoice)}\nReason: {note.reason}",
                quantity=Decimal(1),
                unit_price=amount,
                amount=amount,
                tax_rate=None,
            ),
        ),
        subtotal=amount,
        discount=nothing,
        discount_label=None,
        taxes=(),
        tax=nothing,
        total=amount,
        amount_paid=nothing,
        amount_due=nothing,
        title="Credit note",
        party_heading="CREDIT TO",
        total_rows=(TotalRow("Total credit", amount, emphasised=True),),
    )


def pdf_storage_key(note: CreditNote) -> str:
    return f"credit-notes/{note.agency_id}/{note.id}/credit-note.pdf"


def document_filename(note: CreditNote) -> str:
    return document_files.pdf_filename(note.number)


async def render(note: CreditNote) -> bytes:
    """The credit note as PDF bytes (laid out off the event loop)."""
    return await asyncio.to_thread(render_invoice_pdf, await credit_note_document(note))


async def render_pdf(credit_note_id: uuid.UUID) -> None:
    """Render and store a credit note's PDF once, then set ``pdf_key`` (the worker's job).

    Idempotent, also when two runs race: a credit note never changes, so
    whichever run stored its PDF first is kept.
    """
    note = await CreditNote.get_or_none(id=credit_note_id)
    if note is None or note.pdf_key is not None:
        return
    await document_files.store_rendered(
        note,
        pdf_storage_key(note),
        await render(note),
        entity_type="credit_note",
        summary=f"{label(note)} PDF rendered",
    )


async def pdf_url(actor: Actor, credit_note_id: uuid.UUID) -> SignedUrl | None:
    """A signed, expiring URL of the credit note's PDF; None until the worker rendered it."""
    return signed_pdf_url(actor, await credit_note_service.get_credit_note(actor, credit_note_id))


def signed_pdf_url(actor: Actor, note: CreditNote) -> SignedUrl | None:
    """``pdf_url`` of a credit note already read (as the actor may see it), without a query."""
    if note.pdf_key is None:
        return None
    return document_files.sign_for(DOWNLOAD_PURPOSE, FILE_KIND, note.id, actor)


@dataclass(frozen=True, slots=True)
class Download:
    """A verified download URL: the credit note, its PDF's key and file name."""

    credit_note: CreditNote
    key: str
    filename: str


async def open_download(token: str) -> Download:
    """Check a download URL, and visibility again: a foreign or hidden credit note is not found.

    SignedTokenError for a forged or expired URL (or a deactivated user);
    NotFoundError if the user may not see the credit note or it has no PDF yet.
    """
    credit_note_id, actor = await document_files.open_token(DOWNLOAD_PURPOSE, token)
    note = await credit_note_service.get_credit_note(actor, credit_note_id)
    if note.pdf_key is None:
        raise NotFoundError("Credit note PDF", credit_note_id)
    return Download(note, note.pdf_key, document_filename(note))
