"""Payments: starting them, applying what gateways report exactly once, refunds and overrides.

The life of a gateway payment::

    created ──checkout──► pending ──► succeeded ──► partially_refunded ──► refunded
       │                     │
       └──────────┬──────────┴──► failed | cancelled (a late success still wins)

Starting one (``pay_milestones`` / ``pay_invoice``) writes the Payment and what
it pays (``PaymentAllocation`` rows) in one short transaction under the row
locks of what is paid, so concurrent requests find one payment; the gateway is
then called under the payment's own row lock, so it is asked once per payment.

A gateway's word arrives as a ``GatewayEvent`` (a webhook, a client-side
confirmation, or reconciliation) and is applied by ``apply_event`` under the
payment's row lock. The state only moves forward: a late ``failed`` never
un-pays, a refund reported before the success it refunds still ends refunded.
The money's effects (invoices paid, milestones paid) happen once, the first
time the payment succeeds, marked by ``succeeded_at``. Every change writes an
append-only audit entry and a ``PaymentStatusChanged`` event after commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.queryset import QuerySet

from settle.core import clock, validation
from settle.core.db import as_uuid, get_visible, lock_rows
from settle.core.errors import (
    AppError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.core.logging import request_id_var
from settle.core.money import Money, format_money, normalize_currency
from settle.core.outbox import emit_event, send_job
from settle.core.pagination import Ordering, Page, paginate
from settle.core.settings import get_settings
from settle.core.tenancy import MANAGERS, Actor, scoped
from settle.gateways import GatewayNotConfiguredError, get_gateway
from settle.gateways.base import (
    Checkout,
    EventKind,
    GatewayError,
    GatewayEvent,
    PaymentGateway,
    PaymentRequest,
)
from settle.models.agency import Agency, Role
from settle.models.client import Client
from settle.models.invoice import Invoice, InvoiceLine, InvoiceStatus
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.models.payment import (
    OfflineMethod,
    Payment,
    PaymentAllocation,
    PaymentAuditEntry,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from settle.models.project import Project
from settle.services import activity, live_status, settlement
from settle.services import invoice as invoice_service
from settle.services import notification as notification_service
from settle.services.invoice_totals import allocate
from settle.subscriptions import channels

P = PaymentStatus

# Per payment, before any gateway call (DESIGN.md: Money). A currency without a
# ceiling here is bounded by the gateway's own limits.
MAX_AMOUNT_MINOR: dict[str, int] = {"INR": 10_000_000_00, "USD": 100_000_00}
OPEN_PAYMENT_STATUSES = frozenset({P.CREATED, P.PENDING})
# Not (yet) holding money: a newer payment of the same things replaces these. A failed or
# cancelled checkout may still be paid at the gateway (a card retried on the same intent).
SUPERSEDABLE_STATUSES = frozenset({P.CREATED, P.PENDING, P.FAILED, P.CANCELLED})
DUPLICATE_REFUND_REASON = "Duplicate payment"
SUCCESS_STATUSES = frozenset({P.SUCCEEDED, P.PARTIALLY_REFUNDED, P.REFUNDED})
REFERENCE_MAX_LENGTH = 255
REASON_MAX_LENGTH = 2_000


class AlreadyPaidError(ConflictError):
    code = "ALREADY_PAID"


class PaymentLimitError(ValidationError):
    """The amount is above Settle's ceiling or below the gateway's minimum."""


class GatewayUnavailableError(AppError):
    """The gateway did not answer; nothing was charged and the call may be repeated."""

    code = "GATEWAY_UNAVAILABLE"


class PaymentNotFoundYetError(Exception):
    """An event for a payment this process cannot see (yet): retried with backoff."""


# --- reading -------------------------------------------------------------------------


def _payments(actor: Actor) -> QuerySet[Payment]:
    return scoped(Payment, actor)


def visible_payments(actor: Actor) -> QuerySet[Payment]:
    """Every payment the actor may see, exactly as the payments query shows them (exports)."""
    return _payments(actor)


async def get_payment(actor: Actor, payment_id: uuid.UUID) -> Payment:
    """A payment the actor may see, or NotFoundError (also for other agencies' ids)."""
    return await get_visible(_payments(actor), payment_id, "Payment")


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    status: PaymentStatus | None = None
    provider: PaymentProvider | None = None
    client_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_amount_minor: int | None = None
    max_amount_minor: int | None = None
    # Amounts compare in minor units, which mean something only within one currency.
    currency: str | None = None


PAYMENT_ORDER_FIELDS = ("created_at", "amount_minor")


async def list_payments(
    actor: Actor,
    flt: PaymentFilter,
    *,
    first: int | None,
    after: str | None,
    order_by: str = "created_at",
    descending: bool = True,
) -> Page[Payment]:
    """The payments the actor may see, newest first unless ordered otherwise."""
    if order_by not in PAYMENT_ORDER_FIELDS:
        raise ValidationError("orderBy", f"Cannot order payments by {order_by}")
    qs = _payments(actor)
    if flt.status is not None:
        qs = qs.filter(status=flt.status)
    if flt.provider is not None:
        qs = qs.filter(provider=flt.provider)
    if flt.client_id is not None:
        qs = qs.filter(client_id=flt.client_id)
    if flt.project_id is not None:
        qs = qs.filter(project_id=flt.project_id)
    if flt.since is not None:
        qs = qs.filter(created_at__gte=flt.since)
    if flt.until is not None:
        qs = qs.filter(created_at__lte=flt.until)
    if flt.min_amount_minor is not None:
        qs = qs.filter(amount_minor__gte=flt.min_amount_minor)
    if flt.max_amount_minor is not None:
        qs = qs.filter(amount_minor__lte=flt.max_amount_minor)
    if flt.currency is not None:
        qs = qs.filter(currency=normalize_currency(flt.currency, "filter.currency"))
    return await paginate(qs, first=first, after=after, ordering=Ordering(order_by, descending))


async def allocations(actor: Actor, payment_id: uuid.UUID) -> list[PaymentAllocation]:
    payment = await get_payment(actor, payment_id)
    return await PaymentAllocation.filter(payment_id=payment.id).order_by("created_at", "id")


async def audit_log(actor: Actor, payment_id: uuid.UUID) -> list[PaymentAuditEntry]:
    """A visible payment's audit entries, oldest first (owners and admins)."""
    payment = await get_payment(actor, payment_id)
    actor.require(*MANAGERS)
    return await PaymentAuditEntry.filter(payment_id=payment.id).order_by("created_at", "id")


async def refunds(actor: Actor, payment_id: uuid.UUID) -> list[Refund]:
    payment = await get_payment(actor, payment_id)
    return await Refund.filter(payment_id=payment.id).order_by("created_at", "id")


async def payments_for_invoices(
    actor: Actor, invoice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Payment]]:
    """Each invoice's payments, newest first, in two queries (for loaders)."""
    rows = await PaymentAllocation.filter(
        agency_id=actor.agency_id, invoice_id__in=list(invoice_ids)
    ).values_list("invoice_id", "payment_id")
    payments = {
        p.id: p for p in await _payments(actor).filter(id__in=list({pid for _, pid in rows}))
    }
    grouped: dict[uuid.UUID, list[Payment]] = {}
    for invoice_id, payment_id in rows:
        if payment_id in payments:
            grouped.setdefault(invoice_id, []).append(payments[payment_id])
    for found in grouped.values():
        found.sort(key=lambda p: p.created_at, reverse=True)
    return grouped


