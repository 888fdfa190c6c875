"""Credit notes: money an agency forgives on an issued invoice.

Money refunded is owed again unless the agency forgives it (``settlement``);
a credit note is how it forgives. It reduces what the invoice owes (and what
its milestones owe, in proportion), never below nothing; it is numbered in the
agency's own gapless credit note sequence (``CN-{YYYY}-{SEQ:4}``, kept apart
from invoice numbers), issued once, rendered to a PDF by a worker, and put on
the timeline. A credit note is final: a mistake is corrected with an invoice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from tortoise.queryset import QuerySet

from settle.core import clock, validation
from settle.core.db import get_visible, lock_rows
from settle.core.errors import NotFoundError
from settle.core.money import Money, format_money
from settle.core.outbox import send_job
from settle.core.pagination import Ordering, Page, paginate
from settle.core.tenancy import MANAGERS, Actor, scoped
from settle.models.invoice import CreditNote, Invoice, InvoiceStatus
from settle.services import activity, settlement
from settle.services import payment as payment_service
from settle.services.invoice import format_number, next_sequence

# Its own sequence: kept under a scope no invoice pattern can produce (":" is not allowed
# in an invoice number pattern), so the two never share a counter.
NUMBER_PATTERN = "CN-{YYYY}-{SEQ:4}"
SCOPE_PREFIX = "credit_note:"
REASON_MAX_LENGTH = 2_000
RENDER_PDF_JOB = "credit_note.render_pdf"


def _credit_notes(actor: Actor) -> QuerySet[CreditNote]:
    qs = scoped(CreditNote, actor)
    if actor.is_client_user:
        qs = qs.filter(client_id=actor.client_id)
    return qs


async def get_credit_note(actor: Actor, credit_note_id: uuid.UUID) -> CreditNote:
    """A credit note the actor may see (client users: their client's), or NotFoundError."""
    return await get_visible(_credit_notes(actor), credit_note_id, "CreditNote")


@dataclass(frozen=True, slots=True)
class CreditNoteFilter:
    invoice_id: uuid.UUID | None = None
    client_id: uuid.UUID | None = None


async def list_credit_notes(
    actor: Actor, flt: CreditNoteFilter, *, first: int | None, after: str | None
) -> Page[CreditNote]:
    """The credit notes the actor may see, newest first."""
    qs = _credit_notes(actor)
    if flt.invoice_id is not None:
        qs = qs.filter(invoice_id=flt.invoice_id)
    if flt.client_id is not None:
        qs = qs.filter(client_id=flt.client_id)
    return await paginate(
        qs, first=first, after=after, ordering=Ordering("created_at", descending=True)
    )


async def credit_notes_by_ids(
    actor: Actor, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, CreditNote]:
    """The credit notes among ``ids`` the actor may see, in one query (for loaders)."""
    return {row.id: row for row in await _credit_notes(actor).filter(id__in=list(ids))}


async def credit_notes_for_invoices(
    actor: Actor, invoice_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[CreditNote]]:
    """Each invoice's credit notes, oldest first, in one query (for loaders)."""
    grouped: dict[uuid.UUID, list[CreditNote]] = {}
    rows = _credit_notes(actor).filter(invoice_id__in=invoice_ids)
    for row in await rows.order_by("created_at", "id"):
        grouped.setdefault(row.invoice_id, []).append(row)
    return grouped


async def issue_credit_note(
    actor: Actor, invoice_id: uuid.UUID, amount: str | None, reason: str | None
) -> CreditNote:
    """Forgive part or all of what an issued invoice owes (owners and admins).

    At most what is due; the invoice and its milestones settle if nothing is left.
    """
    actor.require(*MANAGERS)
    invoice = await lock_rows(
        scoped(Invoice, actor).filter(id=invoice_id).exclude(status=InvoiceStatus.DRAFT)
    ).first()
    if invoice is None:
        raise NotFoundError("Invoice", invoice_id)
    text = validation.required_text("reason", reason, max_length=REASON_MAX_LENGTH)
    value = Money.parse(
        validation.required_text("amount", amount, max_length=40), invoice.currency
    ).minor_units
    issued_on = clock.now().date()
    scope = SCOPE_PREFIX + format_number(NUMBER_PATTERN, issued_on, None)
    # Checked before the number is taken, so a refused credit note uses none; the number is
    # still taken in this transaction, so a rollback leaves no gap.
    settlement.check_credit(invoice, value)
    number = format_number(NUMBER_PATTERN, issued_on, await next_sequence(invoice.agency_id, scope))
    note = await CreditNote.create(
        agency_id=invoice.agency_id,
        invoice_id=invoice.id,
        client_id=invoice.client_id,
        number=number,
        amount_minor=value,
        currency=invoice.currency,
        reason=text,
        issue_date=issued_on,
        created_by_id=actor.user_id,
    )
    invoice = await settlement.credit_on_invoice(invoice.id, value, actor=actor, number=number)
    await settlement.spread_credit(invoice, value, number)
    # A checkout made for the old amount due would now take the wrong sum.
    await payment_service.supersede_for_invoice(invoice.id, actor=actor)
    await activity.record(
        actor,
        agency_id=note.agency_id,
        client_id=note.client_id,
        entity_type="credit_note",
        entity_id=note.id,
        verb="issued",
        summary=f"Credit note {number} of {format_money(Money(value, note.currency))} issued "
        f"against {settlement.label(invoice)}: {text}",
        changes=activity.snapshot(
            {
                "number": number,
                "amount": Money(value, note.currency).format_amount(),
                "currency": note.currency,
                "invoice": invoice.number,
                "reason": text,
            }
        ),
    )
    await send_job(RENDER_PDF_JOB, str(note.id))
    return note
