"""Gateway webhooks through ``POST /webhooks/<provider>`` and the in-process worker.

Payments are started against the real SDKs (Stripe's against localstripe,
Razorpay's against its fake); the gateways' events arrive signed as they sign
them, including what localstripe cannot send (duplicates, disorder, refunds).
The races (five deliveries at once; a browser confirmation racing the webhook)
run on PostgreSQL, where the requests really overlap.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from settle.core import clock
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.payment import (
    Payment,
    PaymentAuditEntry,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.services import payment as payment_service
from settle.services.payment_checkout import verify_razorpay_payment
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account
from tests.fixtures.localstripe import PUBLISHABLE_KEY, LocalStripe
from tests.fixtures.razorpay import RazorpayFake
from tests.fixtures.sandbox import audit_trail, pay_invoice
from tests.services.test_payment_gateways import (
    Billing,
    actions,
    bill,
    committed,
    in_thread,
    razorpay_configured,  # noqa: F401 - the fixture ``razorpay``
    require_postgres,
    statuses_announced,
    stripe_configured,  # noqa: F401 - the fixture ``stripe``
    stripe_event,
    stripe_pays,
    stripe_signed,
)

P = PaymentStatus
PAYMENT_TABLES = (Payment, PaymentAuditEntry, Refund, WebhookEvent, Invoice)


async def post_stripe(http: httpx.AsyncClient, event_type: str, obj: dict[str, Any]) -> str:
    """A signed Stripe delivery through the endpoint; the stored event's id."""
    body = stripe_event(event_type, obj)
    answer = await http.post("/webhooks/stripe", content=body, headers=stripe_signed(body))
    assert answer.status_code == 200, answer.text
    event_id: str = answer.json()["id"]
    return event_id


async def outcome(event_id: str) -> str | None:
    return (await WebhookEvent.get(id=event_id)).outcome


async def stripe_checkout(owner: Account, localstripe: LocalStripe) -> tuple[Billing, Payment]:
    """A $250.00 invoice its client lead is paying through a real PaymentIntent."""
    billing = await bill(owner, currency="USD", provider="stripe", amount="250.00")
    payment, resumed = await pay_invoice(billing.lead, billing.invoice)
    assert (resumed, payment.provider, payment.status) == (False, PaymentProvider.STRIPE, P.PENDING)
    intent_id = payment.provider_order_id
    assert intent_id is not None
    assert intent_id.startswith("pi_")
    checkout = payment_service.checkout_of(payment)
    assert checkout.client_secret is not None
    assert checkout.client_secret.startswith(f"{intent_id}_secret_")
    assert checkout.public_key == PUBLISHABLE_KEY
    intent = await in_thread(localstripe.client().v1.payment_intents.retrieve, intent_id)
    assert (intent.amount, intent.currency, intent.metadata["settle_payment_id"]) == (
        25_000,
        "usd",
        str(payment.id),
    )
    return billing, payment


# --- Stripe ------------------------------------------------------------------------------------


async def test_one_stripe_event_delivered_five_times_at_once_pays_once(
    db: Backend, http: httpx.AsyncClient, owner: Account, stripe: LocalStripe
) -> None:
    require_postgres(db)
    # given an invoice paid by card at Stripe, and Stripe's signed payment_intent.succeeded
    billing, payment = await stripe_checkout(owner, stripe)
    intent = await stripe_pays(stripe, payment)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 25_000)
    body = stripe_event("payment_intent.succeeded", intent)
    headers = stripe_signed(body)

    # when the same delivery arrives five times at once
    answers = await asyncio.gather(
        *(http.post("/webhooks/stripe", content=body, headers=headers) for _ in range(5))
    )

    # then all five are answered 2xx, and one event is stored
    assert [answer.status_code for answer in answers] == [200] * 5
    [event] = await WebhookEvent.all()
    assert (
        sorted((a.json()["id"], a.json()["duplicate"]) for a in answers)
        == [(str(event.id), False)] + [(str(event.id), True)] * 4
    )
    # and once the worker ran, the payment changed once, announced once, and the invoice is paid
    await db.drain()
    row = await Payment.get(id=payment.id)
    assert (row.status, row.provider_payment_id, row.amount_minor) == (
        P.SUCCEEDED,
        intent["id"],
        25_000,
    )
    assert await actions(row) == ["created", "checkout_created", "payment_succeeded"]
    assert await statuses_announced(row) == ["created", "pending", "succeeded"]
    assert (await outcome(str(event.id)), await WebhookEvent.all().count()) == ("applied", 1)
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 25_000)


