"""Payment resolvers: parse input, call the payment service, map the result."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

import strawberry

from settle.core.errors import AppError
from settle.core.errors import NotFoundError as DomainNotFoundError
from settle.core.errors import ValidationError as DomainValidationError
from settle.core.money import Money, normalize_currency
from settle.core.outbox import transaction
from settle.core.tenancy import Actor
from settle.models import payment as models
from settle.resolvers.common import (
    find_one,
    mutate,
    parse_id,
    parse_optional_id,
    public_errors,
    require_actor,
)
from settle.schema.common import Connection, SortDirection
from settle.schema.context import Info
from settle.schema.errors import (
    ConflictError,
    Error,
    GatewayUnavailableError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
    to_error,
)
from settle.schema.payment import (
    Checkout,
    OfflinePaymentMethod,
    Payment,
    PaymentCheckout,
    PaymentFilter,
    PaymentItem,
    PaymentOrder,
    PaymentProvider,
    PaymentStatus,
    ProjectPaymentStatus,
    Refund,
    RefundPayload,
)
from settle.services import invoice as invoice_service
from settle.services import payment as payment_service
from settle.services import payment_checkout

_Errors = (
    ValidationError | NotFoundError | PermissionDeniedError | ConflictError | InvalidTransitionError
)
PaymentResult = Annotated[Payment | _Errors, strawberry.union("PaymentResult")]
RefundResult = Annotated[RefundPayload | _Errors, strawberry.union("RefundResult")]
PaymentCheckoutResult = Annotated[
    PaymentCheckout | _Errors | GatewayUnavailableError, strawberry.union("PaymentCheckoutResult")
]


# --- queries -----------------------------------------------------------------------


def _filter(flt: PaymentFilter) -> payment_service.PaymentFilter:
    """The service's filter; amounts are in ``currency``, so they need it."""
    currency = None if flt.currency is None else normalize_currency(flt.currency, "filter.currency")
    if currency is None and (flt.min_amount is not None or flt.max_amount is not None):
        raise DomainValidationError(
            "filter.currency", "Give the currency of minAmount and maxAmount", code="REQUIRED"
        )

    def minor(value: str | None, field: str) -> int | None:
        if value is None or currency is None:
            return None
        return Money.parse(value, currency, field).minor_units

    return payment_service.PaymentFilter(
        status=flt.status,
        provider=flt.provider,
        client_id=None if flt.client_id is None else parse_id(flt.client_id, "filter.clientId"),
        project_id=(
            None if flt.project_id is None else parse_id(flt.project_id, "filter.projectId")
        ),
        since=flt.from_,
        until=flt.to,
        min_amount_minor=minor(flt.min_amount, "filter.minAmount"),
        max_amount_minor=minor(flt.max_amount, "filter.maxAmount"),
        currency=currency,
    )


async def payments(
    info: Info,
    first: int = 20,
    after: str | None = None,
    filter: PaymentFilter | None = None,
    order_by: PaymentOrder | None = None,
) -> Connection[Payment]:
    """Payments the caller may see (a client user's own client's), newest first by default."""
    actor = require_actor(info)
    order = order_by or PaymentOrder()
    with public_errors():
        page = await payment_service.list_payments(
            actor,
            _filter(filter or PaymentFilter()),
            first=first,
            after=after,
            order_by=order.field.value,
            descending=order.direction is SortDirection.DESC,
        )
    return Connection.from_page(page, Payment.from_model)


async def payment(info: Info, id: strawberry.ID) -> Payment | None:
    actor = require_actor(info)
    return await find_one(
        id, lambda row_id: payment_service.get_payment(actor, row_id), Payment.from_model
    )


async def project_payment_status(
    info: Info, project_id: strawberry.ID
) -> ProjectPaymentStatus | None:
    """A project's contract in money; null for a project that is unknown or not yours."""
    actor = require_actor(info)
    pid = parse_optional_id(project_id)
    if pid is None:
        return None
    with public_errors():
        try:
            status = await payment_service.project_payment_status(actor, pid)
        except DomainNotFoundError:
            return None
    return ProjectPaymentStatus.from_value(status)


# --- starting a payment ------------------------------------------------------------


Prepare = Callable[[], Awaitable[tuple[models.Payment, bool]]]


async def start_payment(
    actor: Actor, prepare: Prepare, milestone_order: Sequence[uuid.UUID] = ()
) -> PaymentCheckout | Error:
    """Start (or resume) a payment in the boundary's two transactions; errors become types.

    The first writes the payment and commits it, so that racing requests find it
    and wait on it rather than make another; the second asks the gateway under
    the payment's row lock. When the gateway does not answer, the committed
    payment stays, and the same call resumes it.
    """
    try:
        async with transaction():
            row, resumed = await prepare()
            allocations = await payment_service.allocations(actor, row.id)
            invoices = [
                await invoice_service.get_invoice(actor, invoice_id)
                for invoice_id in dict.fromkeys(a.invoice_id for a in allocations)
            ]
        description = ", ".join(invoice_service.label(invoice) for invoice in invoices)
        async with transaction():
            row = await payment_service.ensure_checkout(row.id, description=description)
    except AppError as exc:
        return to_error(exc)
    place = {milestone_id: index for index, milestone_id in enumerate(milestone_order)}
    allocations.sort(key=lambda a: place.get(a.milestone_id, len(place)) if a.milestone_id else 0)
    return PaymentCheckout(
        payment=Payment.from_model(row),
        checkout=Checkout.from_payment(row) if row.provider_order_id else None,
        resumed=resumed,
        items=[PaymentItem.from_model(a, row.currency) for a in allocations],
    )