# --- the audit trail and announcements -------------------------------------------------


def snapshot(payment: Payment) -> dict[str, Any]:
    """The audited state of a payment."""
    return {
        "status": payment.status.value,
        "amount": Money(payment.amount_minor, payment.currency).format_amount(),
        "amount_refunded": Money(payment.amount_refunded_minor, payment.currency).format_amount(),
        "currency": payment.currency,
        "provider_order_id": payment.provider_order_id,
        "provider_payment_id": payment.provider_payment_id,
        "flagged_reason": payment.flagged_reason,
    }


async def audit(
    payment: Payment,
    action: str,
    *,
    before: dict[str, Any],
    actor: Actor | None = None,
    source: str | None = None,
    reason: str | None = None,
    webhook_event_id: uuid.UUID | None = None,
) -> None:
    """Append an audit entry: who (a user, or which gateway), what, before, after, why."""
    await PaymentAuditEntry.create(
        agency_id=payment.agency_id,
        payment_id=payment.id,
        actor_id=actor.user_id if actor else None,
        source=source or ("user" if actor else "system"),
        action=action,
        before=before,
        after=snapshot(payment),
        reason=reason,
        request_id=request_id_var.get(),
        webhook_event_id=webhook_event_id,
        created_at=clock.now(),
    )


async def _announce(payment: Payment, *, before: dict[str, Any] | None = None) -> None:
    """Publish PaymentStatusChanged on the agency's payments channel after commit.

    With ``before`` (a ``snapshot``), only when the status or the refunded amount
    changed: subscribers hear of changes, not of requests that changed nothing yet.
    """
    if before is not None:
        after = snapshot(payment)
        if all(before.get(key) == after[key] for key in ("status", "amount_refunded")):
            return
    allocations = await PaymentAllocation.filter(payment_id=payment.id).values_list(
        "invoice_id", "milestone_id"
    )
    invoice_ids = [invoice_id for invoice_id, _ in allocations]
    milestone_ids = [milestone_id for _, milestone_id in allocations if milestone_id]
    await emit_event(
        channels.payments(payment.agency_id),
        {
            "paymentId": str(payment.id),
            "agencyId": str(payment.agency_id),
            "clientId": str(payment.client_id),
            "projectId": str(payment.project_id) if payment.project_id else None,
            "invoiceIds": sorted({str(i) for i in invoice_ids}),
            "milestoneIds": sorted({str(i) for i in milestone_ids}),
            "status": payment.status.value,
            "provider": payment.provider.value,
            "amountMinor": payment.amount_minor,
            "amountRefundedMinor": payment.amount_refunded_minor,
            "currency": payment.currency,
            "changedAt": clock.now().isoformat(),
        },
    )


async def _record(
    actor: Actor | None, payment: Payment, verb: str, summary: str, changes: dict[str, Any]
) -> None:
    await activity.record(
        actor,
        agency_id=payment.agency_id,
        client_id=payment.client_id,
        entity_type="payment",
        entity_id=payment.id,
        verb=verb,
        summary=summary,
        changes=changes,
    )


# --- limits ------------------------------------------------------------------------------


def check_limits(amount: Money, gateway: PaymentGateway | None) -> None:
    """Settle's ceiling per payment and the gateway's minimum, before any gateway call."""
    ceiling = MAX_AMOUNT_MINOR.get(amount.currency)
    if ceiling is not None and amount.minor_units > ceiling:
        raise PaymentLimitError(
            "amount",
            f"A payment is at most {format_money(Money(ceiling, amount.currency))}",
            code="AMOUNT_TOO_LARGE",
        )
    minimum = gateway.minimums.get(amount.currency, 1) if gateway is not None else 1
    if amount.minor_units < minimum:
        raise PaymentLimitError(
            "amount",
            f"A payment is at least {format_money(Money(minimum, amount.currency))}",
            code="AMOUNT_TOO_SMALL",
        )


# --- starting a payment ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MilestoneItem:
    milestone: Milestone
    invoice: Invoice
    amount_minor: int


@dataclass(frozen=True, slots=True)
class PaymentStart:
    """A payment ready to collect: its checkout, and what it pays for."""

    payment: Payment
    checkout: Checkout
    items: list[MilestoneItem]
    # True when an earlier request already started this payment (its checkout is returned).
    resumed: bool


def _require_payer(actor: Actor) -> None:
    """The client lead pays; owners and admins may start a payment on the client's behalf."""
    if actor.role not in (*MANAGERS, Role.CLIENT_LEAD):
        raise PermissionDeniedError("Only the client lead, an owner or an admin starts payments")


async def provider_for(
    agency_id: uuid.UUID, currency: str, provider: PaymentProvider | None
) -> PaymentProvider:
    """The gateway: the one asked for, else the agency's for the currency, else the default."""
    if provider is not None:
        if provider is PaymentProvider.OFFLINE:
            raise ValidationError(
                "provider", "Offline payments are recorded with recordOfflinePayment"
            )
        return provider
    agency = await Agency.get(id=agency_id)
    chosen = (agency.payment_providers or {}).get(
        currency
    ) or get_settings().default_payment_provider
    try:
        return PaymentProvider(chosen)
    except ValueError:
        raise ValidationError("provider", f"Unknown payment provider {chosen}") from None


def gateway_for(provider: PaymentProvider) -> PaymentGateway:
    """The gateway of a provider; PROVIDER_NOT_CONFIGURED as a typed error when it is not."""
    try:
        return get_gateway(provider)
    except GatewayNotConfiguredError as exc:
        raise ValidationError("provider", str(exc), code="PROVIDER_NOT_CONFIGURED") from None


async def _open_payment(allocation_filter: dict[str, Any]) -> Payment | None:
    """A created or pending payment already covering what is being paid."""
    payment_ids = await PaymentAllocation.filter(**allocation_filter).values_list(
        "payment_id", flat=True
    )
    if not payment_ids:
        return None
    return (
        await Payment.filter(id__in=list(payment_ids), status__in=list(OPEN_PAYMENT_STATUSES))
        .order_by("-created_at")
        .first()
    )