async def test_a_stripe_failure_after_the_success_changes_nothing(
    db: Backend, http: httpx.AsyncClient, owner: Account, stripe: LocalStripe
) -> None:
    # given a Stripe payment whose success was applied
    billing, payment = await stripe_checkout(owner, stripe)
    intent = await stripe_pays(stripe, payment)
    await post_stripe(http, "payment_intent.succeeded", intent)
    await db.drain()
    before = await row_counts(*PAYMENT_TABLES)

    # when an earlier attempt's payment_intent.payment_failed arrives late
    declined = {
        **intent,
        "status": "requires_payment_method",
        "amount_received": 0,
        "last_payment_error": {"code": "card_declined", "message": "Your card was declined."},
    }
    late = await post_stripe(http, "payment_intent.payment_failed", declined)
    await db.drain()

    # then it is stored (with its processing job) and ignored: the payment stays paid,
    # and nothing else is written
    assert await outcome(late) == "ignored"
    row = await Payment.get(id=payment.id)
    assert (row.status, row.failure_reason, row.failed_at) == (P.SUCCEEDED, None, None)
    assert await row_counts(*PAYMENT_TABLES) == {
        **before,
        "webhook_event": before["webhook_event"] + 1,
        "outbox_message": before["outbox_message"] + 1,
    }
    assert await actions(row) == ["created", "checkout_created", "payment_succeeded"]
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 25_000)


async def test_a_stripe_refund_reported_before_the_success_ends_refunded(
    db: Backend, http: httpx.AsyncClient, owner: Account, stripe: LocalStripe
) -> None:
    # given a Stripe payment paid, then refunded in full from Stripe's dashboard
    billing, payment = await stripe_checkout(owner, stripe)
    intent = await stripe_pays(stripe, payment)
    client = stripe.client()
    made = await in_thread(client.v1.refunds.create, params={"payment_intent": intent["id"]})
    charge = (await in_thread(client.v1.charges.retrieve, intent["latest_charge"])).to_dict()
    assert (charge["amount_refunded"], charge["refunded"]) == (25_000, True)

    # when charge.refunded is delivered before payment_intent.succeeded
    refunded = await post_stripe(http, "charge.refunded", charge)
    await db.drain()
    succeeded = await post_stripe(http, "payment_intent.succeeded", intent)
    await db.drain()

    # then both apply, and the payment ends refunded, with the refund Stripe made
    assert (await outcome(refunded), await outcome(succeeded)) == ("applied", "applied")
    row = await Payment.get(id=payment.id)
    assert (row.status, row.amount_refunded_minor, row.provider_payment_id) == (
        P.REFUNDED,
        25_000,
        intent["id"],
    )
    assert row.succeeded_at is not None
    [refund] = await Refund.filter(payment_id=payment.id)
    assert (refund.status, refund.amount_minor, refund.provider_refund_id) == (
        RefundStatus.SUCCEEDED,
        25_000,
        made.id,
    )
    # and the invoice shows the money received and given back: it is owed again
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor, invoice.amount_refunded_minor) == (
        InvoiceStatus.SENT,
        25_000,
        25_000,
    )
    assert await actions(row) == [
        "created",
        "checkout_created",
        "refund_succeeded",
        "payment_succeeded",
    ]
    # (the success after the refund changes neither the status nor the refunded amount)
    assert await statuses_announced(row) == ["created", "pending", "refunded"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"amount_received": 24_999},
            "The gateway reported amount 249.99 instead of 250.00; not applied",
        ),
        ({"currency": "eur"}, "The gateway reported currency EUR instead of USD; not applied"),
    ],
)
async def test_a_stripe_success_for_other_money_is_flagged_not_applied(
    db: Backend,
    http: httpx.AsyncClient,
    owner: Account,
    stripe: LocalStripe,
    change: dict[str, Any],
    reason: str,
) -> None:
    # given a Stripe payment of $250.00 waiting for its success
    billing, payment = await stripe_checkout(owner, stripe)
    intent = await stripe_pays(stripe, payment)

    # when the signed success reports another amount or currency
    event_id = await post_stripe(http, "payment_intent.succeeded", {**intent, **change})
    await db.drain()

    # then the payment is flagged for review and not paid
    assert await outcome(event_id) == "flagged"
    row = await Payment.get(id=payment.id)
    assert (row.status, row.flagged_reason, row.succeeded_at) == (P.PENDING, reason, None)
    assert (await audit_trail(row))[-1] == ("payment_succeeded_flagged", "stripe", None, reason)
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.SENT, 0)


