"""Status changes announced for live dashboards: milestones and invoices.

Every place that changes a milestone's or an invoice's status (or, for a
milestone, the money and terms its project's payment status is computed from)
takes a ``before`` snapshot and calls ``milestone_changed`` or
``invoice_changed`` after saving. They compare before and after here, in one
place, and write the bus event to the outbox in the same transaction, so it is
published after commit and only if the change commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from settle.core import clock
from settle.core.outbox import emit_event
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.subscriptions import channels


@dataclass(frozen=True, slots=True)
class MilestoneState:
    """What a milestone subscriber is told of, and what a project's payment status reads."""

    status: MilestoneStatus
    payment_status: MilestonePaymentStatus
    money: tuple[Any, ...]

    @classmethod
    def of(cls, milestone: Milestone) -> MilestoneState:
        return cls(
            milestone.status,
            milestone.payment_status,
            (
                milestone.amount_minor,
                milestone.amount_paid_minor,
                milestone.amount_refunded_minor,
                milestone.amount_credited_minor,
                milestone.paid_at,
                milestone.due_date,
                milestone.title,
                milestone.position,
                milestone.kind,
            ),
        )


async def milestone_changed(
    milestone: Milestone, before: MilestoneState | None, *, money_changed: bool = False
) -> None:
    """Announce a milestone created (``before`` None) or changed, once the transaction commits.

    ``statusChanged`` says whether its status or payment status moved; a change of its
    money or terms alone (``money_changed`` when the caller changed the money before
    taking ``before``) is announced too, for its project's payment status.
    """
    after = MilestoneState.of(milestone)
    if after == before and not money_changed:
        return
    status_changed = before is None or (before.status, before.payment_status) != (
        after.status,
        after.payment_status,
    )
    await emit_event(
        channels.milestones(milestone.agency_id),
        {
            "eventId": str(uuid.uuid4()),
            "milestoneId": str(milestone.id),
            "agencyId": str(milestone.agency_id),
            "clientId": str(milestone.client_id),
            "projectId": str(milestone.project_id),
            "title": milestone.title,
            "status": milestone.status.value,
            "previousStatus": before.status.value if before else None,
            "paymentStatus": milestone.payment_status.value,
            "amountMinor": milestone.amount_minor,
            "amountPaidMinor": milestone.amount_paid_minor,
            "currency": milestone.currency,
            "statusChanged": status_changed,
            "changedAt": clock.now().isoformat(),
        },
    )


async def milestones_changed(before: Iterable[Milestone]) -> None:
    """Announce what a bulk update did to these milestones (read before it)."""
    states = {m.id: MilestoneState.of(m) for m in before}
    if not states:
        return
    for milestone in await Milestone.filter(id__in=list(states)).order_by("id"):
        await milestone_changed(milestone, states[milestone.id])


async def invoice_changed(invoice: Invoice, before: InvoiceStatus | None) -> None:
    """Announce an invoice's new status (``before`` None: just created), once committed."""
    if invoice.status == before:
        return
    await emit_event(
        channels.invoices(invoice.agency_id),
        {
            "invoiceId": str(invoice.id),
            "agencyId": str(invoice.agency_id),
            "clientId": str(invoice.client_id),
            "projectId": str(invoice.project_id) if invoice.project_id else None,
            "number": invoice.number,
            "status": invoice.status.value,
            "previousStatus": before.value if before else None,
            "totalMinor": invoice.total_minor,
            "dueMinor": _due(invoice),
            "currency": invoice.currency,
            # A draft is the agency's working: its client hears of the invoice once issued.
            "internal": invoice.status == InvoiceStatus.DRAFT,
            "changedAt": clock.now().isoformat(),
        },
    )


def _due(invoice: Invoice) -> int:
    from settle.services.settlement import invoice_due

    return invoice_due(invoice)