async def prepare_milestone_payment(
    actor: Actor, milestone_ids: Sequence[uuid.UUID], provider: PaymentProvider | None
) -> tuple[Payment, bool]:
    """Write (or find) the payment of approved milestones; the boundary commits it.

    The rule for invoices: each milestone is paid on the invoice its approval
    issued. Milestones not invoiced yet are put together on one new invoice,
    issued on the spot. Returns the payment and whether it already existed.
    """
    _require_payer(actor)
    milestones = await invoice_service.lock_milestones(actor, milestone_ids, most=100)
    ids = [m.id for m in milestones]
    for m in milestones:
        if m.status == MilestoneStatus.PAID:
            raise AlreadyPaidError(f"Milestone {m.title} is already paid")
        if m.status != MilestoneStatus.APPROVED:
            raise ValidationError(
                "milestoneIds",
                f"Milestone {m.title} is {m.status.value}: only approved milestones are paid",
                code="NOT_PAYABLE",
            )
    # A payment of a whole invoice (payInvoice) pays the milestones it bills as well.
    invoiced = [m.invoice_id for m in milestones if m.invoice_id is not None]
    existing = await _open_payment({"milestone_id__in": ids}) or await _open_payment(
        {"invoice_id__in": invoiced, "milestone_id__isnull": True}
    )
    if existing is not None:
        if not await _covers_exactly(existing, ids):
            # Resuming it would leave some of what was asked for unpaid without a word.
            raise ConflictError(
                "Some of these milestones are already in a payment under way; pay or cancel "
                "that one first, or pay the same milestones together"
            )
        return existing, True
    currency = milestones[0].currency
    chosen = await provider_for(actor.agency_id, currency, provider)
    gateway = gateway_for(chosen)
    await _invoice_uninvoiced(milestones)
    items = await _milestone_items(milestones)
    total = sum(item.amount_minor for item in items)
    if total <= 0:
        raise AlreadyPaidError("Nothing is left to pay on these milestones")
    check_limits(Money(total, currency), gateway)
    project_ids = {m.project_id for m in milestones}
    invoice_ids = {item.invoice.id for item in items}
    payment_id = uuid.uuid4()
    await supersede_overlapping(
        payment_id, {(item.invoice.id, item.milestone.id) for item in items}, actor=actor
    )
    payment = await Payment.create(
        id=payment_id,
        agency_id=actor.agency_id,
        client_id=milestones[0].client_id,
        project_id=next(iter(project_ids)) if len(project_ids) == 1 else None,
        invoice_id=next(iter(invoice_ids)) if len(invoice_ids) == 1 else None,
        provider=chosen,
        amount_minor=total,
        currency=currency,
        created_by_id=actor.user_id,
    )
    await PaymentAllocation.bulk_create(
        [
            PaymentAllocation(
                agency_id=payment.agency_id,
                payment_id=payment.id,
                invoice_id=item.invoice.id,
                milestone_id=item.milestone.id,
                amount_minor=item.amount_minor,
            )
            for item in items
        ]
    )
    processing = await Milestone.filter(id__in=ids)
    await Milestone.filter(id__in=ids).update(payment_status=MilestonePaymentStatus.PROCESSING)
    await live_status.milestones_changed(processing)
    await _started(actor, payment, f"{len(items)} milestone(s)")
    return payment, False


async def _invoice_uninvoiced(milestones: list[Milestone]) -> None:
    """Issue one invoice for the milestones that have none yet (the rule above)."""
    waiting = [m for m in milestones if m.invoice_id is None]
    if not waiting:
        return
    invoice = await invoice_service.issue_for_milestones(waiting)
    for m in waiting:
        m.invoice_id = invoice.id


async def _milestone_items(milestones: list[Milestone]) -> list[MilestoneItem]:
    invoices = {i.id: i for i in await Invoice.filter(id__in=[m.invoice_id for m in milestones])}
    lines = {
        line.milestone_id: line
        for line in await InvoiceLine.filter(
            invoice_id__in=list(invoices), milestone_id__in=[m.id for m in milestones]
        )
    }
    items = []
    for m in milestones:
        invoice = invoices[m.invoice_id] if m.invoice_id else None
        line = lines.get(m.id)
        if invoice is None or line is None:
            raise ConflictError(f"Milestone {m.title} has no invoice line to pay")
        if invoice.status not in invoice_service.OPEN_STATUSES:
            raise ConflictError(
                f"Milestone {m.title}'s invoice is {invoice.status.value} and cannot be paid"
            )
        owed = min(settlement.milestone_due(m, line), settlement.invoice_due(invoice))
        items.append(MilestoneItem(m, invoice, owed))
    return items


async def _covers_exactly(payment: Payment, milestone_ids: list[uuid.UUID]) -> bool:
    """Whether an open payment pays exactly these milestones (itself, or through its invoice)."""
    rows = await PaymentAllocation.filter(payment_id=payment.id)
    covered = {row.milestone_id for row in rows if row.milestone_id is not None}
    whole_invoices = [row.invoice_id for row in rows if row.milestone_id is None]
    if whole_invoices:
        lines = await InvoiceLine.filter(invoice_id__in=whole_invoices, milestone_id__isnull=False)
        covered |= {line.milestone_id for line in lines if line.milestone_id is not None}
    return covered == set(milestone_ids)


async def prepare_invoice_payment(
    actor: Actor | None, invoice_id: uuid.UUID, provider: PaymentProvider | None
) -> tuple[Payment, bool]:
    """Write (or find) the payment of an invoice's outstanding amount.

    ``actor`` None: the holder of the invoice's signed payment link, which is the
    permission itself (``settle.services.payment_link``).
    """
    if actor is not None:
        _require_payer(actor)
    invoices = scoped(Invoice, actor) if actor is not None else Invoice.all()
    invoice = await lock_rows(
        invoices.filter(id=invoice_id).exclude(status=InvoiceStatus.DRAFT)
    ).first()
    if invoice is None:
        raise NotFoundError("Invoice", invoice_id)
    if invoice.status == InvoiceStatus.PAID:
        raise AlreadyPaidError(f"{invoice_service.label(invoice)} is already paid")
    if invoice.status not in invoice_service.OPEN_STATUSES:
        raise InvalidTransitionError("Invoice", invoice.status.value, "paid")
    existing = await _open_payment({"invoice_id": invoice.id})
    if existing is not None:
        return existing, True
    chosen = await provider_for(invoice.agency_id, invoice.currency, provider)
    gateway = gateway_for(chosen)
    owed = settlement.invoice_due(invoice)
    check_limits(Money(owed, invoice.currency), gateway)
    payment_id = uuid.uuid4()
    await supersede_overlapping(payment_id, {(invoice.id, None)}, actor=actor)
    payment = await Payment.create(
        id=payment_id,
        agency_id=invoice.agency_id,
        client_id=invoice.client_id,
        project_id=invoice.project_id,
        invoice_id=invoice.id,
        provider=chosen,
        amount_minor=owed,
        currency=invoice.currency,
        created_by_id=actor.user_id if actor else None,
    )
    await PaymentAllocation.create(
        agency_id=invoice.agency_id, payment_id=payment.id, invoice_id=invoice.id, amount_minor=owed
    )
    await _started(actor, payment, invoice_service.label(invoice))
    return payment, False


