"""Invoice documents: the rendered PDF, the draft preview, and PDFs uploaded by hand.

An invoice's document is the PDF uploaded for it when there is one (agencies
that issue invoices elsewhere), else the PDF Settle rendered when it was issued:

- ``render_pdf`` (the worker, after finalization) renders the issued invoice
  once and stores it under a fixed key; storage never replaces an object and
  the row is claimed by a conditional update, so repeated or racing runs leave
  one file and one timeline event.
- ``pdf_url`` signs a short-lived download URL; ``GET /files/invoices/<token>``
  (``settle.files``) checks the invoice is still visible to the user and
  streams the document.
- ``preview_url`` signs a URL that renders the current draft, marked DRAFT, on
  every request (``GET /files/invoice-previews/<token>``).
- ``create_upload`` signs a one-time upload URL; ``PUT /files/invoice-uploads/<token>``
  streams the body to a new key through ``open_upload`` / ``store_upload`` /
  ``complete_upload``: a PDF by its content, of exactly the declared size, or
  nothing is kept. The file it replaces is removed once the change has committed.
- ``document`` gives the email worker the bytes to attach.

Signed URLs carry the invoice and the user they were made for; the user must
still be active, and every use checks again what that user may see.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

from settle.core import clock
from settle.core.db import lock_rows
from settle.core.errors import ConflictError, NotFoundError, ValidationError
from settle.core.money import Money
from settle.core.settings import get_settings
from settle.core.signing import SignedTokenError, SignedUrl
from settle.core.storage import ObjectExistsError, StoredObject, get_storage
from settle.core.tenancy import MANAGERS, Actor
from settle.documents.invoice import DocumentLine, InvoiceDocument, TaxLine, render_invoice_pdf
from settle.models.invoice import DiscountKind, Invoice, InvoiceStatus
from settle.services import activity, document_files, payment_link, settlement
from settle.services import invoice as invoice_service
from settle.services import notification as notification_service

DOWNLOAD_PURPOSE = "invoice.download"
PREVIEW_PURPOSE = "invoice.preview"
UPLOAD_PURPOSE = "invoice.upload"

PDF_HEADER = b"%PDF-"
PDF_TRAILER = b"%%EOF"
# Where a PDF must end: readers look for the last %%EOF within the final kilobyte.
PDF_TRAILER_WINDOW = 1024


# --- the document --------------------------------------------------------------------


def _percent(value: Decimal) -> str:
    """A percentage without trailing zeros (``10.000`` prints ``10``)."""
    return format(value.normalize(), "f")


async def invoice_document(invoice: Invoice, *, draft: bool) -> InvoiceDocument:
    """Everything printed on the invoice: parties, lines and the server's totals."""
    lines = await invoice_service.invoice_lines(invoice)
    agency, client = await document_files.parties(invoice.agency_id, invoice.client_id)
    totals = invoice_service.totals_of(invoice, lines)
    currency = invoice.currency

    def money(minor_units: int) -> Money:
        return Money(minor_units, currency)

    discount_label = None
    if totals.discount_minor:
        discount_label = "Discount"
        if invoice.discount_kind == DiscountKind.PERCENT and invoice.discount_percent is not None:
            discount_label = f"Discount ({_percent(invoice.discount_percent)}%)"
    return InvoiceDocument(
        agency=agency,
        client=client,
        number=invoice.number,
        issue_date=invoice.issue_date,
        due_date=invoice.due_date,
        currency=currency,
        lines=tuple(
            DocumentLine(
                description=line.description,
                quantity=line.quantity,
                unit_price=money(line.unit_price_minor),
                amount=money(line_totals.amount_minor),
                tax_rate=line.tax_rate,
            )
            for line, line_totals in zip(lines, totals.lines, strict=True)
        ),
        subtotal=money(totals.subtotal_minor),
        discount=money(totals.discount_minor),
        discount_label=discount_label,
        taxes=tuple(TaxLine(rate=tax.rate, amount=money(tax.tax_minor)) for tax in totals.taxes),
        tax=money(totals.tax_minor),
        total=money(totals.total_minor),
        amount_paid=money(invoice.amount_paid_minor),
        amount_due=money(totals.total_minor if draft else settlement.invoice_due(invoice)),
        notes=invoice.notes,
        terms=invoice.terms,
        payment_url=None if draft else payment_link.payment_url(invoice),
        draft=draft,
    )


