"""Credit note types: money an agency forgives on an issued invoice."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.models import invoice as models
from settle.schema.common import Money
from settle.schema.context import Info
from settle.schema.deliverable import DownloadUrl
from settle.schema.invoice import Invoice

if TYPE_CHECKING:
    from settle.schema.auth import User


@strawberry.type(
    description="Money forgiven on an issued invoice: it reduces what the invoice (and its "
    "milestones) owe. Numbered CN-2026-0001 in its own gapless sequence; final once issued."
)
class CreditNote:
    id: strawberry.ID
    number: str
    invoice_id: strawberry.ID
    client_id: strawberry.ID
    amount: Money = strawberry.field(description="What is forgiven, in the invoice's currency.")
    reason: str
    issue_date: date
    created_at: datetime
    _row: strawberry.Private[models.CreditNote]

    @classmethod
    def from_model(cls, note: models.CreditNote) -> CreditNote:
        return cls(
            id=strawberry.ID(str(note.id)),
            number=note.number,
            invoice_id=strawberry.ID(str(note.invoice_id)),
            client_id=strawberry.ID(str(note.client_id)),
            amount=Money.of(note.amount_minor, note.currency),
            reason=note.reason,
            issue_date=note.issue_date,
            created_at=note.created_at,
            _row=note,
        )

    @strawberry.field(description="The invoice it credits.")
    async def invoice(self, info: Info) -> Invoice | None:
        row = await info.context.loaders.invoice.load(self._row.invoice_id)
        return Invoice.from_model(row) if row else None

    @strawberry.field(description="Who issued it.")
    async def created_by(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("settle.schema.auth")] | None:
        from settle.schema.auth import User

        if self._row.created_by_id is None:
            return None
        user = await info.context.loaders.user.load(self._row.created_by_id)
        return User.from_model(user) if user else None

    @strawberry.field(
        description="A signed link to its PDF; null until a worker has rendered it (just "
        "after it is issued)."
    )
    async def pdf_url(self, info: Info) -> DownloadUrl | None:
        from settle.resolvers.credit_note import credit_note_pdf_url

        return await credit_note_pdf_url(info, self._row.id)


@strawberry.type
class CreditNotePayload:
    credit_note: CreditNote
    invoice: Invoice = strawberry.field(
        description="The invoice credited, with its new amountCredited, amountDue and status."
    )


@strawberry.input
class IssueCreditNoteInput:
    invoice_id: strawberry.ID = strawberry.field(description="An issued invoice with money due.")
    amount: str = strawberry.field(
        description='Decimal amount in the invoice\'s currency, e.g. "250.00": above 0 and at '
        "most the invoice's amountDue."
    )
    reason: str = strawberry.field(description="Why it is forgiven; printed on the credit note.")


@strawberry.input
class CreditNoteFilter:
    invoice_id: strawberry.ID | None = None
    client_id: strawberry.ID | None = None