async def pay_milestones(
    info: Info,
    milestone_ids: list[strawberry.ID],
    provider: PaymentProvider | None = None,  # type: ignore[valid-type]
) -> PaymentCheckoutResult:
    actor = require_actor(info)
    ids: list[uuid.UUID] = []

    async def prepare() -> tuple[models.Payment, bool]:
        ids.extend(parse_id(value, "milestoneIds") for value in milestone_ids)
        return await payment_service.prepare_milestone_payment(actor, ids, provider)

    # The items are put in the order of ``ids``, parsed by then.
    return await start_payment(actor, prepare, ids)  # type: ignore[return-value]


async def pay_invoice(
    info: Info,
    invoice_id: strawberry.ID,
    provider: PaymentProvider | None = None,  # type: ignore[valid-type]
) -> PaymentCheckoutResult:
    actor = require_actor(info)

    async def prepare() -> tuple[models.Payment, bool]:
        return await payment_service.prepare_invoice_payment(
            actor, parse_id(invoice_id, "invoiceId"), provider
        )

    return await start_payment(actor, prepare)  # type: ignore[return-value]


# --- after the payment -------------------------------------------------------------


async def refund_payment(
    info: Info, payment_id: strawberry.ID, reason: str, amount: str | None = None
) -> RefundResult:
    actor = require_actor(info)

    async def run() -> RefundPayload:
        refund = await payment_service.request_refund(
            actor, parse_id(payment_id, "paymentId"), amount, reason
        )
        row = await payment_service.get_payment(actor, refund.payment_id)
        return RefundPayload(payment=Payment.from_model(row), refund=Refund.from_model(refund))

    return await mutate(run)  # type: ignore[return-value]


async def override_payment_status(
    info: Info,
    payment_id: strawberry.ID,
    status: PaymentStatus,  # type: ignore[valid-type]
    reason: str,
) -> PaymentResult:
    actor = require_actor(info)

    async def run() -> Payment:
        return Payment.from_model(
            await payment_service.override_status(
                actor, parse_id(payment_id, "paymentId"), status, reason
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def record_offline_payment(
    info: Info,
    invoice_id: strawberry.ID,
    amount: str,
    method: OfflinePaymentMethod,  # type: ignore[valid-type]
    reference: str,
    explorer_url: str | None = None,
) -> PaymentResult:
    actor = require_actor(info)

    async def run() -> Payment:
        return Payment.from_model(
            await payment_service.record_offline_payment(
                actor,
                parse_id(invoice_id, "invoiceId"),
                amount=amount,
                method=method,
                reference=reference,
                explorer_url=explorer_url,
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def verify_razorpay_payment(
    info: Info, order_id: str, payment_id: str, signature: str
) -> PaymentResult:
    actor = require_actor(info)

    async def run() -> Payment:
        return Payment.from_model(
            await payment_checkout.verify_razorpay_payment(actor, order_id, payment_id, signature)
        )

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class PaymentQuery:
    payments: Connection[Payment] = strawberry.field(
        resolver=payments,
        description="Payments the caller may see, newest first by default; minAmount and "
        "maxAmount need filter.currency.",
    )
    payment: Payment | None = strawberry.field(
        resolver=payment,
        description="A payment by id; null when it does not exist or is not yours.",
    )
    project_payment_status: ProjectPaymentStatus | None = strawberry.field(
        resolver=project_payment_status,
        description="A project's contract in money: paid, outstanding, advance and balance, "
        "next due; null when the project does not exist or is not yours.",
    )


@strawberry.type
class PaymentMutation:
    pay_milestones: PaymentCheckoutResult = strawberry.mutation(
        resolver=pay_milestones,
        description="Pay approved milestones of one client and currency in one payment (the "
        "client lead, owners and admins). Each is paid on the invoice its approval issued; "
        "those without one are put together on one new invoice. Milestones with a payment "
        "under way get its checkout again (resumed); ALREADY_PAID when paid.",
    )
    pay_invoice: PaymentCheckoutResult = strawberry.mutation(
        resolver=pay_invoice,
        description="Pay what is owed on an issued invoice (the client lead, owners and "
        "admins); a payment under way is resumed; ALREADY_PAID when paid.",
    )
    refund_payment: RefundResult = strawberry.mutation(
        resolver=refund_payment,
        description="Refund a succeeded payment in full (no amount) or in part, never above "
        "what is left to refund; the gateway settles it (owners and admins).",
    )
    override_payment_status: PaymentResult = strawberry.mutation(
        resolver=override_payment_status,
        description="Correct what a gateway got wrong, with the reason, audited (owners and "
        "admins): SUCCEEDED applies the money as a gateway success would; FAILED or "
        "CANCELLED only while created or pending.",
    )
    verify_razorpay_payment: PaymentResult = strawberry.mutation(
        resolver=verify_razorpay_payment,
        description="Razorpay Checkout's confirmation from the payer's browser (razorpay_order_"
        "id, razorpay_payment_id, razorpay_signature): the signature is checked against the "
        "order id Settle stored, and the payment is credited once, even when its webhook "
        "arrives at the same moment. ValidationError INVALID_SIGNATURE when it does not match.",
    )
    record_offline_payment: PaymentResult = strawberry.mutation(
        resolver=record_offline_payment,
        description="Record money received outside the gateways against an issued invoice, "
        "at most what is owed (owners and admins); CRYPTO needs its explorerUrl.",
    )
