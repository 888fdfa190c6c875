"""The live dashboard's type."""

from __future__ import annotations

import strawberry

from settle.schema.common import Money
from settle.services import dashboard as dashboard_service


@strawberry.type(description="An agency's billing at a glance.")
class Dashboard:
    outstanding: list[Money] = strawberry.field(
        description="Due on issued, unsettled invoices, one amount per currency (none when "
        "nothing is due)."
    )
    open_invoices: int = strawberry.field(description="Issued invoices not yet settled.")
    overdue_invoices: int = strawberry.field(description="Of them, those overdue.")
    paid_today: list[Money] = strawberry.field(
        description="Received by payments that succeeded since 00:00 UTC, per currency."
    )
    payments_in_flight: int = strawberry.field(
        description="Payments under way: created or pending at the gateway."
    )

    @classmethod
    def from_value(cls, value: dashboard_service.Dashboard) -> Dashboard:
        return cls(
            outstanding=[Money.of(m, c) for c, m in value.outstanding],
            open_invoices=value.open_invoices,
            overdue_invoices=value.overdue_invoices,
            paid_today=[Money.of(m, c) for c, m in value.paid_today],
            payments_in_flight=value.payments_in_flight,
        )