async def _render(invoice: Invoice, *, draft: bool) -> bytes:
    document = await invoice_document(invoice, draft=draft)
    # Laying out a long invoice is CPU work: off the event loop.
    return await asyncio.to_thread(render_invoice_pdf, document)


def pdf_storage_key(invoice: Invoice) -> str:
    return f"invoices/{invoice.agency_id}/{invoice.id}/invoice.pdf"


def upload_storage_key(invoice: Invoice, upload_id: uuid.UUID) -> str:
    return f"invoices/{invoice.agency_id}/{invoice.id}/uploads/{upload_id}.pdf"


def document_filename(invoice: Invoice) -> str:
    """``<number>.pdf`` (a ``/`` of the numbering pattern would read as a folder)."""
    if invoice.number:
        return document_files.pdf_filename(invoice.number)
    return "draft-invoice.pdf"


def _document_key(invoice: Invoice) -> str | None:
    """Where the invoice's document is: the uploaded PDF, else the rendered one."""
    return invoice.uploaded_pdf_key or invoice.pdf_key


async def render_pdf(invoice_id: uuid.UUID) -> None:
    """Render and store an issued invoice's PDF once, then set ``pdf_key`` (the worker's job).

    Idempotent, also when two runs race: an issued invoice's content never
    changes, so whichever run stored its PDF first is kept
    (``document_files.store_rendered``).
    """
    invoice = await Invoice.get_or_none(id=invoice_id)
    if invoice is None or invoice.status == InvoiceStatus.DRAFT or invoice.pdf_key is not None:
        return
    await document_files.store_rendered(
        invoice,
        pdf_storage_key(invoice),
        await _render(invoice, draft=False),
        entity_type="invoice",
        summary=f"{invoice_service.label(invoice)} PDF rendered",
    )


async def document(invoice: Invoice) -> tuple[str, bytes]:
    """(filename, bytes) of the invoice's document, for an email attachment.

    The uploaded PDF if there is one, else the rendered PDF, rendered and stored
    now if the worker has not done it yet. ConflictError for a draft without an
    uploaded PDF: a draft has no document to send.
    """
    key = _document_key(invoice)
    if key is None:
        await render_pdf(invoice.id)
        key = _document_key(await Invoice.get(id=invoice.id))
    if key is None:
        raise ConflictError("A draft invoice has no document yet")
    return document_filename(invoice), await document_files.read_bytes(key)


# --- signed URLs -------------------------------------------------------------------------


async def pdf_url(actor: Actor, invoice_id: uuid.UUID) -> SignedUrl | None:
    """A signed, expiring URL of the invoice's document; None while it has none.

    An issued invoice has one once its PDF is rendered or a PDF was uploaded; a
    draft only once a PDF was uploaded for it (its own rendering is the preview).
    """
    return signed_pdf_url(actor, await invoice_service.get_invoice(actor, invoice_id))


def signed_pdf_url(actor: Actor, invoice: Invoice) -> SignedUrl | None:
    """``pdf_url`` of an invoice already read (as the actor may see it), without a query."""
    if _document_key(invoice) is None:
        return None
    return document_files.sign_for(DOWNLOAD_PURPOSE, "invoices", invoice.id, actor)


async def preview_url(actor: Actor, invoice_id: uuid.UUID) -> SignedUrl:
    """A signed URL rendering the current draft, marked DRAFT (owners and admins).

    ConflictError once the invoice is issued: its document is at ``pdf_url``.
    """
    invoice = await _draft_for_preview(actor, invoice_id)
    return document_files.sign_for(PREVIEW_PURPOSE, "invoice-previews", invoice.id, actor)


async def _draft_for_preview(actor: Actor, invoice_id: uuid.UUID) -> Invoice:
    invoice = await invoice_service.get_invoice(actor, invoice_id)
    actor.require(*MANAGERS)
    if invoice.status != InvoiceStatus.DRAFT:
        raise ConflictError("Only a draft has a preview; an issued invoice has its PDF")
    return invoice


# --- downloading and previewing ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Download:
    """A verified download URL: the invoice, its document's key, and who is downloading."""

    invoice: Invoice
    actor: Actor
    key: str
    filename: str
    # Known for an uploaded PDF; a rendered one is streamed without a length.
    size_bytes: int | None