def _spoilt(case: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """A delivery of ``body`` spoilt in one way."""
    now = int(clock.now().timestamp())
    signed = stripe_signed(body)
    if case == "tampered byte":
        index = body.index(b"25000")
        return body[:index] + b"95000" + body[index + 5 :], signed
    if case == "re-serialized JSON":
        return json.dumps(json.loads(body), separators=(",", ":")).encode(), signed
    if case == "301 seconds old":
        return body, stripe_signed(body, at=now - 301)
    if case == "one hour in the future":
        return body, stripe_signed(body, at=now + 3600)
    if case == "another secret":
        stamp = signed["Stripe-Signature"].split(",")[0]
        return body, {**signed, "Stripe-Signature": f"{stamp},v1={'0' * 64}"}
    assert case == "no header"
    return body, {"Content-Type": "application/json"}


SPOILT = (
    "tampered byte",
    "re-serialized JSON",
    "301 seconds old",
    "one hour in the future",
    "another secret",
    "no header",
)


async def test_stripe_deliveries_are_accepted_only_with_a_valid_signature(
    db: Backend, http: httpx.AsyncClient, owner: Account, stripe: LocalStripe
) -> None:
    # given a paid intent's success
    _, payment = await stripe_checkout(owner, stripe)
    intent = await stripe_pays(stripe, payment)
    body = stripe_event("payment_intent.succeeded", intent)
    await db.drain()
    before = await row_counts(*PAYMENT_TABLES)

    # when it is delivered spoilt in each way
    answers = {}
    for case in SPOILT:
        spoilt, headers = _spoilt(case, body)
        answer = await http.post("/webhooks/stripe", content=spoilt, headers=headers)
        answers[case] = (answer.status_code, answer.json()["code"])
    await db.drain()

    # then each is refused, and nothing is stored or changed
    assert answers == dict.fromkeys(SPOILT, (400, "INVALID_SIGNATURE"))
    assert await row_counts(*PAYMENT_TABLES) == before
    assert await WebhookEvent.all().count() == 0
    assert (await Payment.get(id=payment.id)).status is P.PENDING

    # when it is delivered signed with an old secret and the current one (a secret being rolled)
    stamp, ours = stripe_signed(body)["Stripe-Signature"].split(",")
    header = f"{stamp},v1={'0' * 64},{ours}"
    answer = await http.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": header})
    await db.drain()

    # then it is accepted and applied
    assert answer.status_code == 200
    assert await outcome(answer.json()["id"]) == "applied"
    assert (await Payment.get(id=payment.id)).status is P.SUCCEEDED


async def test_a_late_success_of_a_superseded_payment_is_refunded_as_a_duplicate(
    db: Backend, http: httpx.AsyncClient, owner: Account, stripe: LocalStripe
) -> None:
    # given a payment whose card was declined, and the invoice then paid by a second payment
    billing, first = await stripe_checkout(owner, stripe)
    declined = await stripe_pays(stripe, first, "pm_card_chargeCustomerFail")
    assert declined["status"] == "requires_payment_method"
    await post_stripe(http, "payment_intent.payment_failed", declined)
    await db.drain()
    assert (await Payment.get(id=first.id)).status is P.FAILED
    second, resumed = await pay_invoice(billing.lead, billing.invoice)
    assert (resumed, second.id != first.id) == (False, True)
    await post_stripe(http, "payment_intent.succeeded", await stripe_pays(stripe, second))
    await db.drain()

    # when Stripe still reports a success of the first intent (a retry that beat its
    # cancellation; localstripe does not confirm an intent again after a decline)
    retried = {
        **declined,
        "status": "succeeded",
        "amount_received": 25_000,
        "last_payment_error": None,
    }
    late = await post_stripe(http, "payment_intent.succeeded", retried)
    await db.drain()

    # then the money is not applied twice: it is recorded and its refund asked for at once
    event = await WebhookEvent.get(id=late)
    assert (event.outcome, event.processed_at is not None, event.last_error) == (
        "duplicate",
        True,
        None,
    )
    row = await Payment.get(id=first.id)
    assert row.auto_refund_reason == (
        "Captured after Invoice INV-2026-0001 is paid: refunded in full as a duplicate payment"
    )
    assert "payment_succeeded_duplicate" in [action for action, *_ in await audit_trail(row)]
    [refund] = await Refund.filter(payment_id=first.id)
    assert (refund.amount_minor, refund.reason) == (
        25_000,
        "Duplicate payment: Invoice INV-2026-0001 is paid",
    )
    assert (await Payment.get(id=second.id)).status is P.SUCCEEDED
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor, invoice.amount_refunded_minor) == (
        InvoiceStatus.PAID,
        25_000,
        0,
    )


