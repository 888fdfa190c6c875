"""A superseded checkout can never take money, and money captured twice is given back.

The review's sequence: payment 1 fails, ``payInvoice`` starts payment 2, and
payment 1's page still took the money; payment 2's page still offered Pay.
Here: a newer payment supersedes the older one (closed at its gateway where the
gateway allows it; the sandbox page answers 410), and a capture that still
arrives for something already paid is refunded in full through its gateway,
automatically. Exactly one payment keeps its money, on every gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

from settle.core.outbox import transaction
from settle.models.activity import ActivityEvent
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.payment import (
    OfflineMethod,
    Payment,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.services import payment as payment_service
from settle.services import settlement
from settle.services import webhook as webhook_service
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account
from tests.fixtures.localstripe import LocalStripe
from tests.fixtures.razorpay import RazorpayFake
from tests.fixtures.sandbox import audit_trail, deliver, pay_invoice
from tests.services.test_payment_gateways import (
    bill,
    in_thread,
    razorpay_configured,  # noqa: F401
    stripe_configured,  # noqa: F401
    stripe_delivers,
    stripe_pays,
)

T = TypeVar("T")
P = PaymentStatus


async def committed(call: Awaitable[T]) -> T:
    async with transaction():
        return await call


def page_of(payment: Payment) -> str:
    """The path of a sandbox payment's hosted page."""
    assert payment.checkout_url is not None
    return "/sandbox/pay/" + payment.checkout_url.split("/sandbox/pay/", 1)[1]


async def actions(payment: Payment) -> list[str]:
    return [action for action, *_ in await audit_trail(payment)]


async def reloaded(row: Any) -> Any:
    return await type(row).get(id=row.id)


async def record_offline(owner: Account, invoice: Invoice, amount: str) -> Payment:
    return await committed(
        payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount=amount,
            method=OfflineMethod.BANK_TRANSFER,
            reference="NEFT-1",
            explorer_url=None,
        )
    )


def money_adds_up(invoice: Invoice) -> None:
    """(paid - refunded) + credited + due = total, to the minor unit."""
    due = settlement.invoice_due(invoice)
    assert (
        invoice.amount_paid_minor
        - invoice.amount_refunded_minor
        + invoice.amount_credited_minor
        + due
        == invoice.total_minor
    )


# --- the sandbox ---------------------------------------------------------------------------


async def test_a_superseded_sandbox_checkout_can_never_take_money(
    db: Backend, owner: Account, http: httpx.AsyncClient
) -> None:
    # given a ₹500.00 invoice whose first payment the payer failed on its page
    billing = await bill(owner, currency="INR", provider="sandbox", amount="500.00")
    first, _ = await pay_invoice(billing.lead, billing.invoice)
    assert (await http.post(page_of(first) + "/fail")).status_code == 200
    await db.drain()
    assert (await reloaded(first)).status is P.FAILED

    # when the client starts another payment of the invoice
    second, resumed = await pay_invoice(billing.lead, billing.invoice)
    await db.drain()

    # then it is a new payment, and the first is superseded by it, closed and audited
    assert (resumed, second.id != first.id, second.status) == (False, True, P.PENDING)
    first = await reloaded(first)
    assert (first.status, first.superseded_by_id) == (P.SUPERSEDED, second.id)
    assert (await actions(first))[-2:] == ["superseded", "checkout_closed"]

    # when the payer opens or presses Pay on the first payment's page
    before = await row_counts(Payment, WebhookEvent, Refund)
    page = await http.get(page_of(first))
    press = await http.post(page_of(first) + "/succeed")
    await db.drain()

    # then the page is gone for good and nothing was taken
    assert (page.status_code, press.status_code) == (410, 410)
    assert "This checkout was replaced" in page.text
    assert await row_counts(Payment, WebhookEvent, Refund) == before
    assert (await reloaded(first)).status is P.SUPERSEDED

    # when the payer pays the second payment
    assert (await http.post(page_of(second) + "/succeed")).status_code == 200
    await db.drain()

    # then the invoice is paid once, by it, and its page offers nothing more
    assert (await reloaded(second)).status is P.SUCCEEDED
    invoice = await reloaded(billing.invoice)
    assert (invoice.status, invoice.amount_paid_minor, settlement.invoice_due(invoice)) == (
        InvoiceStatus.PAID,
        50_000,
        0,
    )
    money_adds_up(invoice)
    assert "<form" not in (await http.get(page_of(second))).text