async def open_download(token: str) -> Download:
    """Check a download URL, and visibility again: a foreign or hidden invoice is not found.

    SignedTokenError for a forged or expired URL (or a deactivated user);
    NotFoundError if the user may not see the invoice or it has no document.
    """
    invoice_id, actor = await document_files.open_token(DOWNLOAD_PURPOSE, token)
    invoice = await invoice_service.get_invoice(actor, invoice_id)
    if invoice.uploaded_pdf_key is not None:
        return Download(
            invoice,
            actor,
            invoice.uploaded_pdf_key,
            document_filename(invoice),
            invoice.uploaded_pdf_size,
        )
    if invoice.pdf_key is not None:
        return Download(invoice, actor, invoice.pdf_key, document_filename(invoice), None)
    raise NotFoundError("Invoice PDF", invoice_id)


async def record_download(download: Download) -> None:
    """A client user downloading the invoice has opened it: mark it viewed the first time."""
    await invoice_service.record_client_view(download.actor, download.invoice.id)


async def open_preview(token: str) -> Invoice:
    """Check a preview URL: still a draft the user may see and manage.

    SignedTokenError for a forged or expired URL; NotFoundError for an invoice
    the user cannot see (deleted, foreign); PermissionDeniedError if the user is
    no longer an owner or admin; ConflictError once the invoice is issued.
    """
    invoice_id, actor = await document_files.open_token(PREVIEW_PURPOSE, token)
    return await _draft_for_preview(actor, invoice_id)


async def render_preview(invoice: Invoice) -> bytes:
    """The draft as it stands now, rendered with the DRAFT marks."""
    return await _render(invoice, draft=True)


# --- uploading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvoiceUpload:
    invoice: Invoice
    upload: SignedUrl


def clean_upload(filename: str, size_bytes: int) -> tuple[str, int]:
    """Validate a declared PDF upload: a file name and a size within the limit."""
    return document_files.clean_declared_file(
        filename, size_bytes, limit=get_settings().invoice_upload_max_bytes
    )


def _require_not_void(invoice: Invoice) -> None:
    if invoice.status == InvoiceStatus.VOID:
        raise ConflictError("A void invoice takes no document")


async def create_upload(
    actor: Actor, invoice_id: uuid.UUID, *, filename: str, size_bytes: int
) -> InvoiceUpload:
    """A signed URL to PUT a PDF issued elsewhere to (owners and admins; not on a void invoice).

    Nothing is written until the file arrives: the URL itself carries the
    declared name and size, and the new file's key, so it can be used once.
    """
    invoice = await invoice_service.get_invoice(actor, invoice_id)
    actor.require(*MANAGERS)
    name, size = clean_upload(filename, size_bytes)
    _require_not_void(invoice)
    claims = {
        "i": str(invoice.id),
        "u": str(actor.user_id),
        "k": str(uuid.uuid4()),
        "n": name,
        "s": str(size),
    }
    return InvoiceUpload(invoice, document_files.sign(UPLOAD_PURPOSE, "invoice-uploads", claims))


class UploadRejectedError(ValidationError):
    """The body is not the PDF that was declared."""


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """A verified upload URL: the invoice, who sends the file, its name, size and new key."""

    invoice: Invoice
    actor: Actor
    key: str
    filename: str
    size_bytes: int


def _size_mismatch(size: int) -> UploadRejectedError:
    return UploadRejectedError(
        "sizeBytes", f"The body must be exactly {size} bytes, as declared", code="SIZE_MISMATCH"
    )


def _too_large() -> UploadRejectedError:
    limit = get_settings().invoice_upload_max_bytes
    return UploadRejectedError(
        "sizeBytes", f"An invoice PDF is at most {limit} bytes", code="TOO_LARGE"
    )


def _not_a_pdf() -> UploadRejectedError:
    return UploadRejectedError("file", "The file is not a PDF", code="NOT_A_PDF")


