"""Payments through the real gateways: Stripe's SDK on localstripe, Razorpay's on its fake.

What the sandbox tests (``test_payment.py``) cannot show: refunds reaching
Stripe, a Razorpay Checkout confirmation checked against the order Settle
stored, and a gateway that answers 500: nothing is stored, the job retries,
and the state converges once it answers, reconciliation included.

The fixtures here point the process settings (which the services, the worker
and the webhook endpoint read) at the local servers; ``tests/test_webhooks_gateways.py``
uses them for the deliveries through ``POST /webhooks/<provider>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from stripe import CardError

from settle.core import clock
from settle.core.errors import ValidationError
from settle.core.outbox import relay_later, transaction
from settle.core.settings import configure_settings, get_settings
from settle.gateways.base import GatewayError
from settle.gateways.stripe import sign_payload
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.outbox import OutboxKind, OutboxMessage
from settle.models.payment import (
    Payment,
    PaymentAuditEntry,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.services import agency as agency_service
from settle.services import payment as payment_service
from settle.services import payment_reconcile
from settle.services import webhook as webhook_service
from settle.services.payment_checkout import verify_razorpay_payment
from settle.subscriptions import channels
from settle.tasks.payment import refund as refund_job
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_user,
    issue_invoice,
)
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.localstripe import LocalStripe
from tests.fixtures.razorpay import RazorpayFake
from tests.fixtures.sandbox import audit_trail, pay_invoice

T = TypeVar("T")
P = PaymentStatus

STRIPE_WEBHOOK_SECRET = "whsec_settle_gateway_proofs_only"
RAZORPAY_SETTINGS = (
    "razorpay_key_id",
    "razorpay_key_secret",
    "razorpay_webhook_secret",
    "razorpay_api_base",
)


# --- the gateways, configured for the process ---------------------------------------------


@pytest.fixture(name="stripe")
def stripe_configured(db: Backend, localstripe: LocalStripe) -> Iterator[LocalStripe]:
    """Stripe pointed at localstripe in the process settings, for the test."""
    previous = get_settings()
    configure_settings(localstripe.settings(previous, webhook_secret=STRIPE_WEBHOOK_SECRET))
    try:
        yield localstripe
    finally:
        configure_settings(previous)


@pytest.fixture(name="razorpay")
async def razorpay_configured(
    db: Backend, razorpay_fake: RazorpayFake
) -> AsyncIterator[RazorpayFake]:
    """Razorpay pointed at the fake in the process settings, for the test."""
    previous = get_settings()
    fake = razorpay_fake.settings()
    configure_settings(
        previous.model_copy(update={name: getattr(fake, name) for name in RAZORPAY_SETTINGS})
    )
    try:
        yield razorpay_fake
    finally:
        configure_settings(previous)
        # Faults a test asked for and did not use must not reach the next test.
        await razorpay_fake.reset()


def require_postgres(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite runs one transaction at a time; the race needs PostgreSQL")


async def committed(call: Awaitable[T]) -> T:
    """One service call in its own transaction, as a request makes it."""
    async with transaction():
        return await call


@dataclass(frozen=True)
class Billing:
    """An issued invoice of a client whose lead pays it."""

    lead: Account
    client: Client
    invoice: Invoice


async def bill(owner: Account, *, currency: str, provider: str, amount: str) -> Billing:
    """The agency collects ``currency`` through ``provider``; its client owes one issued invoice."""
    async with transaction():
        await agency_service.update_agency(owner.actor, {"payment_providers": {currency: provider}})
    client = await create_client(owner, name="Acme", currency=currency)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lena Lead")
    invoice = await issued(owner, client, "Design", amount)
    return Billing(lead, client, invoice)


async def issued(owner: Account, client: Client, description: str, amount: str) -> Invoice:
    """An issued invoice of one line."""
    draft = await create_invoice(
        owner, client, lines=[{"description": description, "quantity": "1", "unit_price": amount}]
    )
    # Its PDF and email are not what these tests are about: their jobs stay in the outbox,
    # which keeps each test to the payment's own work.
    with relay_later():
        return await issue_invoice(owner, draft)


async def statuses_announced(payment: Payment) -> list[str]:
    """The statuses of the payment's PaymentStatusChanged events, in order."""
    rows = OutboxMessage.filter(
        kind=OutboxKind.EVENT, topic=channels.payments(payment.agency_id)
    ).order_by("id")
    return [
        row.payload["status"] for row in await rows if row.payload["paymentId"] == str(payment.id)
    ]


