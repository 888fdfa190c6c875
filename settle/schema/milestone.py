"""Contract types: milestones and the payment terms that create them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.models import milestone as models
from settle.schema.common import Money
from settle.schema.context import Info
from settle.services import milestone as milestone_service

if TYPE_CHECKING:
    from settle.schema.auth import User
    from settle.schema.invoice import Invoice

MilestoneStatus = strawberry.enum(
    models.MilestoneStatus,
    description="pending → in_progress → submitted → approved → paid; "
    "submitted → rejected → in_progress; cancelled from any status before paid.",
)
MilestonePaymentStatus = strawberry.enum(models.MilestonePaymentStatus)
MilestoneKind = strawberry.enum(
    models.MilestoneKind,
    description="ADVANCE and BALANCE are created by applyPaymentTerms; the rest are STANDARD.",
)


@strawberry.type(description="A payment stage of a project's contract.")
class Milestone:
    id: strawberry.ID
    project_id: strawberry.ID
    client_id: strawberry.ID
    title: str
    description: str | None
    kind: MilestoneKind  # type: ignore[valid-type]
    amount: Money = strawberry.field(description="In the project's currency.")
    due_date: date | None
    position: int
    status: MilestoneStatus  # type: ignore[valid-type]
    rejection_reason: str | None = strawberry.field(
        description="Why the client last sent the work back; cleared when it is resubmitted."
    )
    submitted_at: datetime | None
    approved_at: datetime | None
    cancelled_at: datetime | None
    payment_status: MilestonePaymentStatus  # type: ignore[valid-type]
    amount_paid: Money
    amount_refunded: Money = strawberry.field(
        description="Given back by refunds. Money refunded is owed again: the milestone is "
        "back to APPROVED (unpaid, payable again) unless a credit note forgives it."
    )
    amount_credited: Money = strawberry.field(
        description="Forgiven by credit notes on its invoice: no longer owed, never received."
    )
    paid_at: datetime | None
    payment_reference: str | None
    is_overdue: bool = strawberry.field(
        description="Past its due date (UTC) and neither paid nor cancelled."
    )
    created_at: datetime
    updated_at: datetime
    _approved_by_id: strawberry.Private[uuid.UUID | None]
    _invoice_error: strawberry.Private[str | None]

    @classmethod
    def from_model(cls, milestone: models.Milestone) -> Milestone:
        return cls(
            id=strawberry.ID(str(milestone.id)),
            project_id=strawberry.ID(str(milestone.project_id)),
            client_id=strawberry.ID(str(milestone.client_id)),
            title=milestone.title,
            description=milestone.description,
            kind=milestone.kind,
            amount=Money.of(milestone.amount_minor, milestone.currency),
            due_date=milestone.due_date,
            position=milestone.position,
            status=milestone.status,
            rejection_reason=milestone.rejection_reason,
            submitted_at=milestone.submitted_at,
            approved_at=milestone.approved_at,
            cancelled_at=milestone.cancelled_at,
            payment_status=milestone.payment_status,
            amount_paid=Money.of(milestone.amount_paid_minor, milestone.currency),
            amount_refunded=Money.of(milestone.amount_refunded_minor, milestone.currency),
            amount_credited=Money.of(milestone.amount_credited_minor, milestone.currency),
            paid_at=milestone.paid_at,
            payment_reference=milestone.payment_reference,
            is_overdue=milestone_service.is_overdue(milestone),
            created_at=milestone.created_at,
            updated_at=milestone.updated_at,
            _approved_by_id=milestone.approved_by_id,
            _invoice_error=milestone.invoice_error,
        )

    @strawberry.field(description="Who approved it (a client lead, owner or admin).")
    async def approved_by(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("settle.schema.auth")] | None:
        from settle.schema.auth import User

        if self._approved_by_id is None:
            return None
        user = await info.context.loaders.user.load(self._approved_by_id)
        return User.from_model(user) if user else None

    @strawberry.field(
        description="The live invoice billing the milestone (not a void one); null until it "
        "is invoiced, and for a client user while it is a draft."
    )
    async def invoice(
        self, info: Info
    ) -> Annotated[Invoice, strawberry.lazy("settle.schema.invoice")] | None:
        from settle.schema.invoice import Invoice

        row = await info.context.loaders.milestone_invoice.load(uuid.UUID(str(self.id)))
        return Invoice.from_model(row) if row else None

    @strawberry.field(
        description="Why the invoice due on approval could not be made yet (it is retried); "
        "null once it is made, and for client users: it is the agency's to fix."
    )
    def invoice_error(self, info: Info) -> str | None:
        actor = info.context.actor
        return None if actor is None or actor.is_client_user else self._invoice_error


@strawberry.type(description="The milestones applyPaymentTerms created; they add up to total.")
class PaymentTerms:
    project_id: strawberry.ID
    total: Money
    advance_percent: int
    milestones: list[Milestone]

    @classmethod
    def from_value(cls, terms: milestone_service.PaymentTerms) -> PaymentTerms:
        return cls(
            project_id=strawberry.ID(str(terms.project.id)),
            total=Money.from_value(terms.total),
            advance_percent=terms.advance_percent,
            milestones=[Milestone.from_model(m) for m in terms.milestones],
        )


@strawberry.input
class CreateMilestoneInput:
    project_id: strawberry.ID
    title: str
    amount: str = strawberry.field(
        description='Decimal string in the project\'s currency, e.g. "1250.00"; above zero.'
    )
    description: str | None = None
    due_date: date | None = None
    position: int | None = strawberry.field(
        default=None, description="Order within the project; after the last one when omitted."
    )


@strawberry.input(description="Only the fields given change. Refused once approved.")
class UpdateMilestoneInput:
    title: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    amount: str | None = strawberry.UNSET
    due_date: date | None = strawberry.UNSET
    position: int | None = strawberry.UNSET


@strawberry.input
class MilestoneFilter:
    project_id: strawberry.ID | None = strawberry.field(
        default=None, description="One project's milestones, in position order."
    )
    status: MilestoneStatus | None = None  # type: ignore[valid-type]
    payment_status: MilestonePaymentStatus | None = None  # type: ignore[valid-type]
    overdue: bool | None = None