# --- Razorpay ---------------------------------------------------------------------------------


async def razorpay_checkout(owner: Account, fake: RazorpayFake) -> tuple[Billing, Payment, str]:
    """A ₹2,500.00 invoice its client lead is paying through a Razorpay order: (…, order id)."""
    billing = await bill(owner, currency="INR", provider="razorpay", amount="2500.00")
    payment, resumed = await pay_invoice(billing.lead, billing.invoice)
    assert (resumed, payment.provider, payment.status) == (
        False,
        PaymentProvider.RAZORPAY,
        P.PENDING,
    )
    order_id = payment.provider_order_id
    assert order_id is not None
    order = await fake.get(f"/v1/orders/{order_id}")
    assert (order["amount"], order["currency"], order["receipt"], order["status"]) == (
        250_000,
        "INR",
        str(payment.id),
        "created",
    )
    return billing, payment, order_id


async def test_one_razorpay_event_delivered_five_times_at_once_pays_once(
    db: Backend, http: httpx.AsyncClient, owner: Account, razorpay: RazorpayFake
) -> None:
    require_postgres(db)
    # given an order the payer paid, and Razorpay's signed payment.captured
    billing, payment, order_id = await razorpay_checkout(owner, razorpay)
    paid = await razorpay.pay(order_id)
    body, headers = await razorpay.webhook("payment.captured", payment_id=paid["payment_id"])

    # when the same delivery (one X-Razorpay-Event-Id) arrives five times at once
    answers = await asyncio.gather(
        *(http.post("/webhooks/razorpay", content=body, headers=headers) for _ in range(5))
    )

    # then all five are answered 2xx and one event is stored, under the id its signed body
    # gives (Razorpay's own event id header is kept beside it)
    assert [answer.status_code for answer in answers] == [200] * 5
    [event] = await WebhookEvent.all()
    created_at = json.loads(body)["created_at"]
    assert (event.provider, event.event_id, event.payload["event"]["gateway_event_id"]) == (
        PaymentProvider.RAZORPAY,
        f"payment.captured:{created_at}:payment={paid['payment_id']}",
        headers["X-Razorpay-Event-Id"],
    )
    assert sorted(answer.json()["duplicate"] for answer in answers) == [False] + [True] * 4
    # and the payment changed once, and the invoice is paid once
    await db.drain()
    row = await Payment.get(id=payment.id)
    assert (row.status, row.provider_payment_id) == (P.SUCCEEDED, paid["payment_id"])
    assert await actions(row) == ["created", "checkout_created", "payment_succeeded"]
    assert await statuses_announced(row) == ["created", "pending", "succeeded"]
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 250_000)