async def actions(payment: Payment) -> list[str]:
    return [action for action, *_ in await audit_trail(payment)]


# --- Stripe ---------------------------------------------------------------------------------


async def in_thread(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking SDK call made as the payer or the dashboard would, off the event loop."""
    return await asyncio.to_thread(call, *args, **kwargs)


async def stripe_pays(
    localstripe: LocalStripe, payment: Payment, card: str = "pm_card_visa"
) -> dict[str, Any]:
    """The payer confirms the PaymentIntent with a test card; the intent as Stripe then has it."""
    assert payment.provider_order_id is not None
    # Declined (CardError): the intent keeps the error and waits for another card.
    with contextlib.suppress(CardError):
        await in_thread(localstripe.pay, payment.provider_order_id, card)
    intent = await in_thread(
        localstripe.client().v1.payment_intents.retrieve, payment.provider_order_id
    )
    data = intent.to_dict()
    # localstripe always expands the charge; Stripe's events carry its id.
    if isinstance(data.get("latest_charge"), dict):
        data["latest_charge"] = data["latest_charge"]["id"]
    return data


def stripe_event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    """An event about ``obj`` as Stripe posts it (pretty-printed JSON)."""
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(clock.now().timestamp()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    return json.dumps(event, indent=2).encode()


def stripe_signed(body: bytes, *, at: int | None = None) -> dict[str, str]:
    """The headers of a delivery of ``body``, signed now (or at ``at``)."""
    timestamp = int(clock.now().timestamp()) if at is None else at
    return {
        "Content-Type": "application/json",
        "Stripe-Signature": sign_payload(STRIPE_WEBHOOK_SECRET, body, timestamp),
    }


async def stripe_delivers(db: Backend, event_type: str, obj: dict[str, Any]) -> str | None:
    """A signed Stripe event received and processed by the worker; the event's outcome."""
    body = stripe_event(event_type, obj)
    received = await webhook_service.receive(PaymentProvider.STRIPE, body, stripe_signed(body))
    await db.drain()
    return (await WebhookEvent.get(id=received.event.id)).outcome


async def test_stripe_refunds_reach_stripe_and_settle_the_payment(
    db: Backend, owner: Account, stripe: LocalStripe
) -> None:
    # given a $250.00 invoice paid through a PaymentIntent, and Stripe's success applied
    billing = await bill(owner, currency="USD", provider="stripe", amount="250.00")
    payment, _ = await pay_invoice(billing.lead, billing.invoice)
    intent = await stripe_pays(stripe, payment)
    assert await stripe_delivers(db, "payment_intent.succeeded", intent) == "applied"

    # when an owner refunds $100.00 and the worker asks Stripe
    first = await committed(
        payment_service.request_refund(owner.actor, payment.id, "100.00", "Scope reduced")
    )
    await db.drain()

    # then Stripe holds the refund, keyed to Settle's, and the payment shows it
    refund = await Refund.get(id=first.id)
    assert refund.status is RefundStatus.SUCCEEDED
    assert refund.provider_refund_id is not None
    at_stripe = await in_thread(stripe.client().v1.refunds.retrieve, refund.provider_refund_id)
    assert (at_stripe.amount, at_stripe.status, at_stripe.payment_intent) == (
        10_000,
        "succeeded",
        intent["id"],
    )
    assert at_stripe.to_dict()["metadata"] == {
        "settle_refund_id": str(refund.id),
        "settle_reason": "Scope reduced",
    }
    row = await Payment.get(id=payment.id)
    assert (row.status, row.amount_refunded_minor) == (P.PARTIALLY_REFUNDED, 10_000)

    # when the rest is refunded
    rest = await committed(payment_service.request_refund(owner.actor, payment.id, None, "Gone"))
    await db.drain()

    # then Stripe refunded the whole charge, and so does Settle
    assert (await Refund.get(id=rest.id)).status is RefundStatus.SUCCEEDED
    charge = await in_thread(stripe.client().v1.charges.retrieve, intent["latest_charge"])
    assert (charge.amount_refunded, charge.refunded) == (25_000, True)
    row = await Payment.get(id=payment.id)
    assert (row.status, row.amount_refunded_minor) == (P.REFUNDED, 25_000)
    # (and the invoice is owed again: money refunded is owed unless a credit note forgives it)
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor, invoice.amount_refunded_minor) == (
        InvoiceStatus.SENT,
        25_000,
        25_000,
    )

    # when Stripe's charge.refunded about those refunds arrives afterwards
    outcome = await stripe_delivers(db, "charge.refunded", charge.to_dict())

    # then it refunds nothing more
    assert outcome == "ignored"
    assert (await Payment.get(id=payment.id)).amount_refunded_minor == 25_000
    assert await Refund.filter(payment_id=payment.id).count() == 2
    assert (await actions(row))[-4:] == [
        "refund_requested",
        "refund_succeeded",
        "refund_requested",
        "refund_succeeded",
    ]
    assert (await statuses_announced(row))[-3:] == [
        "succeeded",
        "partially_refunded",
        "refunded",
    ]


