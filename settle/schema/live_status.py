"""Types pushed by the live status subscriptions (built from bus messages, no query)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from settle.models import invoice as invoice_models
from settle.models import milestone as milestone_models
from settle.schema.common import CURSOR_DESCRIPTION, Money
from settle.schema.invoice import InvoiceStatus
from settle.schema.milestone import MilestonePaymentStatus, MilestoneStatus


def _money(minor: int, currency: str) -> Money:
    return Money.of(minor, currency)


@strawberry.type(description="A milestone was created, or its status or payment status changed.")
class MilestoneStatusChanged:
    milestone_id: strawberry.ID
    project_id: strawberry.ID
    title: str
    status: MilestoneStatus  # type: ignore[valid-type]
    previous_status: MilestoneStatus | None = strawberry.field(  # type: ignore[valid-type]
        description="Null when the milestone was just created."
    )
    payment_status: MilestonePaymentStatus  # type: ignore[valid-type]
    amount: Money
    amount_paid: Money
    changed_at: datetime
    cursor: str = strawberry.field(description=CURSOR_DESCRIPTION)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> MilestoneStatusChanged:
        currency = message["currency"]
        previous = message.get("previousStatus")
        return cls(
            milestone_id=strawberry.ID(message["milestoneId"]),
            project_id=strawberry.ID(message["projectId"]),
            title=message["title"],
            status=milestone_models.MilestoneStatus(message["status"]),
            previous_status=milestone_models.MilestoneStatus(previous) if previous else None,
            payment_status=milestone_models.MilestonePaymentStatus(message["paymentStatus"]),
            amount=_money(message["amountMinor"], currency),
            amount_paid=_money(message["amountPaidMinor"], currency),
            changed_at=datetime.fromisoformat(message["changedAt"]),
            cursor=message["cursor"],
        )


@strawberry.type(description="An invoice was created, or its status changed.")
class InvoiceStatusChanged:
    invoice_id: strawberry.ID
    client_id: strawberry.ID
    project_id: strawberry.ID | None
    number: str | None = strawberry.field(description="Null while a draft.")
    status: InvoiceStatus  # type: ignore[valid-type]
    previous_status: InvoiceStatus | None = strawberry.field(  # type: ignore[valid-type]
        description="Null when the invoice was just created."
    )
    total: Money
    amount_due: Money
    changed_at: datetime
    cursor: str = strawberry.field(description=CURSOR_DESCRIPTION)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> InvoiceStatusChanged:
        currency = message["currency"]
        previous = message.get("previousStatus")
        return cls(
            invoice_id=strawberry.ID(message["invoiceId"]),
            client_id=strawberry.ID(message["clientId"]),
            project_id=strawberry.ID(message["projectId"]) if message.get("projectId") else None,
            number=message.get("number"),
            status=invoice_models.InvoiceStatus(message["status"]),
            previous_status=invoice_models.InvoiceStatus(previous) if previous else None,
            total=_money(message["totalMinor"], currency),
            amount_due=_money(message["dueMinor"], currency),
            changed_at=datetime.fromisoformat(message["changedAt"]),
            cursor=message["cursor"],
        )