async def test_a_capture_for_an_invoice_already_paid_is_refunded_as_a_duplicate(
    db: Backend, owner: Account
) -> None:
    # given payment 1 failed, and payment 2 of the same invoice succeeded
    billing = await bill(owner, currency="INR", provider="sandbox", amount="500.00")
    first, _ = await pay_invoice(billing.lead, billing.invoice)
    await deliver(first, "payment.failed", failure_reason="Declined")
    await db.drain()
    second, _ = await pay_invoice(billing.lead, billing.invoice)
    await deliver(second, "payment.succeeded")
    await db.drain()

    # when the gateway still reports a capture for payment 1 (its checkout was not closable)
    received = await deliver(first, "payment.succeeded")
    await db.drain()

    # then payment 1's money is refunded in full through the gateway, automatically
    assert (await WebhookEvent.get(id=received.event.id)).outcome == "duplicate"
    first = await reloaded(first)
    assert (first.status, first.amount_refunded_minor) == (P.REFUNDED, 50_000)
    assert first.auto_refund_reason is not None
    assert "refunded in full as a duplicate payment" in first.auto_refund_reason
    [refund] = await Refund.filter(payment_id=first.id)
    assert (refund.status, refund.amount_minor, refund.provider_refund_id) == (
        RefundStatus.SUCCEEDED,
        50_000,
        f"sbx_rf_{refund.id}",
    )
    assert refund.reason.startswith("Duplicate payment: ")
    # and audited: superseded, closed, the duplicate capture, and its refund
    assert (await actions(first))[-4:] == [
        "superseded",
        "checkout_closed",
        "payment_succeeded_duplicate",
        "refund_succeeded",
    ]
    # and it is on the timeline
    assert await ActivityEvent.filter(entity_id=first.id, verb="duplicate_refunded").count() == 1
    # and the invoice was paid once: its numbers still add up, nothing is due or refunded
    invoice = await reloaded(billing.invoice)
    assert (
        invoice.status,
        invoice.amount_paid_minor,
        invoice.amount_refunded_minor,
        settlement.invoice_due(invoice),
    ) == (InvoiceStatus.PAID, 50_000, 0, 0)
    money_adds_up(invoice)
    # and exactly one payment kept its money
    kept = [
        p.amount_minor - p.amount_refunded_minor
        for p in await Payment.filter(invoice_id=billing.invoice.id)
    ]
    assert sorted(kept) == [0, 50_000]


async def test_a_late_capture_of_the_older_payment_wins_and_supersedes_the_newer(
    db: Backend, owner: Account
) -> None:
    # given payment 1 failed and payment 2 started (pending)
    billing = await bill(owner, currency="INR", provider="sandbox", amount="500.00")
    first, _ = await pay_invoice(billing.lead, billing.invoice)
    await deliver(first, "payment.failed", failure_reason="Declined")
    await db.drain()
    second, _ = await pay_invoice(billing.lead, billing.invoice)
    await db.drain()

    # when the gateway captures payment 1 after all, before anything paid the invoice
    await deliver(first, "payment.succeeded")
    await db.drain()

    # then payment 1's money pays the invoice and payment 2 is superseded
    assert (await reloaded(first)).status is P.SUCCEEDED
    second = await reloaded(second)
    assert (second.status, second.superseded_by_id) == (P.SUPERSEDED, first.id)
    assert (await reloaded(billing.invoice)).status is InvoiceStatus.PAID

    # when payment 2 is captured too; then it is the one refunded
    await deliver(second, "payment.succeeded")
    await db.drain()
    second = await reloaded(second)
    assert (second.status, second.amount_refunded_minor) == (P.REFUNDED, 50_000)
    invoice = await reloaded(billing.invoice)
    assert (invoice.amount_paid_minor, invoice.amount_refunded_minor) == (50_000, 0)
    money_adds_up(invoice)