async def _started(actor: Actor | None, payment: Payment, what: str) -> None:
    await audit(
        payment, "created", before={}, actor=actor, source=None if actor else "payment_link"
    )
    who = actor.name if actor else "the invoice's payment link"
    await _record(
        actor,
        payment,
        "created",
        f"Payment of {format_money(Money(payment.amount_minor, payment.currency))} started "
        f"by {who} for {what} ({payment.provider.value})",
        activity.snapshot(
            {
                "amount": Money(payment.amount_minor, payment.currency).format_amount(),
                "currency": payment.currency,
                "provider": payment.provider,
            }
        ),
    )
    await _announce(payment)


async def ensure_checkout(
    payment_id: uuid.UUID, *, description: str, hosted: bool = False
) -> Payment:
    """Ask the gateway for the payment's checkout once, under the payment's row lock.

    Racing requests queue on the lock and find the checkout the first stored.
    GatewayUnavailableError when the gateway does not answer (nothing is stored;
    the same call may be repeated, and the gateway's idempotency key makes it safe).
    """
    payment = await lock_rows(Payment.filter(id=payment_id)).get()
    if payment.provider_order_id is not None or payment.status not in OPEN_PAYMENT_STATUSES:
        return payment
    gateway = gateway_for(payment.provider)
    client = await Client.get(id=payment.client_id)
    primary = await invoice_service.primary_contact_email(client.id)
    try:
        checkout = await gateway.create_payment(
            PaymentRequest(
                payment_id=str(payment.id),
                amount_minor=payment.amount_minor,
                currency=payment.currency,
                description=description[:200],
                customer_email=primary or client.email,
                customer_name=client.name,
                return_url=get_settings().public_base_url,
                metadata={
                    "settle_payment_id": str(payment.id),
                    "agency_id": str(payment.agency_id),
                },
                hosted=hosted,
            )
        )
    except GatewayError as exc:
        raise GatewayUnavailableError(
            f"The {payment.provider.value} gateway did not take the payment: {exc}"
        ) from exc
    before = snapshot(payment)
    payment.provider_order_id = checkout.provider_order_id
    payment.checkout_url = checkout.checkout_url
    payment.client_secret = checkout.client_secret
    payment.status = P.PENDING
    await payment.save(
        update_fields=["provider_order_id", "checkout_url", "client_secret", "status", "updated_at"]
    )
    await audit(payment, "checkout_created", before=before, source=payment.provider.value)
    await _announce(payment)
    return payment


def checkout_of(payment: Payment) -> Checkout:
    """The stored checkout of a started payment."""
    public_key = None
    settings = get_settings()
    if payment.provider is PaymentProvider.RAZORPAY:
        public_key = settings.razorpay_key_id
    elif payment.provider is PaymentProvider.STRIPE:
        public_key = settings.stripe_publishable_key
    return Checkout(
        provider_order_id=payment.provider_order_id or "",
        checkout_url=payment.checkout_url,
        client_secret=payment.client_secret,
        public_key=public_key,
    )


# --- applying what the gateway says --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    payment: Payment | None
    outcome: str  # applied | ignored | flagged


async def find_payment_for(event: GatewayEvent) -> Payment | None:
    """The payment an event is about: by Settle's id, the order id, or the payment id."""
    qs = Payment.filter(provider=event.provider)
    if event.payment_id:
        try:
            found = await qs.filter(id=uuid.UUID(event.payment_id)).first()
        except ValueError:
            found = None
        if found:
            return found
    if event.provider_order_id:
        found = await qs.filter(provider_order_id=event.provider_order_id).first()
        if found:
            return found
    if event.provider_payment_id:
        return await qs.filter(provider_payment_id=event.provider_payment_id).first()
    return None


async def apply_event(
    event: GatewayEvent, *, webhook_event_id: uuid.UUID | None = None, source: str | None = None
) -> Applied:
    """Apply a verified gateway event to its payment, once, under the payment's row lock.

    PaymentNotFoundYetError when no payment matches (yet): the caller retries.
    """
    if event.kind is EventKind.OTHER:
        return Applied(None, "ignored")
    found = await find_payment_for(event)
    if found is None:
        raise PaymentNotFoundYetError(f"No {event.provider.value} payment for {event.event_id}")
    payment = await lock_rows(Payment.filter(id=found.id)).get()
    source = source or event.provider.value
    before = snapshot(payment)
    if event.kind in (EventKind.REFUND_SUCCEEDED, EventKind.REFUND_FAILED):
        outcome = await _apply_refund_event(payment, event)
    elif event.kind is EventKind.PAYMENT_SUCCEEDED:
        outcome = await _apply_success(payment, event)
    elif event.kind in (EventKind.PAYMENT_FAILED, EventKind.PAYMENT_CANCELLED):
        outcome = await _apply_failure(payment, event)
    else:
        outcome = await _apply_pending(payment)
    if outcome != "ignored":
        await audit(
            payment,
            event.kind.value if outcome == "applied" else f"{event.kind.value}_{outcome}",
            before=before,
            source=source,
            reason=payment.flagged_reason if outcome == "flagged" else None,
            webhook_event_id=webhook_event_id,
        )
        await _announce(payment, before=before)
    return Applied(payment, outcome)


async def _apply_pending(payment: Payment) -> str:
    if payment.status is not P.CREATED:
        return "ignored"
    payment.status = P.PENDING
    await payment.save(update_fields=["status", "updated_at"])
    return "applied"


def _mismatch(payment: Payment, event: GatewayEvent) -> str | None:
    if event.currency is not None and event.currency.upper() != payment.currency:
        return f"currency {event.currency.upper()} instead of {payment.currency}"
    if event.amount_minor is not None and event.amount_minor != payment.amount_minor:
        shown = Money(event.amount_minor, payment.currency).format_amount()
        expected = Money(payment.amount_minor, payment.currency).format_amount()
        return f"amount {shown} instead of {expected}"
    return None


async def _flag(payment: Payment, reason: str) -> str:
    payment.flagged_reason = reason[:2000]
    await payment.save(update_fields=["flagged_reason", "updated_at"])
    await _record(
        None,
        payment,
        "flagged",
        f"Payment flagged for review: {reason}",
        {"flagged_reason": {"before": None, "after": reason}},
    )
    return "flagged"


async def _apply_success(payment: Payment, event: GatewayEvent) -> str:
    """created, pending, failed or cancelled → succeeded; the money's effects happen once.

    A success after a failure is allowed (Razorpay authorizes late after a
    failed attempt): the money was taken, so the payment is paid.
    """
    if payment.succeeded_at is not None:
        return "ignored"
    mismatch = _mismatch(payment, event)
    if mismatch is not None:
        return await _flag(payment, f"The gateway reported {mismatch}; not applied")
    unpayable = await _unpayable(payment)
    if unpayable is not None:
        # Money taken for something that can no longer take it (paid by another payment,
        # offline or by credit, or voided): given back at once, never kept, never left
        # for a person to find.
        await _refund_duplicate(payment, event.provider_payment_id, unpayable)
        return "duplicate"
    await mark_succeeded(payment, provider_payment_id=event.provider_payment_id, actor=None)
    return "applied"