async def test_a_captured_razorpay_body_replayed_with_a_new_event_id_is_stored_once(
    db: Backend, http: httpx.AsyncClient, owner: Account, razorpay: RazorpayFake
) -> None:
    # given Razorpay's signed payment.captured, delivered and applied
    billing, payment, order_id = await razorpay_checkout(owner, razorpay)
    paid = await razorpay.pay(order_id)
    body, headers = await razorpay.webhook("payment.captured", payment_id=paid["payment_id"])
    first = await http.post("/webhooks/razorpay", content=body, headers=headers)
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    await db.drain()
    before = await row_counts(*PAYMENT_TABLES)

    # when someone who captured the body replays it under a new X-Razorpay-Event-Id
    # (the header is not covered by the signature, so the signature still matches)
    replayed = {**headers, "X-Razorpay-Event-Id": "Lz0bKxRbS0M8pB"}
    assert replayed["X-Razorpay-Event-Id"] != headers["X-Razorpay-Event-Id"]
    again = await http.post("/webhooks/razorpay", content=body, headers=replayed)
    await db.drain()

    # then it is acknowledged as the duplicate of the stored event, and nothing changes
    assert (again.status_code, again.json()) == (
        200,
        {"received": True, "id": first.json()["id"], "duplicate": True},
    )
    assert await row_counts(*PAYMENT_TABLES) == before
    [event] = await WebhookEvent.all()
    assert (event.outcome, event.payload["event"]["gateway_event_id"]) == (
        "applied",
        headers["X-Razorpay-Event-Id"],
    )
    row = await Payment.get(id=payment.id)
    assert await actions(row) == ["created", "checkout_created", "payment_succeeded"]
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 250_000)


async def test_a_razorpay_confirmation_racing_the_captured_webhook_credits_once(
    db: Backend, http: httpx.AsyncClient, owner: Account, razorpay: RazorpayFake
) -> None:
    require_postgres(db)
    # given an order the payer paid: the browser holds Checkout's signature, Razorpay its webhook
    billing, payment, order_id = await razorpay_checkout(owner, razorpay)
    paid = await razorpay.pay(order_id)
    body, headers = await razorpay.webhook("payment.captured", payment_id=paid["payment_id"])

    # when the browser's confirmation and the webhook arrive at the same moment
    confirmed, answer = await asyncio.gather(
        committed(
            verify_razorpay_payment(
                billing.lead.actor, order_id, paid["payment_id"], paid["signature"]
            )
        ),
        http.post("/webhooks/razorpay", content=body, headers=headers),
    )
    await db.drain()

    # then both are accepted, and the payment is credited once
    assert answer.status_code == 200
    assert (confirmed.status, confirmed.provider_payment_id) == (P.SUCCEEDED, paid["payment_id"])
    assert sorted(await WebhookEvent.all().values_list("outcome", flat=True)) == [
        "applied",
        "ignored",
    ]
    assert await PaymentAuditEntry.filter(action="payment_succeeded").count() == 1
    assert await statuses_announced(payment) == ["created", "pending", "succeeded"]
    invoice = await Invoice.get(id=billing.invoice.id)
    assert (invoice.status, invoice.amount_paid_minor, invoice.total_minor) == (
        InvoiceStatus.PAID,
        250_000,
        250_000,
    )


async def test_razorpay_deliveries_with_a_bad_signature_get_400_and_change_nothing(
    db: Backend, http: httpx.AsyncClient, owner: Account, razorpay: RazorpayFake
) -> None:
    # given an order the payer paid, and Razorpay's payment.captured
    _, payment, order_id = await razorpay_checkout(owner, razorpay)
    paid = await razorpay.pay(order_id)
    body, headers = await razorpay.webhook("payment.captured", payment_id=paid["payment_id"])
    assert b'"amount":250000' in body
    unsigned = {k: v for k, v in headers.items() if k != "X-Razorpay-Signature"}
    spoilt = {
        "tampered body": (body.replace(b'"amount":250000', b'"amount":950000'), headers),
        "another secret": (body, {**headers, "X-Razorpay-Signature": "0" * 64}),
        "no signature": (body, unsigned),
    }
    await db.drain()
    before = await row_counts(*PAYMENT_TABLES)

    # when it is delivered spoilt in each way
    answers = {}
    for case, (content, sent) in spoilt.items():
        answer = await http.post("/webhooks/razorpay", content=content, headers=sent)
        answers[case] = (answer.status_code, answer.json()["code"])
    await db.drain()

    # then each is refused, and nothing is stored or changed
    assert answers == dict.fromkeys(spoilt, (400, "INVALID_SIGNATURE"))
    assert await row_counts(*PAYMENT_TABLES) == before
    assert (await Payment.get(id=payment.id)).status is P.PENDING
