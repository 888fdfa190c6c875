"""How money lands on invoices and milestones: received, refunded and forgiven.

One rule, everywhere (README: "The refund rule")::

    due = total - (paid - refunded) - credited

``paid`` is what was ever received, ``refunded`` what was given back of it, and
``credited`` what the agency forgave with credit notes. Money refunded is owed
again unless the agency forgives it. Statuses follow the numbers: an invoice is
``paid`` exactly when nothing is due, and a refund that leaves something due
reopens it (``partially_paid``, ``overdue``, ``viewed`` or ``sent``, as its
numbers and dates say). A milestone is ``paid`` exactly when nothing is due on
it; a refund it is not forgiven for puts it back to ``approved``, so its final
files lock and every pay route takes it again.

A milestone costs its invoice line's share (amount less discount, plus tax), or
its own amount while it has no invoice. Money for a milestone's allocation lands
on that milestone; money for a whole invoice is spread over its milestones (and
the rest of its lines, as one part) in proportion to what each is owed, was
paid, or, for refunds, still holds.

Callers hold the transaction; every function here locks the rows it changes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from settle.core import clock
from settle.core.db import lock_rows
from settle.core.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)
from settle.core.money import Money
from settle.core.tenancy import Actor
from settle.models.invoice import Invoice, InvoiceLine, InvoiceStatus
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.services import activity, live_status
from settle.services.invoice_totals import allocate

S = InvoiceStatus
MS = MilestoneStatus
MP = MilestonePaymentStatus

# The statuses an issued, unsettled invoice may be in: it can still be paid or go overdue.
OPEN_STATUSES = frozenset({S.SENT, S.VIEWED, S.PARTIALLY_PAID, S.OVERDUE})
# Issued and not void: money may have landed on it, so refunds and credits may too.
ISSUED_STATUSES = OPEN_STATUSES | {S.PAID}

_MONEY_FIELDS = {
    "amount_paid_minor": "amount_paid",
    "amount_refunded_minor": "amount_refunded",
    "amount_credited_minor": "amount_credited",
    "due_minor": "amount_due",
}


# --- invoices ------------------------------------------------------------------------------


def invoice_due(invoice: Invoice) -> int:
    """What is still owed on an invoice: total - (paid - refunded) - credited; 0 once void."""
    if invoice.status == S.VOID:
        return 0
    received = invoice.amount_paid_minor - invoice.amount_refunded_minor
    return invoice.total_minor - received - invoice.amount_credited_minor


def invoice_status_for(invoice: Invoice) -> InvoiceStatus:
    """The status an issued invoice's numbers and dates say it is in."""
    if invoice_due(invoice) <= 0:
        return S.PAID
    if invoice.amount_paid_minor - invoice.amount_refunded_minor > 0:
        return S.PARTIALLY_PAID
    if invoice.due_date is not None and invoice.due_date < clock.now().date():
        return S.OVERDUE
    return S.VIEWED if invoice.viewed_at is not None else S.SENT


def label(invoice: Invoice) -> str:
    """How the timeline and emails name an invoice: its number, or "draft invoice"."""
    return f"Invoice {invoice.number}" if invoice.number else "Draft invoice"


async def record_invoice_event(
    actor: Actor | None,
    invoice: Invoice,
    verb: str,
    summary: str,
    changes: activity.Changes | None = None,
) -> None:
    """Put an invoice event on the timeline (a draft's events are internal to the agency)."""
    await activity.record(
        actor,
        agency_id=invoice.agency_id,
        client_id=invoice.client_id,
        entity_type="invoice",
        entity_id=invoice.id,
        verb=verb,
        summary=summary,
        changes=changes,
        # A draft is the agency's working: its client sees the invoice once it is issued.
        internal=invoice.status == S.DRAFT,
    )


async def _lock_invoice(invoice_id: uuid.UUID) -> Invoice:
    invoice = await lock_rows(Invoice.filter(id=invoice_id)).first()
    if invoice is None:
        raise NotFoundError("Invoice", invoice_id)
    return invoice