async def _unpayable(payment: Payment) -> str | None:
    """Why the invoices a payment pays can no longer take its money, if they cannot.

    Another payment (a retry after this one failed, say, or money recorded
    offline) may have paid them since, or they were voided: this payment's
    money is then refunded as a duplicate, never applied twice.
    """
    wanted: dict[uuid.UUID, int] = {}
    for allocation in await PaymentAllocation.filter(payment_id=payment.id):
        wanted[allocation.invoice_id] = wanted.get(allocation.invoice_id, 0) + (
            allocation.amount_minor
        )
    for invoice in await lock_rows(Invoice.filter(id__in=list(wanted)).order_by("id")):
        label = invoice_service.label(invoice)
        if invoice.status not in invoice_service.OPEN_STATUSES:
            return f"{label} is {invoice.status.value}"
        owed = settlement.invoice_due(invoice)
        if wanted[invoice.id] > owed:
            return f"{label} owes only {format_money(Money(owed, invoice.currency))}"
    return None


async def mark_succeeded(
    payment: Payment, *, provider_payment_id: str | None, actor: Actor | None
) -> None:
    """Record the money as received: invoices and milestones paid, refunds already known applied."""
    now = clock.now()
    payment.succeeded_at = now
    if provider_payment_id:
        payment.provider_payment_id = provider_payment_id
    # A refund reported before the success (out-of-order webhooks) keeps its status.
    if payment.status not in (P.PARTIALLY_REFUNDED, P.REFUNDED):
        payment.status = P.SUCCEEDED
    payment.failure_reason = None
    await payment.save(
        update_fields=[
            "succeeded_at",
            "provider_payment_id",
            "status",
            "failure_reason",
            "updated_at",
        ]
    )
    shown = format_money(Money(payment.amount_minor, payment.currency))
    # The gateway's payment id; for money received offline, its bank reference or hash.
    reference = payment.provider_payment_id or payment.reference or str(payment.id)
    for allocation in await PaymentAllocation.filter(payment_id=payment.id).order_by("id"):
        invoice = await settlement.receive_on_invoice(
            allocation.invoice_id, allocation.amount_minor, actor=actor
        )
        if allocation.milestone_id is not None:
            await settlement.receive_on_milestone(
                allocation.milestone_id,
                allocation.amount_minor,
                reference=reference,
                source=payment.provider.value,
                now=now,
            )
        else:
            await settlement.spread_received(
                invoice,
                allocation.amount_minor,
                reference=reference,
                source=payment.provider.value,
                now=now,
            )
    await _record(
        actor,
        payment,
        "succeeded",
        f"Payment of {shown} received ({payment.provider.value})",
        {"status": {"before": None, "after": payment.status.value}},
    )
    # Whatever else was collecting for the same things would now take money twice.
    await supersede_overlapping(payment.id, await _coverage(payment.id), actor=actor)
    if payment.amount_refunded_minor:
        await _spread_refund(payment, payment.amount_refunded_minor)
    await notification_service.payment_succeeded(payment)


async def _apply_failure(payment: Payment, event: GatewayEvent) -> str:
    """created or pending → failed or cancelled; never after a success."""
    if payment.status not in OPEN_PAYMENT_STATUSES:
        return "ignored"
    target = P.FAILED if event.kind is EventKind.PAYMENT_FAILED else P.CANCELLED
    await _fail(payment, target, event.failure_reason)
    return "applied"


async def _fail(payment: Payment, target: PaymentStatus, reason: str | None) -> None:
    payment.status = target
    payment.failed_at = clock.now()
    payment.failure_reason = (reason or "")[:2000] or None
    await payment.save(update_fields=["status", "failed_at", "failure_reason", "updated_at"])
    milestone_ids = await PaymentAllocation.filter(
        payment_id=payment.id, milestone_id__isnull=False
    ).values_list("milestone_id", flat=True)
    if milestone_ids:
        await _unprocess(list(milestone_ids))
    await _record(
        None,
        payment,
        target.value,
        f"Payment {target.value}" + (f": {reason}" if reason else ""),
        {"status": {"before": None, "after": target.value}},
    )
    if target is P.FAILED:
        # A cancelled checkout is the payer's own choice: nobody needs telling.
        await notification_service.payment_failed(payment)


async def _unprocess(milestone_ids: Sequence[Any]) -> None:
    """A payment closed without money: its milestones still processing are unpaid again."""
    processing = Milestone.filter(
        id__in=milestone_ids, payment_status=MilestonePaymentStatus.PROCESSING
    )
    before = await processing
    await processing.update(payment_status=MilestonePaymentStatus.UNPAID)
    await live_status.milestones_changed(before)


# --- superseded checkouts and duplicate captures --------------------------------------------

Coverage = set[tuple[uuid.UUID, uuid.UUID | None]]


async def _coverage(payment_id: uuid.UUID) -> Coverage:
    """What a payment collects for: (invoice, milestone) pairs; no milestone is the invoice."""
    rows = await PaymentAllocation.filter(payment_id=payment_id).values_list(
        "invoice_id", "milestone_id"
    )
    return {
        (as_uuid(invoice_id), as_uuid(milestone_id) if milestone_id else None)
        for invoice_id, milestone_id in rows
    }


def _overlaps(ours: Coverage, theirs: Coverage) -> bool:
    """Whether two payments collect for some of the same money (a whole invoice covers all)."""
    return any(
        invoice == other and (mine is None or their is None or mine == their)
        for invoice, mine in ours
        for other, their in theirs
    )


async def supersede_overlapping(
    payment_id: uuid.UUID | None, coverage: Coverage, *, actor: Actor | None
) -> int:
    """Supersede every payment not holding money that collects for what ``coverage`` does.

    ``payment_id`` is the payment that replaces them (created next, or just
    succeeded), if one does. Each is closed at its gateway after commit, where
    the gateway allows it. Returns how many were superseded.
    """
    invoice_ids = list({invoice for invoice, _ in coverage})
    if not invoice_ids:
        return 0
    others = PaymentAllocation.filter(invoice_id__in=invoice_ids)
    if payment_id is not None:
        others = others.exclude(payment_id=payment_id)
    other_ids = await others.values_list("payment_id", flat=True)
    candidates = await lock_rows(
        Payment.filter(
            id__in=list(set(other_ids)),
            status__in=list(SUPERSEDABLE_STATUSES),
            succeeded_at__isnull=True,
        ).order_by("id")
    )
    superseded = 0
    for other in candidates:
        if _overlaps(coverage, await _coverage(other.id)):
            await _supersede(other, by=payment_id, actor=actor)
            superseded += 1
    return superseded


async def supersede_for_invoice(invoice_id: uuid.UUID, *, actor: Actor | None) -> int:
    """Supersede every payment not holding money on an invoice whose amount due changed.

    Credit notes and money marked paid by hand change what is owed: a checkout
    made for the old amount would take the wrong sum, so it is closed.
    """
    return await supersede_overlapping(None, {(invoice_id, None)}, actor=actor)


