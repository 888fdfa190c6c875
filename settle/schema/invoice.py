"""Invoice types: invoices, their lines, taxes, deliveries and documents."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.core.money import Money as MoneyValue
from settle.core.pagination import DEFAULT_PAGE_SIZE
from settle.models import invoice as models
from settle.schema.auth import format_rate
from settle.schema.client import Client
from settle.schema.common import Connection, Money, SortDirection
from settle.schema.context import Info
from settle.schema.deliverable import DownloadUrl
from settle.services import invoice as invoice_service
from settle.services import settlement

if TYPE_CHECKING:
    from settle.schema.activity import ActivityEvent
    from settle.schema.credit_note import CreditNote
    from settle.schema.payment import Payment
    from settle.schema.project import Project

RATE_DESCRIPTION = 'Percentage from 0 to 100 with at most three decimals, e.g. "18" or "12.5".'

InvoiceStatus = strawberry.enum(
    models.InvoiceStatus,
    description="draft → sent (finalized: numbered, immutable) → viewed → partially_paid → "
    "paid; overdue when past due and unpaid; void (with a reason) while nothing is paid. "
    "A refund that leaves money due reopens a paid invoice.",
)
InvoiceSource = strawberry.enum(
    models.InvoiceSource,
    description="MILESTONE_APPROVAL: issued by itself when its milestone was approved.",
)
DiscountKind = strawberry.enum(
    models.DiscountKind,
    description="AMOUNT: a sum in the invoice's currency; PERCENT: a share of the subtotal.",
)
InvoiceLineKind = strawberry.enum(
    models.InvoiceLineKind, description="What a line bills: a milestone, time, or anything."
)
InvoiceDeliveryStatus = strawberry.enum(models.DeliveryStatus, name="InvoiceDeliveryStatus")
TimeGrouping = strawberry.enum(
    invoice_service.TimeGrouping,
    description="One invoice line per task, per person, or one for all the time; each split "
    "further by hourly rate.",
)
InvoiceOrderField = strawberry.enum(
    invoice_service.InvoiceOrderField,
    description="ISSUE_DATE and DUE_DATE put invoices without one (drafts) last, in either "
    "direction.",
)


def _money(minor: int, currency: str) -> Money:
    return Money.of(minor, currency)


def _quantity(quantity: Decimal) -> str:
    return f"{quantity.quantize(Decimal('0.01'))}"


@strawberry.type
class InvoiceLine:
    id: strawberry.ID
    invoice_id: strawberry.ID
    position: int
    kind: InvoiceLineKind  # type: ignore[valid-type]
    description: str
    quantity: str = strawberry.field(description='Decimal string with two places, e.g. "1.50".')
    unit_price: Money
    amount: Money = strawberry.field(description="quantity x unit price, rounded half up.")
    discount: Money = strawberry.field(
        description="The line's share of the invoice's discount (they add up to it exactly)."
    )
    tax: Money = strawberry.field(
        description="The line's share of the tax of its rate (they add up to it exactly)."
    )
    tax_rate: str | None = strawberry.field(
        description="The line's own rate; null when the invoice's rate applies."
    )
    milestone_id: strawberry.ID | None = strawberry.field(description="The milestone it bills.")

    @classmethod
    def from_model(cls, line: models.InvoiceLine, currency: str) -> InvoiceLine:
        return cls(
            id=strawberry.ID(str(line.id)),
            invoice_id=strawberry.ID(str(line.invoice_id)),
            position=line.position,
            kind=line.kind,
            description=line.description,
            quantity=_quantity(line.quantity),
            unit_price=_money(line.unit_price_minor, currency),
            amount=_money(line.amount_minor, currency),
            discount=_money(line.discount_minor, currency),
            tax=_money(line.tax_minor, currency),
            tax_rate=None if line.tax_rate is None else format_rate(line.tax_rate),
            milestone_id=strawberry.ID(str(line.milestone_id)) if line.milestone_id else None,
        )


@strawberry.type(description="The tax of one rate: the rate applied once to what it taxes.")
class InvoiceTax:
    rate: str
    taxable: Money = strawberry.field(description="The discounted amount of the rate's lines.")
    tax: Money


@strawberry.type
class InvoiceDiscount:
    kind: DiscountKind  # type: ignore[valid-type]
    value: str = strawberry.field(
        description='The percentage ("10") or the amount in the invoice\'s currency ("250.00").'
    )


@strawberry.type(description="A PDF issued elsewhere and uploaded: it is the invoice's document.")
class UploadedPdf:
    filename: str
    size_bytes: int
    uploaded_at: datetime


@strawberry.type(description="One request to email the invoice, and how its delivery went.")
class InvoiceDelivery:
    id: strawberry.ID
    to: list[str]
    cc: list[str]
    message: str | None
    status: InvoiceDeliveryStatus  # type: ignore[valid-type]
    attempts: int
    last_error: str | None = strawberry.field(description="Why the last attempt failed.")
    sent_at: datetime | None
    created_at: datetime

    @classmethod
    def from_model(cls, delivery: models.InvoiceDelivery) -> InvoiceDelivery:
        return cls(
            id=strawberry.ID(str(delivery.id)),
            to=list(delivery.recipients),
            cc=list(delivery.cc),
            message=delivery.message,
            status=delivery.status,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            sent_at=delivery.sent_at,
            created_at=delivery.created_at,
        )


def _discount(invoice: models.Invoice) -> InvoiceDiscount | None:
    if invoice.discount_kind == models.DiscountKind.PERCENT:
        return InvoiceDiscount(
            kind=invoice.discount_kind, value=format_rate(invoice.discount_percent or Decimal(0))
        )
    if invoice.discount_kind == models.DiscountKind.AMOUNT:
        amount = MoneyValue(invoice.discount_amount_minor or 0, invoice.currency)
        return InvoiceDiscount(kind=invoice.discount_kind, value=amount.format_amount())
    return None


def _uploaded_pdf(invoice: models.Invoice) -> UploadedPdf | None:
    if invoice.uploaded_pdf_at is None:
        return None
    return UploadedPdf(
        filename=invoice.uploaded_pdf_filename or "",
        size_bytes=invoice.uploaded_pdf_size or 0,
        uploaded_at=invoice.uploaded_pdf_at,
    )


@strawberry.type(description="A bill to a client. Amounts are computed by the server.")
class Invoice:
    id: strawberry.ID
    number: str | None = strawberry.field(
        description="Assigned when finalized (INV-2026-0001 by default); null for a draft."
    )
    status: InvoiceStatus  # type: ignore[valid-type]
    source: InvoiceSource  # type: ignore[valid-type]
    client_id: strawberry.ID
    project_id: strawberry.ID | None
    currency: str = strawberry.field(description="ISO 4217 code of every amount of the invoice.")
    issue_date: date | None
    due_date: date | None = strawberry.field(
        description="On a draft only when set by hand; finalizing fills in the payment terms'."
    )
    notes: str | None
    terms: str | None
    tax_rate: str = strawberry.field(
        description="The invoice's rate, for every line without a rate of its own."
    )
    discount: InvoiceDiscount | None
    subtotal: Money = strawberry.field(description="The sum of the line amounts.")
    discount_total: Money = strawberry.field(description="What the discount takes off.")
    tax: Money
    total: Money = strawberry.field(description="subtotal - discountTotal + tax.")
    amount_paid: Money
    amount_refunded: Money = strawberry.field(
        description="Given back out of what was paid; amountPaid keeps what was received."
    )
    amount_credited: Money = strawberry.field(
        description="Forgiven by credit notes: no longer owed, though never received."
    )
    amount_due: Money = strawberry.field(
        description="total - (amountPaid - amountRefunded) - amountCredited: money refunded "
        "is owed again unless a credit note forgives it; zero once void."
    )
    is_overdue: bool = strawberry.field(
        description="Issued, unpaid and past its due date (UTC), marked overdue yet or not."
    )
    issued_at: datetime | None
    viewed_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    void_reason: str | None
    last_sent_at: datetime | None = strawberry.field(description="When an email last went out.")
    uploaded_pdf: UploadedPdf | None
    created_at: datetime
    updated_at: datetime
    _row: strawberry.Private[models.Invoice]

    @classmethod
    def from_model(cls, invoice: models.Invoice) -> Invoice:
        currency = invoice.currency
        return cls(
            id=strawberry.ID(str(invoice.id)),
            number=invoice.number,
            status=invoice.status,
            source=invoice.source,
            client_id=strawberry.ID(str(invoice.client_id)),
            project_id=strawberry.ID(str(invoice.project_id)) if invoice.project_id else None,
            currency=currency,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            notes=invoice.notes,
            terms=invoice.terms,
            tax_rate=format_rate(invoice.tax_rate),
            discount=_discount(invoice),
            subtotal=_money(invoice.subtotal_minor, currency),
            discount_total=_money(invoice.discount_minor, currency),
            tax=_money(invoice.tax_minor, currency),
            total=_money(invoice.total_minor, currency),
            amount_paid=_money(invoice.amount_paid_minor, currency),
            amount_refunded=_money(invoice.amount_refunded_minor, currency),
            amount_credited=_money(invoice.amount_credited_minor, currency),
            amount_due=_money(settlement.invoice_due(invoice), currency),
            is_overdue=invoice_service.is_overdue(invoice),
            issued_at=invoice.issued_at,
            viewed_at=invoice.viewed_at,
            paid_at=invoice.paid_at,
            voided_at=invoice.voided_at,
            void_reason=invoice.void_reason,
            last_sent_at=invoice.last_sent_at,
            uploaded_pdf=_uploaded_pdf(invoice),
            created_at=invoice.created_at,
            updated_at=invoice.updated_at,
            _row=invoice,
        )

    @strawberry.field
    async def client(self, info: Info) -> Client | None:
        row = await info.context.loaders.client.load(self._row.client_id)
        return Client.from_model(row) if row else None

    @strawberry.field(description="The project it bills, when it bills one.")
    async def project(
        self, info: Info
    ) -> Annotated[Project, strawberry.lazy("settle.schema.project")] | None:
        from settle.schema.project import Project

        if self._row.project_id is None:
            return None
        row = await info.context.loaders.project.load(self._row.project_id)
        return Project.from_model(row) if row else None

    @strawberry.field(description="The lines in their order; batched across a list of invoices.")
    async def line_items(self, info: Info) -> list[InvoiceLine]:
        rows = await info.context.loaders.invoice_lines.load(self._row.id)
        return [InvoiceLine.from_model(row, self._row.currency) for row in rows]

    @strawberry.field(description="The tax per rate, lowest rate first; rates of 0 are left out.")
    async def taxes(self, info: Info) -> list[InvoiceTax]:
        rows = await info.context.loaders.invoice_lines.load(self._row.id)
        totals = invoice_service.totals_of(self._row, rows)
        return [
            InvoiceTax(
                rate=format_rate(tax.rate),
                taxable=_money(tax.taxable_minor, self._row.currency),
                tax=_money(tax.tax_minor, self._row.currency),
            )
            for tax in totals.taxes
        ]

    @strawberry.field(
        description="A signed link to the invoice's PDF (the uploaded one if any, else the "
        "rendered one); null for a draft and until the PDF is rendered."
    )
    async def pdf_url(self, info: Info) -> DownloadUrl | None:
        from settle.resolvers.invoice import invoice_pdf_url

        return await invoice_pdf_url(info, self._row.id)

    @strawberry.field(description="The emails requested for the invoice, newest first.")
    async def deliveries(self, info: Info) -> list[InvoiceDelivery]:
        from settle.resolvers.invoice import invoice_deliveries

        return await invoice_deliveries(info, self._row.id)

    @strawberry.field(
        description="The payments of the invoice (a bulk payment pays part of it), newest first."
    )
    async def payments(
        self, info: Info
    ) -> list[Annotated[Payment, strawberry.lazy("settle.schema.payment")]]:
        from settle.schema.payment import Payment

        rows = await info.context.loaders.invoice_payments.load(self._row.id)
        return [Payment.from_model(row) for row in rows]

    @strawberry.field(
        description="The credit notes forgiving part of it, oldest first; batched across a list "
        "of invoices."
    )
    async def credit_notes(
        self, info: Info
    ) -> list[Annotated[CreditNote, strawberry.lazy("settle.schema.credit_note")]]:
        from settle.schema.credit_note import CreditNote

        rows = await info.context.loaders.invoice_credit_notes.load(self._row.id)
        return [CreditNote.from_model(row) for row in rows]

    @strawberry.field(description="What happened to this invoice, newest first.")
    async def timeline(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Annotated[ActivityEvent, strawberry.lazy("settle.schema.activity")]]:
        from settle.resolvers.invoice import invoice_timeline

        return await invoice_timeline(info, self._row.id, first=first, after=after)


@strawberry.type
class InvoiceLinePayload:
    invoice: Invoice = strawberry.field(description="The invoice with its new totals.")
    line: InvoiceLine

    @classmethod
    def from_models(cls, invoice: models.Invoice, line: models.InvoiceLine) -> InvoiceLinePayload:
        return cls(
            invoice=Invoice.from_model(invoice),
            line=InvoiceLine.from_model(line, invoice.currency),
        )


@strawberry.type(description="A draft that was deleted; its id is all that is left.")
class DeletedInvoice:
    id: strawberry.ID


@strawberry.type(
    description="Where to send the PDF: PUT its bytes to `uploadUrl` before `expiresAt`, "
    "with Content-Type application/pdf."
)
class InvoiceUpload:
    invoice: Invoice
    upload_url: str
    expires_at: datetime


@strawberry.input
class InvoiceDiscountInput:
    kind: DiscountKind  # type: ignore[valid-type]
    value: str = strawberry.field(
        description='A percentage for PERCENT ("10"), an amount in the invoice\'s currency for '
        'AMOUNT ("250.00"); an amount above the subtotal takes the whole subtotal.'
    )


@strawberry.input
class InvoiceLineInput:
    description: str
    quantity: str = strawberry.field(description='Above 0, at most two decimals, e.g. "1.5".')
    unit_price: str = strawberry.field(
        description='Decimal amount in the invoice\'s currency, e.g. "333.33"; 0 or more.'
    )
    tax_rate: str | None = strawberry.field(
        default=None, description=f"{RATE_DESCRIPTION} Null: the invoice's rate applies."
    )
    position: int | None = strawberry.field(
        default=None, description="Order within the invoice; after the last line when omitted."
    )


@strawberry.input(description="Only the fields given change; taxRate null: the invoice's rate.")
class UpdateInvoiceLineInput:
    description: str | None = strawberry.UNSET
    quantity: str | None = strawberry.UNSET
    unit_price: str | None = strawberry.UNSET
    tax_rate: str | None = strawberry.UNSET
    position: int | None = strawberry.UNSET


@strawberry.input
class CreateInvoiceInput:
    client_id: strawberry.ID
    project_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A project of the client; the invoice is then in the project's currency "
        "and due by its payment terms.",
    )
    due_date: date | None = strawberry.field(
        default=None, description="When omitted, set from the payment terms when finalized."
    )
    notes: str | None = None
    terms: str | None = None
    tax_rate: str | None = strawberry.field(
        default=None, description=f"{RATE_DESCRIPTION} The agency's default rate when omitted."
    )
    discount: InvoiceDiscountInput | None = None
    lines: list[InvoiceLineInput] = strawberry.field(default_factory=list)


@strawberry.input(description="Only the fields given change; discount null removes it.")
class UpdateInvoiceInput:
    due_date: date | None = strawberry.UNSET
    notes: str | None = strawberry.UNSET
    terms: str | None = strawberry.UNSET
    tax_rate: str | None = strawberry.field(default=strawberry.UNSET, description=RATE_DESCRIPTION)
    discount: InvoiceDiscountInput | None = strawberry.UNSET


@strawberry.input
class InvoiceFilter:
    status: InvoiceStatus | None = None  # type: ignore[valid-type]
    client_id: strawberry.ID | None = None
    project_id: strawberry.ID | None = None
    from_: date | None = strawberry.field(
        default=None, name="from", description="Issued on or after this date."
    )
    to: date | None = strawberry.field(default=None, description="Issued on or before this date.")
    overdue: bool | None = strawberry.field(
        default=None, description="Issued, unpaid and past due (or, with false, not)."
    )
    currency: str | None = None


@strawberry.input
class InvoiceOrder:
    field: InvoiceOrderField = invoice_service.InvoiceOrderField.CREATED_AT  # type: ignore[valid-type]
    direction: SortDirection = SortDirection.DESC