async def open_upload(token: str, *, content_length: str | None) -> PendingUpload:
    """Check an upload before reading its body: the URL, the invoice, the declared size.

    SignedTokenError for a forged or expired URL; NotFoundError if the invoice
    is gone; PermissionDeniedError if the user no longer manages invoices;
    ConflictError for a void invoice; UploadRejectedError when the Content-Length
    is over the limit or not the declared size.
    """
    claims = document_files.signer(UPLOAD_PURPOSE).verify(token)
    invoice_id, actor = await document_files.token_actor(claims)
    try:
        upload_id = uuid.UUID(claims["k"])
        filename = claims["n"]
        size = int(claims["s"])
    except (KeyError, ValueError):
        raise SignedTokenError("Invalid signature") from None
    invoice = await invoice_service.get_invoice(actor, invoice_id)
    actor.require(*MANAGERS)
    _require_not_void(invoice)
    if content_length is not None:
        declared = content_length.strip()
        if declared.isdigit() and int(declared) > get_settings().invoice_upload_max_bytes:
            raise _too_large()
        if declared != str(size):
            raise _size_mismatch(size)
    return PendingUpload(invoice, actor, upload_storage_key(invoice, upload_id), filename, size)


async def _checked_pdf(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """The chunks, failing (so storage keeps nothing) as soon as they cannot be the PDF.

    A PDF by its content: it starts with ``%PDF-`` and has ``%%EOF`` in its last
    kilobyte. Never more than the limit is read, whatever the declaration said.
    """
    limit = get_settings().invoice_upload_max_bytes
    received = 0
    head = b""
    tail = b""
    async for chunk in chunks:
        if not chunk:
            continue
        received += len(chunk)
        if received > limit:
            raise _too_large()
        if received > size:
            raise _size_mismatch(size)
        if len(head) < len(PDF_HEADER):
            head = (head + chunk)[: len(PDF_HEADER)]
            if not PDF_HEADER.startswith(head):
                raise _not_a_pdf()
        tail = (tail + chunk)[-PDF_TRAILER_WINDOW:]
        yield chunk
    if received != size:
        raise _size_mismatch(size)
    if head != PDF_HEADER or PDF_TRAILER not in tail:
        raise _not_a_pdf()


async def store_upload(pending: PendingUpload, chunks: AsyncIterable[bytes]) -> StoredObject:
    """Stream the body to the upload's new key: the declared PDF, or nothing is kept.

    Runs outside any transaction (the body may be large). ConflictError if this
    URL's file is already stored (the URL was used before, or twice at once).
    """
    try:
        return await get_storage().put(pending.key, _checked_pdf(chunks, pending.size_bytes))
    except ObjectExistsError:
        raise ConflictError("This upload URL has already been used") from None


@dataclass(frozen=True, slots=True)
class CompletedUpload:
    invoice: Invoice
    # The uploaded file this one replaces; remove it (``discard_file``) once committed.
    replaced_key: str | None


async def complete_upload(pending: PendingUpload, stored: StoredObject) -> CompletedUpload:
    """Make the stored PDF the invoice's document (inside the request's transaction).

    NotFoundError if the invoice was deleted, ConflictError if it was voided,
    while the file streamed in; the caller then discards the stored file.
    """
    invoice = await lock_rows(Invoice.filter(id=pending.invoice.id)).first()
    if invoice is None:
        raise NotFoundError("Invoice", pending.invoice.id)
    _require_not_void(invoice)
    replaced_key = invoice.uploaded_pdf_key
    data = {
        "uploaded_pdf_key": pending.key,
        "uploaded_pdf_filename": pending.filename,
        "uploaded_pdf_size": stored.size,
        "uploaded_pdf_at": clock.now(),
    }
    before = {key: getattr(invoice, key) for key in data}
    invoice.update_from_dict(data)
    await invoice.save(update_fields=[*data.keys(), "updated_at"])
    shown = ("uploaded_pdf_filename", "uploaded_pdf_size", "uploaded_pdf_at")
    await activity.record(
        pending.actor,
        agency_id=invoice.agency_id,
        client_id=invoice.client_id,
        entity_type="invoice",
        entity_id=invoice.id,
        verb="pdf_uploaded",
        summary=(
            f"{invoice_service.label(invoice)}: {pending.actor.name} uploaded "
            f"{pending.filename} as its PDF"
        ),
        changes=activity.diff(
            {key: before[key] for key in shown}, {key: data[key] for key in shown}
        ),
    )
    if invoice.status is not InvoiceStatus.DRAFT:
        # An invoice issued elsewhere reaches the client when its PDF arrives.
        await notification_service.invoice_document_uploaded(invoice, pending.key)
    return CompletedUpload(invoice, replaced_key)


async def discard_file(key: str) -> None:
    """Remove a document from storage (a replaced upload, or one its invoice did not take)."""
    await get_storage().delete(key)