# --- Razorpay ---------------------------------------------------------------------------------


async def razorpay_orders(fake: RazorpayFake, payment: Payment) -> list[dict[str, Any]]:
    """The orders Razorpay holds for a payment (its receipt is the payment's id)."""
    found = await fake.get(f"/v1/orders?receipt={payment.id}")
    orders: list[dict[str, Any]] = found["items"]
    return orders


async def test_a_forged_razorpay_confirmation_changes_nothing(
    db: Backend, owner: Account, razorpay: RazorpayFake
) -> None:
    # given an invoice whose Razorpay order is open, and another order the payer paid for ₹1.00
    billing = await bill(owner, currency="INR", provider="razorpay", amount="2500.00")
    payment, _ = await pay_invoice(billing.lead, billing.invoice)
    assert payment.provider_order_id is not None
    cheap, _ = await pay_invoice(
        billing.lead, await issued(owner, billing.client, "Hosting", "1.00")
    )
    assert cheap.provider_order_id is not None
    other = await razorpay.pay(cheap.provider_order_id)
    before = await row_counts(Payment, PaymentAuditEntry, WebhookEvent, Invoice, Refund)

    # when the browser confirms our order with a made-up signature, or the other order's
    attempts = [
        (other["payment_id"], "0" * 64),
        (other["payment_id"], other["signature"]),
        ("pay_" + "A" * 14, other["signature"]),
    ]
    for payment_ref, signature in attempts:
        with pytest.raises(ValidationError) as refused:
            await committed(
                verify_razorpay_payment(
                    billing.lead.actor, payment.provider_order_id, payment_ref, signature
                )
            )

        # then each is refused as a bad signature
        assert (refused.value.field, refused.value.code) == ("signature", "INVALID_SIGNATURE")
    # and nothing was written: the payment still waits, the invoice is unpaid
    assert await row_counts(Payment, PaymentAuditEntry, WebhookEvent, Invoice, Refund) == before
    row = await Payment.get(id=payment.id)
    assert (row.status, row.provider_payment_id, row.succeeded_at) == (P.PENDING, None, None)
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.SENT, 0)


async def test_the_razorpay_confirmation_with_its_own_signature_pays_once(
    db: Backend, owner: Account, razorpay: RazorpayFake
) -> None:
    # given an invoice whose Razorpay order the payer paid in Checkout
    billing = await bill(owner, currency="INR", provider="razorpay", amount="2500.00")
    payment, _ = await pay_invoice(billing.lead, billing.invoice)
    assert payment.provider_order_id is not None
    paid = await razorpay.pay(payment.provider_order_id)

    # when the browser confirms it, twice (a reload)
    confirmations = [
        await committed(
            verify_razorpay_payment(
                billing.lead.actor, payment.provider_order_id, paid["payment_id"], paid["signature"]
            )
        )
        for _ in range(2)
    ]
    await db.drain()

    # then the payment succeeded with Razorpay's payment id, and the invoice is paid once
    assert [(p.status, p.provider_payment_id) for p in confirmations] == [
        (P.SUCCEEDED, paid["payment_id"])
    ] * 2
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 250_000)
    assert await actions(payment) == ["created", "checkout_created", "payment_succeeded"]
    assert await statuses_announced(payment) == ["created", "pending", "succeeded"]


