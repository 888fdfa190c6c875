"""Payment types: payments, what they pay, refunds, their audit trail, and live status changes."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.scalars import JSON

from settle.core.tenancy import Actor
from settle.models import payment as models
from settle.models.agency import Role
from settle.models.milestone import Milestone as MilestoneRow
from settle.schema.client import Client
from settle.schema.common import CURSOR_DESCRIPTION, Money, SortDirection
from settle.schema.context import Info
from settle.schema.milestone import MilestonePaymentStatus
from settle.services import payment as payment_service
from settle.services import report as report_service

if TYPE_CHECKING:
    from settle.schema.invoice import Invoice
    from settle.schema.milestone import Milestone

PaymentStatus = strawberry.enum(
    models.PaymentStatus,
    description="created → pending (checkout made) → succeeded | failed | cancelled; a "
    "success may be refunded in part (partially_refunded) or in full (refunded). superseded: "
    "a newer payment of the same invoices or milestones replaced it before it took money; "
    "its checkout is closed at the gateway where the gateway allows it.",
)
PaymentProvider = strawberry.enum(
    models.PaymentProvider,
    description="The gateway that collects it; OFFLINE: money received outside the gateways.",
)
OfflinePaymentMethod = strawberry.enum(models.OfflineMethod, name="OfflinePaymentMethod")
RefundStatus = strawberry.enum(
    models.RefundStatus, description="pending until the gateway settles or refuses it."
)


WebhookEventStatus = strawberry.enum(
    report_service.WebhookEventStatus,
    name="WebhookEventStatus",
    description="UNPROCESSED: stored, not yet applied; FAILED: its last processing attempt "
    "raised (lastError), retried while attempts remain; then what processing made of it: "
    "APPLIED (a duplicate capture refunded too), IGNORED (nothing to change), FLAGGED.",
)


@strawberry.enum
class PaymentOrderField(Enum):
    CREATED_AT = "created_at"
    AMOUNT = "amount_minor"


def _money(minor: int, currency: str) -> Money:
    return Money.of(minor, currency)


def _id(value: uuid.UUID | None) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(str(value))


def may_pay(actor: Actor | None) -> bool:
    """Whether the actor may pay what it sees: the client lead, or an owner or admin."""
    return actor is not None and (actor.role.is_manager or actor.role is Role.CLIENT_LEAD)


def is_manager(actor: Actor | None) -> bool:
    return actor is not None and actor.role.is_manager


@strawberry.type(description="What the frontend needs to collect a payment.")
class Checkout:
    provider_order_id: str = strawberry.field(
        description="The gateway's order, payment intent or session id."
    )
    checkout_url: str | None = strawberry.field(
        description="A hosted page to send the payer to (Stripe Checkout, the sandbox)."
    )
    client_secret: str | None = strawberry.field(
        description="For an embedded form (Stripe Elements)."
    )
    public_key: str | None = strawberry.field(
        description="The gateway's publishable key for the embedded form, if it has one."
    )

    @classmethod
    def from_payment(cls, payment: models.Payment) -> Checkout:
        checkout = payment_service.checkout_of(payment)
        return cls(
            provider_order_id=checkout.provider_order_id,
            checkout_url=checkout.checkout_url,
            client_secret=checkout.client_secret,
            public_key=checkout.public_key,
        )


@strawberry.type(description="The part of a payment that pays one invoice, and its milestone.")
class PaymentAllocation:
    invoice_id: strawberry.ID
    milestone_id: strawberry.ID | None
    amount: Money
    amount_refunded: Money = strawberry.field(description="Its share of the refunds so far.")
    _row: strawberry.Private[models.PaymentAllocation]

    @classmethod
    def from_model(cls, row: models.PaymentAllocation, currency: str) -> PaymentAllocation:
        return cls(
            invoice_id=strawberry.ID(str(row.invoice_id)),
            milestone_id=_id(row.milestone_id),
            amount=_money(row.amount_minor, currency),
            amount_refunded=_money(row.amount_refunded_minor, currency),
            _row=row,
        )

    @strawberry.field
    async def invoice(
        self, info: Info
    ) -> Annotated[Invoice, strawberry.lazy("settle.schema.invoice")] | None:
        return await _invoice(info, self._row.invoice_id)

    @strawberry.field
    async def milestone(
        self, info: Info
    ) -> Annotated[Milestone, strawberry.lazy("settle.schema.milestone")] | None:
        return await _milestone(info, self._row.milestone_id)


async def _invoice(info: Info, invoice_id: uuid.UUID) -> Invoice | None:
    from settle.schema.invoice import Invoice

    row = await info.context.loaders.invoice.load(invoice_id)
    return Invoice.from_model(row) if row else None


async def _milestone(info: Info, milestone_id: uuid.UUID | None) -> Milestone | None:
    from settle.schema.milestone import Milestone

    if milestone_id is None:
        return None
    row = await info.context.loaders.milestone.load(milestone_id)
    return Milestone.from_model(row) if row else None


@strawberry.type
class Refund:
    id: strawberry.ID
    amount: Money
    status: RefundStatus  # type: ignore[valid-type]
    reason: str
    provider_refund_id: str | None
    failure_reason: str | None = strawberry.field(description="Why the gateway refused it.")
    created_at: datetime
    settled_at: datetime | None

    @classmethod
    def from_model(cls, refund: models.Refund) -> Refund:
        return cls(
            id=strawberry.ID(str(refund.id)),
            amount=_money(refund.amount_minor, refund.currency),
            status=refund.status,
            reason=refund.reason,
            provider_refund_id=refund.provider_refund_id,
            failure_reason=refund.failure_reason,
            created_at=refund.created_at,
            settled_at=refund.settled_at,
        )


@strawberry.type(description="One append-only entry of a payment's audit trail.")
class PaymentAuditEntry:
    action: str
    source: str = strawberry.field(
        description='"user", a gateway ("stripe", "razorpay", "sandbox"), "reconciliation" or '
        '"system".'
    )
    actor_id: strawberry.ID | None = strawberry.field(description="The user, when a user acted.")
    reason: str | None
    before: JSON = strawberry.field(description="The payment's audited state before.")
    after: JSON = strawberry.field(description="The payment's audited state after.")
    request_id: str | None
    created_at: datetime

    @classmethod
    def from_model(cls, entry: models.PaymentAuditEntry) -> PaymentAuditEntry:
        return cls(
            action=entry.action,
            source=entry.source,
            actor_id=_id(entry.actor_id),
            reason=entry.reason,
            before=JSON(entry.before),
            after=JSON(entry.after),
            request_id=entry.request_id,
            created_at=entry.created_at,
        )


@strawberry.type(description="A verified gateway event matched to a payment.")
class WebhookEvent:
    id: strawberry.ID
    provider: PaymentProvider  # type: ignore[valid-type]
    event_id: str
    event_type: str
    outcome: str | None = strawberry.field(
        description="applied, ignored (nothing to change), flagged, or duplicate (money "
        "captured for something already paid, refunded automatically); null until processed."
    )
    status: WebhookEventStatus  # type: ignore[valid-type]
    payment_id: strawberry.ID | None = strawberry.field(
        description="The payment it was applied to; null until matched."
    )
    attempts: int
    last_error: str | None
    received_at: datetime
    processed_at: datetime | None

    @classmethod
    def from_model(cls, event: models.WebhookEvent) -> WebhookEvent:
        return cls(
            id=strawberry.ID(str(event.id)),
            provider=event.provider,
            event_id=event.event_id,
            event_type=event.event_type,
            outcome=event.outcome,
            status=report_service.webhook_event_status(event),
            payment_id=strawberry.ID(str(event.payment_id)) if event.payment_id else None,
            attempts=event.attempts,
            last_error=event.last_error,
            received_at=event.received_at,
            processed_at=event.processed_at,
        )


@strawberry.type(description="One attempt to collect money, through a gateway or recorded by hand.")
class Payment:
    id: strawberry.ID
    status: PaymentStatus  # type: ignore[valid-type]
    provider: PaymentProvider  # type: ignore[valid-type]
    amount: Money
    amount_refunded: Money
    currency: str
    client_id: strawberry.ID
    project_id: strawberry.ID | None = strawberry.field(
        description="The project paid for, when everything it pays is of one project."
    )
    invoice_id: strawberry.ID | None = strawberry.field(
        description="The invoice paid, when it pays one; see allocations for a bulk payment."
    )
    method: OfflinePaymentMethod | None = strawberry.field(  # type: ignore[valid-type]
        description="How money recorded by hand was received; null for gateway payments."
    )
    reference: str | None = strawberry.field(
        description="The bank reference or transaction hash of money recorded by hand."
    )
    explorer_url: str | None
    succeeded_at: datetime | None
    failed_at: datetime | None
    failure_reason: str | None
    flagged_reason: str | None = strawberry.field(
        description="Why a gateway event was not applied (an amount or currency that did not "
        "match): for a person to look at."
    )
    auto_refund_reason: str | None = strawberry.field(
        description="Why Settle refunded this payment in full by itself: its money was "
        "captured for something already paid (a duplicate payment). It was never applied; "
        "see refunds for the refund."
    )
    superseded_by_id: strawberry.ID | None = strawberry.field(
        description="The newer payment that replaced this one (status SUPERSEDED), if one did."
    )
    created_at: datetime
    _row: strawberry.Private[models.Payment]

    @classmethod
    def from_model(cls, payment: models.Payment) -> Payment:
        currency = payment.currency
        return cls(
            id=strawberry.ID(str(payment.id)),
            status=payment.status,
            provider=payment.provider,
            amount=_money(payment.amount_minor, currency),
            amount_refunded=_money(payment.amount_refunded_minor, currency),
            currency=currency,
            client_id=strawberry.ID(str(payment.client_id)),
            project_id=_id(payment.project_id),
            invoice_id=_id(payment.invoice_id),
            method=payment.method,
            reference=payment.reference,
            explorer_url=payment.explorer_url,
            succeeded_at=payment.succeeded_at,
            failed_at=payment.failed_at,
            failure_reason=payment.failure_reason,
            flagged_reason=payment.flagged_reason,
            auto_refund_reason=payment.auto_refund_reason,
            superseded_by_id=_id(payment.superseded_by_id),
            created_at=payment.created_at,
            _row=payment,
        )

    @strawberry.field
    async def client(self, info: Info) -> Client | None:
        row = await info.context.loaders.client.load(self._row.client_id)
        return Client.from_model(row) if row else None

    @strawberry.field(
        description="How to pay it, while it is created or pending and has a checkout; null "
        "otherwise, and for anyone but the client lead, owners and admins (who may pay)."
    )
    def checkout(self, info: Info) -> Checkout | None:
        row = self._row
        if not may_pay(info.context.actor) or row.provider_order_id is None:
            return None
        if row.status not in payment_service.OPEN_PAYMENT_STATUSES:
            return None
        return Checkout.from_payment(row)

    @strawberry.field(description="What it pays: per invoice, and per milestone of a bulk payment.")
    async def allocations(self, info: Info) -> list[PaymentAllocation]:
        rows = await info.context.loaders.payment_allocations.load(self._row.id)
        return [PaymentAllocation.from_model(row, self._row.currency) for row in rows]

    @strawberry.field(description="Its refunds, oldest first.")
    async def refunds(self, info: Info) -> list[Refund]:
        rows = await info.context.loaders.payment_refunds.load(self._row.id)
        return [Refund.from_model(row) for row in rows]

    @strawberry.field(
        description="Every action on it, oldest first: owners and admins only; null for "
        "anyone else (null is not an empty trail)."
    )
    async def audit_log(self, info: Info) -> list[PaymentAuditEntry] | None:
        if not is_manager(info.context.actor):
            return None
        rows = await info.context.loaders.payment_audit_log.load(self._row.id)
        return [PaymentAuditEntry.from_model(row) for row in rows]

    @strawberry.field(
        description="The gateway events matched to it, oldest first: owners and admins only; "
        "null for anyone else."
    )
    async def webhook_events(self, info: Info) -> list[WebhookEvent] | None:
        if not is_manager(info.context.actor):
            return None
        rows = await info.context.loaders.payment_webhook_events.load(self._row.id)
        return [WebhookEvent.from_model(row) for row in rows]


@strawberry.type(description="One thing a payment pays: an invoice, and its milestone if any.")
class PaymentItem:
    amount: Money
    _invoice_id: strawberry.Private[uuid.UUID]
    _milestone_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, row: models.PaymentAllocation, currency: str) -> PaymentItem:
        return cls(
            amount=_money(row.amount_minor, currency),
            _invoice_id=row.invoice_id,
            _milestone_id=row.milestone_id,
        )

    @strawberry.field(description="The milestone paid; null for an invoice paid as a whole.")
    async def milestone(
        self, info: Info
    ) -> Annotated[Milestone, strawberry.lazy("settle.schema.milestone")] | None:
        return await _milestone(info, self._milestone_id)

    @strawberry.field
    async def invoice(
        self, info: Info
    ) -> Annotated[Invoice, strawberry.lazy("settle.schema.invoice")] | None:
        return await _invoice(info, self._invoice_id)


@strawberry.type(description="A payment ready to collect: its checkout, and what it pays.")
class PaymentCheckout:
    payment: Payment
    checkout: Checkout | None = strawberry.field(
        description="Null only when the payment was closed before its checkout was made."
    )
    resumed: bool = strawberry.field(
        description="True when an earlier request started this payment: its checkout is "
        "returned again rather than a second payment made."
    )
    items: list[PaymentItem] = strawberry.field(
        description="What it pays, in the order the milestones were given."
    )


@strawberry.type
class RefundPayload:
    payment: Payment = strawberry.field(description="The payment with the refund requested.")
    refund: Refund = strawberry.field(
        description="Pending until the gateway settles it (an offline payment's settles at once)."
    )


@strawberry.type(description="The advance or the balance milestone of a project's payment terms.")
class PaymentStage:
    milestone_id: strawberry.ID
    status: MilestonePaymentStatus  # type: ignore[valid-type]
    amount: Money
    paid_at: datetime | None

    @classmethod
    def from_model(cls, milestone: MilestoneRow | None) -> PaymentStage | None:
        if milestone is None:
            return None
        return cls(
            milestone_id=strawberry.ID(str(milestone.id)),
            status=milestone.payment_status,
            amount=_money(milestone.amount_minor, milestone.currency),
            paid_at=milestone.paid_at,
        )


@strawberry.type(description="The milestone to pay next.")
class PaymentDue:
    milestone_id: strawberry.ID
    title: str
    amount: Money
    due_date: date | None

    @classmethod
    def from_model(cls, milestone: MilestoneRow | None) -> PaymentDue | None:
        if milestone is None:
            return None
        return cls(
            milestone_id=strawberry.ID(str(milestone.id)),
            title=milestone.title,
            amount=_money(milestone.amount_minor, milestone.currency),
            due_date=milestone.due_date,
        )


@strawberry.type(
    description="A project's contract in money, from its milestones that are not cancelled, "
    "in the project's currency."
)
class ProjectPaymentStatus:
    project_id: strawberry.ID
    currency: str
    total: Money = strawberry.field(description="The milestones' amounts.")
    paid: Money = strawberry.field(
        description="Received for the paid milestones (their invoices' tax included), less "
        "what was refunded of it."
    )
    outstanding: Money = strawberry.field(
        description="What is left of each milestone's amount, added up: total - paid, except "
        "that tax paid for one milestone never counts against another's amount."
    )
    refunded: Money
    advance: PaymentStage | None = strawberry.field(description="Null without payment terms.")
    balance: PaymentStage | None = strawberry.field(description="Null without payment terms.")
    next_due: PaymentDue | None = strawberry.field(
        description="The unpaid milestone due first; without due dates, the first unpaid one "
        "in contract order; null when everything is paid. A fully refunded milestone is "
        "unpaid again."
    )

    @classmethod
    def from_value(cls, status: payment_service.ProjectPaymentStatus) -> ProjectPaymentStatus:
        currency = status.currency
        return cls(
            project_id=strawberry.ID(str(status.project_id)),
            currency=currency,
            total=_money(status.total_minor, currency),
            paid=_money(status.paid_minor, currency),
            outstanding=_money(status.outstanding_minor, currency),
            refunded=_money(status.refunded_minor, currency),
            advance=PaymentStage.from_model(status.advance),
            balance=PaymentStage.from_model(status.balance),
            next_due=PaymentDue.from_model(status.next_due),
        )


@strawberry.type(description="A payment's status or refunded amount changed.")
class PaymentStatusChanged:
    payment_id: strawberry.ID
    status: PaymentStatus  # type: ignore[valid-type]
    provider: PaymentProvider  # type: ignore[valid-type]
    amount: Money
    amount_refunded: Money
    project_id: strawberry.ID | None
    invoice_ids: list[strawberry.ID]
    milestone_ids: list[strawberry.ID] = strawberry.field(
        description="The milestones it pays; empty for a payment of whole invoices."
    )
    changed_at: datetime
    cursor: str = strawberry.field(description=CURSOR_DESCRIPTION)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> PaymentStatusChanged:
        """Build from the bus form (services.payment's announcement) without a query."""
        currency = message["currency"]
        return cls(
            payment_id=strawberry.ID(message["paymentId"]),
            status=models.PaymentStatus(message["status"]),
            provider=models.PaymentProvider(message["provider"]),
            amount=_money(message["amountMinor"], currency),
            amount_refunded=_money(message["amountRefundedMinor"], currency),
            project_id=strawberry.ID(message["projectId"]) if message.get("projectId") else None,
            invoice_ids=[strawberry.ID(i) for i in message.get("invoiceIds") or []],
            milestone_ids=[strawberry.ID(i) for i in message.get("milestoneIds") or []],
            changed_at=datetime.fromisoformat(message["changedAt"]),
            cursor=message["cursor"],
        )


@strawberry.input
class PaymentFilter:
    status: PaymentStatus | None = None  # type: ignore[valid-type]
    provider: PaymentProvider | None = None  # type: ignore[valid-type]
    client_id: strawberry.ID | None = None
    project_id: strawberry.ID | None = None
    from_: datetime | None = strawberry.field(
        default=None, name="from", description="Created at or after this time."
    )
    to: datetime | None = strawberry.field(
        default=None, description="Created at or before this time."
    )
    currency: str | None = strawberry.field(
        default=None, description="ISO 4217 code; required with minAmount or maxAmount."
    )
    min_amount: str | None = strawberry.field(
        default=None, description='At least this decimal amount in `currency`, e.g. "100.00".'
    )
    max_amount: str | None = strawberry.field(
        default=None, description="At most this decimal amount in `currency`."
    )


@strawberry.input
class WebhookEventFilter:
    provider: PaymentProvider | None = None  # type: ignore[valid-type]
    status: WebhookEventStatus | None = None  # type: ignore[valid-type]
    from_: datetime | None = strawberry.field(
        default=None, name="from", description="Received at or after this time."
    )
    to: datetime | None = strawberry.field(
        default=None, description="Received at or before this time."
    )


@strawberry.input
class PaymentOrder:
    field: PaymentOrderField = PaymentOrderField.CREATED_AT
    direction: SortDirection = SortDirection.DESC