def _invoice_money(invoice: Invoice) -> dict[str, Any]:
    return {
        "status": invoice.status,
        "amount_paid_minor": invoice.amount_paid_minor,
        "amount_refunded_minor": invoice.amount_refunded_minor,
        "amount_credited_minor": invoice.amount_credited_minor,
        "due_minor": invoice_due(invoice),
    }


async def _save_invoice(
    actor: Actor | None, invoice: Invoice, before: dict[str, Any], verb: str, summary: str
) -> None:
    invoice.status = invoice_status_for(invoice)
    if invoice.status == S.PAID:
        invoice.paid_at = invoice.paid_at if before["status"] == S.PAID else clock.now()
    else:
        invoice.paid_at = None
    await invoice.save(
        update_fields=[
            "status",
            "amount_paid_minor",
            "amount_refunded_minor",
            "amount_credited_minor",
            "paid_at",
            "updated_at",
        ]
    )
    await live_status.invoice_changed(invoice, before["status"])
    await record_invoice_event(
        actor,
        invoice,
        verb,
        summary,
        activity.diff(
            activity.with_amounts(before, invoice.currency, _MONEY_FIELDS),
            activity.with_amounts(_invoice_money(invoice), invoice.currency, _MONEY_FIELDS),
        ),
    )


def _shown(amount_minor: int, invoice: Invoice) -> str:
    return f"{Money(amount_minor, invoice.currency).format_amount()} {invoice.currency}"


async def receive_on_invoice(
    invoice_id: uuid.UUID, amount_minor: int, *, actor: Actor | None
) -> Invoice:
    """Money received for an issued invoice: partially_paid, or paid once nothing is due."""
    invoice = await _lock_invoice(invoice_id)
    if amount_minor <= 0:
        raise ValidationError("amount", "amount must be greater than 0", code="OUT_OF_RANGE")
    # The status first: a paid (or draft, or void) invoice takes no payment whatever the amount.
    if invoice.status not in OPEN_STATUSES:
        raise InvalidTransitionError("Invoice", invoice.status.value, S.PAID.value)
    if amount_minor > invoice_due(invoice):
        raise ValidationError(
            "amount", "amount is more than the invoice's balance", code="OUT_OF_RANGE"
        )
    before = _invoice_money(invoice)
    invoice.amount_paid_minor += amount_minor
    settled = invoice_due(invoice) <= 0
    await _save_invoice(
        actor,
        invoice,
        before,
        S.PAID.value if settled else S.PARTIALLY_PAID.value,
        f"{label(invoice)}: {_shown(amount_minor, invoice)} received"
        + (", paid in full" if settled else ""),
    )
    return invoice


async def refund_on_invoice(
    invoice_id: uuid.UUID, amount_minor: int, *, actor: Actor | None
) -> Invoice:
    """Money given back out of what an invoice received: owed again, so it may reopen."""
    invoice = await _lock_invoice(invoice_id)
    before = _invoice_money(invoice)
    invoice.amount_refunded_minor += amount_minor
    reopened = before["status"] == S.PAID and invoice_due(invoice) > 0
    await _save_invoice(
        actor,
        invoice,
        before,
        "reopened" if reopened else "refunded",
        f"{label(invoice)}: {_shown(amount_minor, invoice)} refunded"
        + (f", {_shown(invoice_due(invoice), invoice)} due again" if reopened else ""),
    )
    return invoice


def check_credit(invoice: Invoice, amount_minor: int) -> None:
    """A credit is for an issued invoice, above nothing and at most what it owes."""
    if invoice.status not in ISSUED_STATUSES:
        raise InvalidTransitionError("Invoice", invoice.status.value, "credited")
    due = invoice_due(invoice)
    if due <= 0:
        raise ConflictError(f"Nothing is due on {label(invoice)}: there is nothing to forgive")
    if not 0 < amount_minor <= due:
        raise ValidationError(
            "amount",
            f"amount must be above 0 and at most the {_shown(due, invoice)} due",
            code="OUT_OF_RANGE",
        )