async def test_an_order_refused_with_a_500_stores_nothing_and_a_retry_makes_one_order(
    db: Backend, owner: Account, razorpay: RazorpayFake
) -> None:
    # given a payment written for an INR invoice, and Razorpay answering the next request 500
    billing = await bill(owner, currency="INR", provider="razorpay", amount="2500.00")
    prepared, resumed = await committed(
        payment_service.prepare_invoice_payment(billing.lead.actor, billing.invoice.id, None)
    )
    assert (resumed, prepared.provider) == (False, PaymentProvider.RAZORPAY)
    await razorpay.fault("error")

    # when its checkout is asked for
    with pytest.raises(payment_service.GatewayUnavailableError) as caught:
        await committed(payment_service.ensure_checkout(prepared.id, description="Invoice"))

    # then the request fails as retryable and nothing is stored, here or at Razorpay
    assert caught.value.code == "GATEWAY_UNAVAILABLE"
    row = await Payment.get(id=prepared.id)
    assert (row.status, row.provider_order_id, row.checkout_url) == (P.CREATED, None, None)
    assert await actions(row) == ["created"]
    assert await razorpay_orders(razorpay, row) == []

    # when the payer tries again once Razorpay answers, and once more (a second click)
    again = [await pay_invoice(billing.lead, billing.invoice) for _ in range(2)]

    # then the same payment got one order, for the invoice's amount in paise
    [order] = await razorpay_orders(razorpay, row)
    assert [(p.id, p.status, p.provider_order_id, r) for p, r in again] == [
        (prepared.id, P.PENDING, order["id"], True)
    ] * 2
    assert (order["amount"], order["currency"], order["status"]) == (250_000, "INR", "created")
    assert payment_service.checkout_of(again[0][0]).public_key == razorpay.key_id
    assert await actions(row) == ["created", "checkout_created"]
    assert await Payment.all().count() == 1


async def captured_by_razorpay(
    owner: Account, razorpay: RazorpayFake
) -> tuple[Billing, Payment, str]:
    """A ₹2,500.00 invoice paid through Razorpay Checkout and confirmed: (billing, payment, id)."""
    billing = await bill(owner, currency="INR", provider="razorpay", amount="2500.00")
    payment, _ = await pay_invoice(billing.lead, billing.invoice)
    assert payment.provider_order_id is not None
    paid = await razorpay.pay(payment.provider_order_id)
    confirmed = await committed(
        verify_razorpay_payment(
            billing.lead.actor, payment.provider_order_id, paid["payment_id"], paid["signature"]
        )
    )
    assert confirmed.status is P.SUCCEEDED
    return billing, confirmed, str(paid["payment_id"])


async def test_a_refund_job_retries_through_a_500_and_refunds_once(
    db: Backend, owner: Account, razorpay: RazorpayFake
) -> None:
    # given a captured Razorpay payment, a full refund asked for (its job not run yet)
    billing, payment, razorpay_payment_id = await captured_by_razorpay(owner, razorpay)
    await db.drain()
    with relay_later():
        refund = await committed(
            payment_service.request_refund(owner.actor, payment.id, None, "Cancelled")
        )
    # and Razorpay answering the next request 500
    await razorpay.fault("error")

    # when the job runs
    with pytest.raises(GatewayError) as caught:
        await asyncio.to_thread(refund_job.fn, str(refund.id))

    # then it raises for Dramatiq to retry it, and nothing was refunded anywhere
    assert caught.value.temporary is True
    waiting = await Refund.get(id=refund.id)
    assert (waiting.status, waiting.provider_refund_id) == (RefundStatus.PENDING, None)
    assert (await Payment.get(id=payment.id)).status is P.SUCCEEDED
    assert (await razorpay.get(f"/v1/payments/{razorpay_payment_id}"))["amount_refunded"] == 0

    # when the retry runs once Razorpay answers, and the job is delivered once more
    for _ in range(2):
        await asyncio.to_thread(refund_job.fn, str(refund.id))

    # then the money went back once, and the payment and the invoice show it
    settled = await Refund.get(id=refund.id)
    assert settled.status is RefundStatus.SUCCEEDED
    assert settled.provider_refund_id is not None
    at_razorpay = await razorpay.get(f"/v1/refunds/{settled.provider_refund_id}")
    assert (at_razorpay["amount"], at_razorpay["status"], at_razorpay["payment_id"]) == (
        250_000,
        "processed",
        razorpay_payment_id,
    )
    assert (await razorpay.get(f"/v1/payments/{razorpay_payment_id}"))["amount_refunded"] == (
        250_000
    )
    row = await Payment.get(id=payment.id)
    assert (row.status, row.amount_refunded_minor) == (P.REFUNDED, 250_000)
    invoice = await Invoice.get(id=billing.invoice.id)
    assert invoice.amount_refunded_minor == 250_000
    assert (await actions(row))[-2:] == ["refund_requested", "refund_succeeded"]
    assert await PaymentAuditEntry.filter(action="refund_succeeded").count() == 1