async def _supersede(payment: Payment, *, by: uuid.UUID | None, actor: Actor | None) -> None:
    before = snapshot(payment)
    payment.status = P.SUPERSEDED
    payment.superseded_by_id = by
    await payment.save(update_fields=["status", "superseded_by_id", "updated_at"])
    milestone_ids = [m for _, m in await _coverage(payment.id) if m is not None]
    if milestone_ids:
        await _unprocess(milestone_ids)
    await audit(
        payment,
        "superseded",
        before=before,
        actor=actor,
        source=None if actor else "system",
        reason="A newer payment of the same invoices or milestones replaced it"
        if by
        else "What it was collecting for changed (paid otherwise or credited)",
    )
    await _record(
        actor,
        payment,
        "superseded",
        "Payment superseded: its checkout is closed and can take no money",
        activity.diff({"status": before["status"]}, {"status": payment.status.value}),
    )
    await _announce(payment)
    if payment.provider_order_id and payment.provider is not PaymentProvider.OFFLINE:
        await send_job(CLOSE_CHECKOUT_JOB, str(payment.id))


async def _refundable_minor(payment: Payment) -> int:
    """What is left to refund: captured, less refunded, less refunds asked for and not settled."""
    pending = await Refund.filter(payment_id=payment.id, status=RefundStatus.PENDING)
    return (
        payment.amount_minor
        - payment.amount_refunded_minor
        - sum(refund.amount_minor for refund in pending)
    )


async def _refund_duplicate(payment: Payment, provider_payment_id: str | None, why: str) -> Refund:
    """Money captured for what was already settled: recorded as taken, then refunded in full."""
    payment.succeeded_at = clock.now()
    if provider_payment_id:
        payment.provider_payment_id = provider_payment_id
    if payment.status not in (P.PARTIALLY_REFUNDED, P.REFUNDED):
        payment.status = P.SUCCEEDED
    payment.failure_reason = None
    payment.auto_refund_reason = (f"Captured after {why}: refunded in full as a duplicate payment")[
        :2000
    ]
    await payment.save(
        update_fields=[
            "succeeded_at",
            "provider_payment_id",
            "status",
            "failure_reason",
            "auto_refund_reason",
            "updated_at",
        ]
    )
    refund = await Refund.create(
        agency_id=payment.agency_id,
        payment_id=payment.id,
        amount_minor=await _refundable_minor(payment),
        currency=payment.currency,
        reason=f"{DUPLICATE_REFUND_REASON}: {why}"[:REASON_MAX_LENGTH],
    )
    if refund.amount_minor > 0:
        await send_job(REFUND_JOB, str(refund.id))
    shown = format_money(Money(payment.amount_minor, payment.currency))
    await _record(
        None,
        payment,
        "duplicate_refunded",
        f"Payment of {shown} captured after {why}: refunded automatically as a duplicate payment",
        {"auto_refund_reason": {"before": None, "after": payment.auto_refund_reason}},
    )
    return refund


async def close_checkout(payment_id: uuid.UUID) -> None:
    """Close a superseded payment's checkout at its gateway, once (the worker's job).

    A gateway that cannot close it (a Razorpay order), or finds it paid
    meanwhile, is recorded: a capture that still arrives is refunded as a
    duplicate. GatewayError(temporary=True) when the gateway did not answer.
    """
    payment = await Payment.get_or_none(id=payment_id)
    if payment is None or payment.status is not P.SUPERSEDED or not payment.provider_order_id:
        return
    done = PaymentAuditEntry.filter(
        payment_id=payment.id, action__in=["checkout_closed", "checkout_not_closable"]
    )
    if await done.exists():
        return
    gateway = get_gateway(payment.provider)
    why: str | None = None
    try:
        closed = await gateway.close_payment(provider_order_id=payment.provider_order_id)
    except GatewayError as exc:
        if exc.temporary:
            raise
        closed, why = False, str(exc)
    if not closed and why is None:
        why = f"{payment.provider.value} cannot close {payment.provider_order_id}"
    payment = await lock_rows(Payment.filter(id=payment.id)).get()
    if await done.exists():
        return
    await audit(
        payment,
        "checkout_closed" if closed else "checkout_not_closable",
        before=snapshot(payment),
        source=payment.provider.value,
        reason=None if closed else f"{why}: a capture that still arrives is refunded",
    )


# --- refunds ---------------------------------------------------------------------------------


async def _apply_refund_event(payment: Payment, event: GatewayEvent) -> str:
    refund = None
    if event.provider_refund_id:
        refund = await lock_rows(
            Refund.filter(payment_id=payment.id, provider_refund_id=event.provider_refund_id)
        ).first()
    if refund is None and event.kind is EventKind.REFUND_SUCCEEDED:
        amount = event.refund_amount_minor
        if amount is None and event.amount_minor is not None:
            # Stripe's charge.refunded gives the total refunded so far, not which refund:
            # what it adds to the refunds already applied is the new money given back.
            amount = event.amount_minor - payment.amount_refunded_minor
            if amount <= 0:
                return "ignored"
        # Settle asked for it and the event names it differently (or not at all), or
        # the refund was made in the gateway's dashboard: money given back either way.
        refund = await lock_rows(
            Refund.filter(
                payment_id=payment.id, amount_minor=amount or -1, status=RefundStatus.PENDING
            ).order_by("created_at")
        ).first()
        if refund is None:
            refund = await Refund.create(
                agency_id=payment.agency_id,
                payment_id=payment.id,
                amount_minor=amount or 0,
                currency=payment.currency,
                reason="Refunded at the gateway",
                provider_refund_id=event.provider_refund_id,
            )
    if refund is None or refund.status is not RefundStatus.PENDING:
        return "ignored"
    if event.kind is EventKind.REFUND_FAILED:
        refund.status = RefundStatus.FAILED
        refund.failure_reason = event.failure_reason
        await refund.save(update_fields=["status", "failure_reason", "updated_at"])
        return "applied"
    left = payment.amount_minor - payment.amount_refunded_minor
    if refund.amount_minor <= 0 or refund.amount_minor > left:
        return await _flag(payment, "The gateway reported a refund above what is left to refund")
    refund.status = RefundStatus.SUCCEEDED
    refund.settled_at = clock.now()
    if event.provider_refund_id:
        refund.provider_refund_id = event.provider_refund_id
    await refund.save(update_fields=["status", "settled_at", "provider_refund_id", "updated_at"])
    await settle_refund(payment, refund.amount_minor)
    return "applied"