async def test_money_recorded_offline_supersedes_the_checkout_under_way(
    db: Backend, owner: Account
) -> None:
    # given a payment under way for an invoice
    billing = await bill(owner, currency="INR", provider="sandbox", amount="500.00")
    pending, _ = await pay_invoice(billing.lead, billing.invoice)

    # when the agency records the money as received by bank transfer
    offline = await record_offline(owner, billing.invoice, "500.00")
    await db.drain()

    # then the checkout under way is superseded, so it can take no money
    pending = await reloaded(pending)
    assert (pending.status, pending.superseded_by_id) == (P.SUPERSEDED, offline.id)
    assert (await reloaded(billing.invoice)).status is InvoiceStatus.PAID


# --- Stripe ------------------------------------------------------------------------------


async def test_stripe_closes_a_superseded_intent(
    db: Backend, owner: Account, stripe: LocalStripe
) -> None:
    # given a PaymentIntent the payer's card was declined on
    billing = await bill(owner, currency="USD", provider="stripe", amount="250.00")
    first, _ = await pay_invoice(billing.lead, billing.invoice)
    declined = await stripe_pays(stripe, first, card="pm_card_chargeCustomerFail")
    assert await stripe_delivers(db, "payment_intent.payment_failed", declined) == "applied"

    # when the client starts another payment
    second, _ = await pay_invoice(billing.lead, billing.invoice)
    await db.drain()

    # then Stripe cancelled the first intent, so no card can be charged on it
    assert first.provider_order_id is not None
    intent = await in_thread(stripe.client().v1.payment_intents.retrieve, first.provider_order_id)
    assert intent.status == "canceled"
    assert (await actions(first))[-2:] == ["superseded", "checkout_closed"]
    assert (await reloaded(second)).status is P.PENDING


async def test_stripe_expires_a_superseded_checkout_session(
    db: Backend, owner: Account, stripe: LocalStripe
) -> None:
    # given an invoice whose payment link opened a Stripe Checkout Session
    billing = await bill(owner, currency="USD", provider="stripe", amount="250.00")
    async with transaction():
        hosted, _ = await payment_service.prepare_invoice_payment(None, billing.invoice.id, None)
    async with transaction():
        hosted = await payment_service.ensure_checkout(
            hosted.id, description="Invoice", hosted=True
        )
    assert hosted.provider_order_id is not None
    assert hosted.provider_order_id.startswith("cs_")

    # when the money is recorded offline instead
    await record_offline(owner, billing.invoice, "250.00")
    await db.drain()

    # then Stripe expired the session, so its page can take no money
    session = await in_thread(
        stripe.client().v1.checkout.sessions.retrieve, hosted.provider_order_id
    )
    assert session.status == "expired"
    assert (await actions(hosted))[-2:] == ["superseded", "checkout_closed"]


async def test_stripe_money_captured_twice_is_refunded_at_stripe(
    db: Backend, owner: Account, stripe: LocalStripe
) -> None:
    # given a $250.00 invoice whose PaymentIntent the payer paid, its webhook not here yet,
    # while the agency recorded the same money received by bank transfer
    billing = await bill(owner, currency="USD", provider="stripe", amount="250.00")
    payment, _ = await pay_invoice(billing.lead, billing.invoice)
    intent = await stripe_pays(stripe, payment)
    assert intent["status"] == "succeeded"
    await record_offline(owner, billing.invoice, "250.00")
    await db.drain()
    # (the intent could not be cancelled any more: it was paid)
    assert (await actions(payment))[-1] == "checkout_not_closable"

    # when Stripe's success arrives
    assert await stripe_delivers(db, "payment_intent.succeeded", intent) == "duplicate"

    # then Stripe refunded the whole charge, keyed to Settle's refund
    payment = await reloaded(payment)
    assert (payment.status, payment.amount_refunded_minor) == (P.REFUNDED, 25_000)
    [refund] = await Refund.filter(payment_id=payment.id)
    assert refund.provider_refund_id is not None
    at_stripe = await in_thread(stripe.client().v1.refunds.retrieve, refund.provider_refund_id)
    assert (at_stripe.amount, at_stripe.status) == (25_000, "succeeded")
    assert at_stripe.to_dict()["metadata"]["settle_refund_id"] == str(refund.id)
    # and the invoice keeps the one payment it was paid by
    invoice = await reloaded(billing.invoice)
    assert (invoice.status, invoice.amount_paid_minor, invoice.amount_refunded_minor) == (
        InvoiceStatus.PAID,
        25_000,
        0,
    )
    money_adds_up(invoice)