@pytest.fixture
def movable_clock() -> Iterator[Callable[[datetime], None]]:
    """Settle's clock, moved to a given moment for the rest of the test."""
    yield lambda moment: clock.set_clock(lambda: moment)
    clock.set_clock(None)


async def test_reconciliation_finds_a_razorpay_payment_whose_webhook_was_lost(
    db: Backend,
    owner: Account,
    razorpay: RazorpayFake,
    movable_clock: Callable[[datetime], None],
) -> None:
    # given an invoice whose Razorpay order the payer paid, and no webhook ever arrived
    billing = await bill(owner, currency="INR", provider="razorpay", amount="2500.00")
    payment, _ = await pay_invoice(billing.lead, billing.invoice)
    assert payment.provider_order_id is not None
    paid = await razorpay.pay(payment.provider_order_id)
    wait = timedelta(seconds=get_settings().payment_reconcile_after_seconds)
    started = clock.now()

    # when reconciliation runs before the threshold; then the payment is not asked about
    assert await payment_reconcile.reconcile_pending() == 0

    # when it runs past the threshold while Razorpay answers 500
    movable_clock(started + wait + timedelta(minutes=1))
    await razorpay.fault("error")
    assert await payment_reconcile.reconcile_pending() == 1

    # then nothing is applied: the payment waits for the next question
    row = await Payment.get(id=payment.id)
    assert (row.status, row.reconcile_attempts, row.flagged_reason) == (P.PENDING, 1, None)
    assert await actions(row) == ["created", "checkout_created"]

    # when it runs again before the next question is due, then once it is
    assert await payment_reconcile.reconcile_pending() == 0
    movable_clock(started + wait * 3 + timedelta(minutes=2))
    assert await payment_reconcile.reconcile_pending() == 1

    # then Razorpay's answer is applied once, audited as reconciliation
    row = await Payment.get(id=payment.id)
    assert (row.status, row.provider_payment_id, row.reconcile_attempts) == (
        P.SUCCEEDED,
        paid["payment_id"],
        2,
    )
    assert (await audit_trail(row))[-1] == ("payment_succeeded", "reconciliation", None, None)
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 250_000)

    # when reconciliation runs later, and the lost webhook turns up after all
    movable_clock(started + wait * 10)
    assert await payment_reconcile.reconcile_pending() == 0
    body, headers = await razorpay.webhook("payment.captured", payment_id=paid["payment_id"])
    late = await webhook_service.receive(PaymentProvider.RAZORPAY, body, headers)
    await db.drain()

    # then neither pays again
    assert (await WebhookEvent.get(id=late.event.id)).outcome == "ignored"
    assert await actions(row) == ["created", "checkout_created", "payment_succeeded"]
    assert await statuses_announced(row) == ["created", "pending", "succeeded"]
    invoice = await Invoice.get(id=billing.invoice.id)
    assert invoice.amount_paid_minor == 250_000


VERIFY_RAZORPAY_PAYMENT = """
mutation Verify($orderId: String!, $paymentId: String!, $signature: String!) {
  verifyRazorpayPayment(orderId: $orderId, paymentId: $paymentId, signature: $signature) {
    __typename
    ... on Payment { status }
    ... on Error { code }
    ... on ValidationError { field }
  }
}
"""


async def test_the_browser_confirms_a_razorpay_payment_through_the_api(
    db: Backend, owner: Account, razorpay: RazorpayFake, gql: GraphQLClient
) -> None:
    # given a Razorpay order the payer paid in Checkout
    billing = await bill(owner, currency="INR", provider="razorpay", amount="1500.00")
    payment, _ = await pay_invoice(billing.lead, billing.invoice)
    assert payment.provider_order_id is not None
    paid = await razorpay.pay(payment.provider_order_id)
    variables = {"orderId": payment.provider_order_id, "paymentId": paid["payment_id"]}

    # when the lead's browser sends a wrong signature, then the right one
    forged = await gql.execute(
        VERIFY_RAZORPAY_PAYMENT, {**variables, "signature": "0" * 64}, token=billing.lead.token
    )
    genuine = await gql.execute(
        VERIFY_RAZORPAY_PAYMENT,
        {**variables, "signature": paid["signature"]},
        token=billing.lead.token,
    )

    # then the forgery is refused and the genuine confirmation pays the invoice
    assert forged["verifyRazorpayPayment"] == {
        "__typename": "ValidationError",
        "code": "INVALID_SIGNATURE",
        "field": "signature",
    }
    assert genuine["verifyRazorpayPayment"] == {"__typename": "Payment", "status": "SUCCEEDED"}
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 150_000)
