"""An agency's billing at a glance: what the live dashboard subscription pushes."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

from tortoise.functions import Count, Sum

from settle.core import clock
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.payment import Payment
from settle.services.payment import OPEN_PAYMENT_STATUSES, SUCCESS_STATUSES
from settle.services.settlement import OPEN_STATUSES


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Amounts are ``(currency, minor units)`` pairs, sorted by currency, non-zero only."""

    outstanding: tuple[tuple[str, int], ...]
    open_invoices: int
    overdue_invoices: int
    paid_today: tuple[tuple[str, int], ...]
    payments_in_flight: int


async def agency_dashboard(agency_id: uuid.UUID) -> Dashboard:
    """Outstanding on issued, unsettled invoices by currency, their count and how many are
    overdue; received today (payments that succeeded since 00:00 UTC) by currency; and
    payments under way (created or pending)."""
    invoices = (
        await Invoice.filter(agency_id=agency_id, status__in=list(OPEN_STATUSES))
        .annotate(
            n=Count("id"),
            total=Sum("total_minor"),
            paid=Sum("amount_paid_minor"),
            refunded=Sum("amount_refunded_minor"),
            credited=Sum("amount_credited_minor"),
        )
        .group_by("currency", "status")
        .values_list("currency", "status", "n", "total", "paid", "refunded", "credited")
    )
    outstanding: dict[str, int] = defaultdict(int)
    open_count = overdue = 0
    for currency, status, n, total, paid, refunded, credited in invoices:
        # due = total - (paid - refunded) - credited (services.settlement), added up
        due = int(total or 0) - int(paid or 0) + int(refunded or 0) - int(credited or 0)
        outstanding[currency] += due
        open_count += int(n)
        if status == InvoiceStatus.OVERDUE:
            overdue += int(n)
    midnight = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    received = (
        await Payment.filter(
            agency_id=agency_id,
            status__in=list(SUCCESS_STATUSES),
            succeeded_at__gte=midnight,
        )
        .annotate(amount=Sum("amount_minor"))
        .group_by("currency")
        .values_list("currency", "amount")
    )
    in_flight = await Payment.filter(
        agency_id=agency_id, status__in=list(OPEN_PAYMENT_STATUSES)
    ).count()
    return Dashboard(
        outstanding=tuple(sorted((c, a) for c, a in outstanding.items() if a)),
        open_invoices=open_count,
        overdue_invoices=overdue,
        paid_today=tuple(sorted((c, int(a)) for c, a in received if a)),
        payments_in_flight=in_flight,
    )