async def settle_refund(payment: Payment, amount_minor: int) -> None:
    """Money given back: the payment, and (once it succeeded) its invoices and milestones."""
    payment.amount_refunded_minor += amount_minor
    payment.status = (
        P.REFUNDED
        if payment.amount_refunded_minor >= payment.amount_minor
        else P.PARTIALLY_REFUNDED
    )
    await payment.save(update_fields=["amount_refunded_minor", "status", "updated_at"])
    shown = format_money(Money(amount_minor, payment.currency))
    await _record(
        None,
        payment,
        "refunded",
        f"{shown} refunded",
        {
            "amount_refunded": {
                "before": None,
                "after": Money(amount_minor, payment.currency).format_amount(),
            }
        },
    )
    # A duplicate's money never reached its invoices, so giving it back changes none.
    if payment.succeeded_at is not None and payment.auto_refund_reason is None:
        await _spread_refund(payment, amount_minor)
    await notification_service.refund_settled(payment, amount_minor)


async def _spread_refund(payment: Payment, amount_minor: int) -> None:
    """Share a refund over what the payment paid, in proportion (largest remainder)."""
    rows = await PaymentAllocation.filter(payment_id=payment.id).order_by("id")
    room = [row.amount_minor - row.amount_refunded_minor for row in rows]
    for row, share in zip(rows, allocate(amount_minor, room), strict=True):
        if share <= 0:
            continue
        row.amount_refunded_minor += share
        await row.save(update_fields=["amount_refunded_minor", "updated_at"])
        invoice = await settlement.refund_on_invoice(row.invoice_id, share, actor=None)
        if row.milestone_id is not None:
            await settlement.refund_on_milestone(row.milestone_id, share)
        else:
            await settlement.spread_refund(invoice, share)


async def request_refund(
    actor: Actor, payment_id: uuid.UUID, amount: str | None, reason: str | None
) -> Refund:
    """Write a pending refund (owners and admins); the gateway is asked after commit.

    Never above what was captured less what is refunded or being refunded.
    """
    payment = await get_visible(_payments(actor), payment_id, "Payment", lock=True)
    actor.require(*MANAGERS)
    text = validation.required_text("reason", reason, max_length=REASON_MAX_LENGTH)
    if payment.status not in (P.SUCCEEDED, P.PARTIALLY_REFUNDED):
        raise InvalidTransitionError("Payment", payment.status.value, "refunded")
    left = await _refundable_minor(payment)
    value = Money.parse(amount, payment.currency).minor_units if amount else left
    if value <= 0:
        raise ValidationError("amount", "amount must be greater than 0", code="OUT_OF_RANGE")
    if value > left:
        raise ValidationError(
            "amount",
            f"At most {format_money(Money(left, payment.currency))} can be refunded",
            code="OUT_OF_RANGE",
        )
    before = snapshot(payment)
    refund = await Refund.create(
        agency_id=payment.agency_id,
        payment_id=payment.id,
        amount_minor=value,
        currency=payment.currency,
        reason=text,
        created_by_id=actor.user_id,
    )
    if payment.provider is PaymentProvider.OFFLINE:
        # Money given back by hand: nothing to ask a gateway.
        refund.status = RefundStatus.SUCCEEDED
        refund.settled_at = clock.now()
        await refund.save(update_fields=["status", "settled_at", "updated_at"])
        await settle_refund(payment, value)
    else:
        await send_job(REFUND_JOB, str(refund.id))
    await audit(payment, "refund_requested", before=before, actor=actor, reason=text)
    await _announce(payment, before=before)
    return refund


REFUND_JOB = "payment.refund"
CLOSE_CHECKOUT_JOB = "payment.close_checkout"
PROCESS_WEBHOOK_JOB = "payment.process_webhook"
RECONCILE_JOB = "payment.reconcile"


async def send_refund(refund_id: uuid.UUID) -> None:
    """Ask the gateway for a pending refund (the worker); its key is the refund's id."""
    refund = await Refund.get(id=refund_id)
    if refund.status is not RefundStatus.PENDING or refund.provider_refund_id:
        return
    payment = await Payment.get(id=refund.payment_id)
    if payment.provider_payment_id is None:
        raise ConflictError("The payment has no gateway payment id to refund")
    gateway = get_gateway(payment.provider)
    result = await gateway.refund(
        provider_payment_id=payment.provider_payment_id,
        amount_minor=refund.amount_minor,
        refund_id=str(refund.id),
        reason=refund.reason,
    )
    refund = await lock_rows(Refund.filter(id=refund_id)).get()
    if refund.provider_refund_id is None:
        refund.provider_refund_id = result.provider_refund_id
        await refund.save(update_fields=["provider_refund_id", "updated_at"])
    if result.settled and refund.status is RefundStatus.PENDING:
        payment = await lock_rows(Payment.filter(id=payment.id)).get()
        before = snapshot(payment)
        refund.status = RefundStatus.SUCCEEDED
        refund.settled_at = clock.now()
        await refund.save(update_fields=["status", "settled_at", "updated_at"])
        await settle_refund(payment, refund.amount_minor)
        await audit(payment, "refund_succeeded", before=before, source=payment.provider.value)
        await _announce(payment, before=before)


# --- overrides and offline money --------------------------------------------------------


OVERRIDE_TARGETS = frozenset({P.SUCCEEDED, P.FAILED, P.CANCELLED})


async def override_status(
    actor: Actor, payment_id: uuid.UUID, status: PaymentStatus, reason: str | None
) -> Payment:
    """Correct what a gateway got wrong (owners and admins), audited with the reason.

    To succeeded: the money's effects apply as for a gateway success. To failed
    or cancelled: only from created or pending (money received is refunded, not
    un-recorded).
    """
    payment = await get_visible(_payments(actor), payment_id, "Payment", lock=True)
    actor.require(*MANAGERS)
    text = validation.required_text("reason", reason, max_length=REASON_MAX_LENGTH)
    if status not in OVERRIDE_TARGETS:
        raise ValidationError("status", "status must be SUCCEEDED, FAILED or CANCELLED")
    before = snapshot(payment)
    if status is P.SUCCEEDED:
        if payment.succeeded_at is not None:
            raise InvalidTransitionError("Payment", payment.status.value, status.value)
        await mark_succeeded(payment, provider_payment_id=None, actor=actor)
    else:
        if payment.status not in OPEN_PAYMENT_STATUSES:
            raise InvalidTransitionError("Payment", payment.status.value, status.value)
        await _fail(payment, status, text)
    await audit(payment, "status_overridden", before=before, actor=actor, reason=text)
    await _announce(payment)
    return payment