# --- Razorpay ----------------------------------------------------------------------------


async def test_razorpay_cancels_a_superseded_payment_link(
    db: Backend, owner: Account, razorpay: RazorpayFake
) -> None:
    # given an invoice whose hosted Razorpay link is open
    billing = await bill(owner, currency="INR", provider="razorpay", amount="2500.00")
    async with transaction():
        link, _ = await payment_service.prepare_invoice_payment(None, billing.invoice.id, None)
    async with transaction():
        link = await payment_service.ensure_checkout(link.id, description="Invoice", hosted=True)
    assert link.provider_order_id is not None
    assert link.provider_order_id.startswith("plink_")

    # when the money is recorded offline instead
    await record_offline(owner, billing.invoice, "2500.00")
    await db.drain()

    # then Razorpay cancelled the link, so it can take no money
    at_razorpay = await razorpay.get(f"/v1/payment_links/{link.provider_order_id}")
    assert at_razorpay["status"] == "cancelled"
    assert (await actions(link))[-2:] == ["superseded", "checkout_closed"]


async def test_razorpay_money_captured_on_a_superseded_order_is_refunded(
    db: Backend, owner: Account, razorpay: RazorpayFake
) -> None:
    # given a Razorpay order superseded by a newer payment that paid the invoice
    billing = await bill(owner, currency="INR", provider="razorpay", amount="2500.00")
    first, _ = await pay_invoice(billing.lead, billing.invoice)
    assert first.provider_order_id is not None
    failed = await razorpay.fail(first.provider_order_id, "Card declined")
    body, headers = await razorpay.webhook("payment.failed", payment_id=failed)
    await webhook_service.receive(PaymentProvider.RAZORPAY, body, headers)
    await db.drain()
    second, _ = await pay_invoice(billing.lead, billing.invoice)
    await db.drain()
    # (an order cannot be closed: that is said in the audit trail)
    assert (await actions(await reloaded(first)))[-2:] == ["superseded", "checkout_not_closable"]
    assert second.provider_order_id is not None
    paid = await razorpay.pay(second.provider_order_id)
    body, headers = await razorpay.webhook("payment.captured", payment_id=paid["payment_id"])
    await webhook_service.receive(PaymentProvider.RAZORPAY, body, headers)
    await db.drain()

    # when the payer still pays the first order, and Razorpay reports the capture
    captured = await razorpay.pay(first.provider_order_id)
    body, headers = await razorpay.webhook("payment.captured", payment_id=captured["payment_id"])
    await webhook_service.receive(PaymentProvider.RAZORPAY, body, headers)
    await db.drain()

    # then Razorpay refunded that payment in full, and the invoice was paid once
    first = await reloaded(first)
    assert (first.status, first.amount_refunded_minor) == (P.REFUNDED, 250_000)
    at_razorpay = await razorpay.get(f"/v1/payments/{captured['payment_id']}")
    assert at_razorpay["amount_refunded"] == 250_000
    invoice = await reloaded(billing.invoice)
    assert (invoice.status, invoice.amount_paid_minor, invoice.amount_refunded_minor) == (
        InvoiceStatus.PAID,
        250_000,
        0,
    )
    money_adds_up(invoice)