async def credit_on_invoice(
    invoice_id: uuid.UUID, amount_minor: int, *, actor: Actor | None, number: str
) -> Invoice:
    """Money forgiven by a credit note: no longer owed, so it may settle the invoice."""
    invoice = await _lock_invoice(invoice_id)
    check_credit(invoice, amount_minor)
    before = _invoice_money(invoice)
    invoice.amount_credited_minor += amount_minor
    await _save_invoice(
        actor,
        invoice,
        before,
        "credited",
        f"{label(invoice)}: {_shown(amount_minor, invoice)} forgiven by credit note {number}",
    )
    return invoice


# --- milestones ----------------------------------------------------------------------------


def line_share(line: InvoiceLine) -> int:
    """What a line costs the client: its amount less its discount, plus its tax."""
    return line.amount_minor - line.discount_minor + line.tax_minor


async def line_of(milestone: Milestone) -> InvoiceLine | None:
    """The line of the live invoice billing a milestone, if it has one."""
    if milestone.invoice_id is None:
        return None
    return await InvoiceLine.get_or_none(invoice_id=milestone.invoice_id, milestone_id=milestone.id)


def milestone_due(milestone: Milestone, line: InvoiceLine | None) -> int:
    """What is owed on a milestone: its cost less what it kept of what it received, less credit."""
    cost = line_share(line) if line is not None else milestone.amount_minor
    received = milestone.amount_paid_minor - milestone.amount_refunded_minor
    return cost - received - milestone.amount_credited_minor


def payment_status_for(milestone: Milestone, due: int) -> MilestonePaymentStatus:
    """What a milestone's money says: paid in full, given back (in part), or not paid."""
    if due <= 0 and milestone.amount_credited_minor == 0:
        return MP.PAID
    if milestone.amount_refunded_minor > 0:
        kept = milestone.amount_paid_minor - milestone.amount_refunded_minor
        return MP.PARTIALLY_REFUNDED if kept > 0 else MP.REFUNDED
    return MP.PAID if due <= 0 else MP.UNPAID


async def _settle_milestone(
    milestone: Milestone, *, verb: str, summary: str, reference: str | None, now: datetime
) -> Milestone:
    """Save a milestone's money and the status it now says: paid iff nothing is due."""
    before = {"status": milestone.status.value, "payment_status": milestone.payment_status.value}
    state = live_status.MilestoneState.of(milestone)
    due = milestone_due(milestone, await line_of(milestone))
    if milestone.status in (MS.APPROVED, MS.PAID):
        if due <= 0:
            if milestone.status != MS.PAID:
                milestone.paid_at = now
            milestone.status = MS.PAID
        else:
            # Owed again (a refund not forgiven): back to approved, payable by every route.
            milestone.status = MS.APPROVED
            milestone.paid_at = None
    # A payment under way stays shown as processing until the milestone is settled.
    if milestone.payment_status != MP.PROCESSING or milestone.status == MS.PAID:
        milestone.payment_status = payment_status_for(milestone, due)
    if reference:
        milestone.payment_reference = reference[:200]
    await milestone.save(
        update_fields=[
            "status",
            "payment_status",
            "amount_paid_minor",
            "amount_refunded_minor",
            "amount_credited_minor",
            "paid_at",
            "payment_reference",
            "updated_at",
        ]
    )
    after = {"status": milestone.status.value, "payment_status": milestone.payment_status.value}
    # The money moved before this was called: announce it whatever the status did.
    await live_status.milestone_changed(milestone, state, money_changed=True)
    await activity.record(
        None,
        agency_id=milestone.agency_id,
        client_id=milestone.client_id,
        entity_type="milestone",
        entity_id=milestone.id,
        verb=verb,
        summary=summary,
        changes=activity.diff(before, after),
    )
    return milestone


async def receive_on_milestone(
    milestone_id: uuid.UUID,
    amount_minor: int,
    *,
    reference: str | None,
    source: str,
    now: datetime | None = None,
) -> Milestone:
    """Money received for a milestone (``source``: the gateway, or how it was recorded)."""
    milestone = await lock_rows(Milestone.filter(id=milestone_id)).get()
    milestone.amount_paid_minor += amount_minor
    due = milestone_due(milestone, await line_of(milestone))
    return await _settle_milestone(
        milestone,
        verb="paid" if due <= 0 else "partially_paid",
        summary=f"Milestone {milestone.title} "
        + ("paid" if due <= 0 else "partially paid")
        + f" ({source})",
        reference=reference,
        now=now or clock.now(),
    )