async def record_offline_payment(
    actor: Actor,
    invoice_id: uuid.UUID,
    *,
    amount: str,
    method: OfflineMethod,
    reference: str | None,
    explorer_url: str | None,
) -> Payment:
    """Money received outside the gateways (owners and admins): a bank transfer, cash, crypto."""
    actor.require(*MANAGERS)
    invoice = await lock_rows(
        scoped(Invoice, actor).filter(id=invoice_id).exclude(status=InvoiceStatus.DRAFT)
    ).first()
    if invoice is None:
        raise NotFoundError("Invoice", invoice_id)
    if invoice.status == InvoiceStatus.PAID:
        raise AlreadyPaidError(f"{invoice_service.label(invoice)} is already paid")
    if invoice.status not in invoice_service.OPEN_STATUSES:
        raise InvalidTransitionError("Invoice", invoice.status.value, "paid")
    value = Money.parse(amount, invoice.currency).minor_units
    owed = settlement.invoice_due(invoice)
    if not 0 < value <= owed:
        raise ValidationError(
            "amount",
            f"amount must be above 0 and at most the "
            f"{format_money(Money(owed, invoice.currency))} owed",
            code="OUT_OF_RANGE",
        )
    ref = validation.required_text("reference", reference, max_length=REFERENCE_MAX_LENGTH)
    url = validation.optional_text("explorerUrl", explorer_url, max_length=2000)
    if url is not None and not url.startswith(("https://", "http://")):
        raise ValidationError(
            "explorerUrl", "explorerUrl must be an http(s) URL", code="INVALID_URL"
        )
    if method is OfflineMethod.CRYPTO and url is None:
        raise ValidationError(
            "explorerUrl", "A crypto payment needs its explorer link", code="REQUIRED"
        )
    payment = await Payment.create(
        agency_id=invoice.agency_id,
        client_id=invoice.client_id,
        project_id=invoice.project_id,
        invoice_id=invoice.id,
        provider=PaymentProvider.OFFLINE,
        amount_minor=value,
        currency=invoice.currency,
        method=method,
        reference=ref,
        explorer_url=url,
        created_by_id=actor.user_id,
    )
    await PaymentAllocation.create(
        agency_id=invoice.agency_id,
        payment_id=payment.id,
        invoice_id=invoice.id,
        amount_minor=value,
    )
    await audit(payment, "created", before={}, actor=actor, reason=f"{method.value}: {ref}")
    await mark_succeeded(payment, provider_payment_id=None, actor=actor)
    await audit(payment, "offline_recorded", before=snapshot(payment), actor=actor)
    await _announce(payment)
    return payment


# --- reconciliation ----------------------------------------------------------------------------


def reconcile_due(payment: Payment, now: datetime) -> bool:
    """Whether an open payment is due a question to its gateway.

    First after ``payment_reconcile_after_seconds``, then at doubling intervals
    (15 min, 30 min, 1 h, ... with the defaults), for ``payment_reconcile_max_attempts``.
    """
    wait = timedelta(seconds=get_settings().payment_reconcile_after_seconds)
    if payment.last_reconciled_at is None:
        return now - payment.created_at >= wait
    return now - payment.last_reconciled_at >= wait * 2**payment.reconcile_attempts


def as_dict(event: GatewayEvent) -> dict[str, Any]:
    """A normalized event as stored beside its raw payload."""
    data = asdict(event)
    data.pop("payload")
    data["provider"] = event.provider.value
    data["kind"] = event.kind.value
    return data


def from_dict(data: dict[str, Any], payload: dict[str, Any]) -> GatewayEvent:
    return GatewayEvent(
        **{
            **data,
            "provider": PaymentProvider(data["provider"]),
            "kind": EventKind(data["kind"]),
            "payload": payload,
        }
    )


async def refund_refused(refund_id: uuid.UUID, reason: str) -> None:
    """The gateway refused a refund for good: it fails, and the money stays captured."""
    refund = await lock_rows(Refund.filter(id=refund_id)).get()
    if refund.status is not RefundStatus.PENDING:
        return
    payment = await lock_rows(Payment.filter(id=refund.payment_id)).get()
    before = snapshot(payment)
    refund.status = RefundStatus.FAILED
    refund.failure_reason = reason[:2000]
    await refund.save(update_fields=["status", "failure_reason", "updated_at"])
    await audit(
        payment, "refund_failed", before=before, source=payment.provider.value, reason=reason
    )
    await _announce(payment, before=before)


# --- a project's payment status ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProjectPaymentStatus:
    """A project's contract in money, in the project's currency."""

    project_id: uuid.UUID
    currency: str
    total_minor: int
    paid_minor: int
    outstanding_minor: int
    refunded_minor: int
    advance: Milestone | None
    balance: Milestone | None
    next_due: Milestone | None


async def project_payment_status(actor: Actor, project_id: uuid.UUID) -> ProjectPaymentStatus:
    """A visible project's contract in money, from its milestones that are not cancelled.

    ``total``: their amounts. ``paid``: what was received for them (their
    invoice's tax included) and kept, refunds taken off. ``outstanding``: what is
    left of each milestone's amount once what it kept and what was forgiven on it
    (credit notes) are taken off, added up; tax received for one milestone never
    counts against another's amount. ``next_due``: the unsettled milestone due
    first; when none has a due date, the first by position. Money refunded is
    owed again, so a refunded milestone is unsettled until paid again or forgiven.
    """
    from settle.services import project as project_service

    return await payment_status_of(await project_service.get_project(actor, project_id))


async def payment_status_of(project: Project) -> ProjectPaymentStatus:
    """A project's contract in money (see ``project_payment_status``), for a project already
    checked to be visible: a live status subscription computes it once for every subscriber."""
    from settle.models.milestone import MilestoneKind
    from settle.services.milestone import is_settled

    milestones = (
        await Milestone.filter(project_id=project.id)
        .exclude(status=MilestoneStatus.CANCELLED)
        .order_by("position", "created_at", "id")
    )
    kept = {m.id: m.amount_paid_minor - m.amount_refunded_minor for m in milestones}
    unpaid = [m for m in milestones if not is_settled(m)]
    # (due date, place in contract order): the earliest due, ties in contract order.
    dated = [(m.due_date, place) for place, m in enumerate(unpaid) if m.due_date is not None]
    if dated:
        next_due: Milestone | None = unpaid[min(dated)[1]]
    else:
        next_due = unpaid[0] if unpaid else None
    return ProjectPaymentStatus(
        project_id=project.id,
        currency=project.currency,
        total_minor=sum(m.amount_minor for m in milestones),
        paid_minor=sum(kept.values()),
        outstanding_minor=sum(
            max(m.amount_minor - kept[m.id] - m.amount_credited_minor, 0) for m in milestones
        ),
        refunded_minor=sum(m.amount_refunded_minor for m in milestones),
        advance=next((m for m in milestones if m.kind == MilestoneKind.ADVANCE), None),
        balance=next((m for m in milestones if m.kind == MilestoneKind.BALANCE), None),
        next_due=next_due,
    )


async def invoice_of_payment(actor: Actor, payment_id: uuid.UUID) -> uuid.UUID:
    """The one invoice a visible payment pays (a manual upload's target)."""
    payment = await get_payment(actor, payment_id)
    invoice_ids = set(
        await PaymentAllocation.filter(payment_id=payment.id).values_list("invoice_id", flat=True)
    )
    if len(invoice_ids) != 1:
        raise ValidationError(
            "paymentId",
            "This payment pays several invoices: give the invoiceId instead",
            code="MISMATCH",
        )
    return payment.invoice_id or uuid.UUID(str(next(iter(invoice_ids))))