async def refund_on_milestone(milestone_id: uuid.UUID, amount_minor: int) -> Milestone:
    """Money given back of what a milestone received: owed again unless forgiven."""
    milestone = await lock_rows(Milestone.filter(id=milestone_id)).get()
    milestone.amount_refunded_minor += amount_minor
    full = milestone.amount_refunded_minor >= milestone.amount_paid_minor
    return await _settle_milestone(
        milestone,
        verb="refunded",
        summary=f"Milestone {milestone.title} "
        + ("refunded in full" if full else "partially refunded"),
        reference=None,
        now=clock.now(),
    )


async def credit_on_milestone(milestone_id: uuid.UUID, amount_minor: int, number: str) -> None:
    milestone = await lock_rows(Milestone.filter(id=milestone_id)).get()
    milestone.amount_credited_minor += amount_minor
    await _settle_milestone(
        milestone,
        verb="credited",
        summary=f"Milestone {milestone.title}: "
        f"{Money(amount_minor, milestone.currency).format_amount()} {milestone.currency} "
        f"forgiven by credit note {number}",
        reference=None,
        now=clock.now(),
    )


async def _milestone_parts(invoice: Invoice) -> list[tuple[Milestone, InvoiceLine]]:
    lines = await InvoiceLine.filter(invoice_id=invoice.id, milestone_id__isnull=False).order_by(
        "position", "id"
    )
    milestones = {
        m.id: m
        for m in await Milestone.filter(id__in=[line.milestone_id for line in lines]).exclude(
            status=MS.CANCELLED
        )
    }
    return [
        (milestones[line.milestone_id], line)
        for line in lines
        if line.milestone_id is not None and line.milestone_id in milestones
    ]


async def _shares_by_owed(invoice: Invoice, amount_minor: int) -> list[tuple[Milestone, int]]:
    """Money just received or forgiven on a whole invoice, shared by what each milestone owed.

    The invoice's other lines take their part as one (what the invoice owed before this
    money, less the milestones' parts), so milestones get only their share of it.
    """
    parts = await _milestone_parts(invoice)
    owed = [max(milestone_due(m, line), 0) for m, line in parts]
    rest = max(invoice_due(invoice) + amount_minor - sum(owed), 0)
    shares = allocate(min(amount_minor, sum(owed) + rest), [*owed, rest])
    return [(m, share) for (m, _), share in zip(parts, shares, strict=False) if share > 0]


async def spread_received(
    invoice: Invoice,
    amount_minor: int,
    *,
    reference: str | None,
    source: str,
    now: datetime | None = None,
) -> None:
    """Money for a whole invoice (already on it) shared over its milestones by what each owes.

    When the invoice is settled, every milestone on it is too.
    """
    for milestone, share in await _shares_by_owed(invoice, amount_minor):
        await receive_on_milestone(milestone.id, share, reference=reference, source=source, now=now)


async def spread_refund(invoice: Invoice, amount_minor: int) -> None:
    """A refund of money for a whole invoice shared over its milestones by what each kept."""
    parts = await _milestone_parts(invoice)
    if not parts:
        return
    kept = [max(m.amount_paid_minor - m.amount_refunded_minor, 0) for m, _ in parts]
    # The invoice's received money before this refund, less the milestones' part.
    received = invoice.amount_paid_minor - invoice.amount_refunded_minor + amount_minor
    rest = max(received - sum(kept), 0)
    shares = allocate(min(amount_minor, sum(kept) + rest), [*kept, rest])
    for (milestone, _), share in zip(parts, shares, strict=False):
        if share > 0:
            await refund_on_milestone(milestone.id, share)


async def spread_credit(invoice: Invoice, amount_minor: int, number: str) -> None:
    """Money forgiven on an invoice shared over its milestones by what each owes."""
    for milestone, share in await _shares_by_owed(invoice, amount_minor):
        await credit_on_milestone(milestone.id, share, number)
