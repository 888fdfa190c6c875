"""The Razorpay gateway, through the real SDK, against the fake Razorpay of the test session."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from settle.gateways import GatewayNotConfiguredError, get_gateway
from settle.gateways.base import (
    Checkout,
    EventKind,
    GatewayError,
    GatewayEvent,
    InvalidSignatureError,
    PaymentRequest,
    RefundResult,
    RemoteState,
    RemoteStatus,
)
from settle.gateways.razorpay import RazorpayGateway
from settle.models.payment import PaymentProvider
from tests.fixtures.razorpay import RazorpayFake

RAZORPAY = PaymentProvider.RAZORPAY
REFUND_FAILED_REASON = "Razorpay could not process the refund"


@pytest.fixture
async def gateway(razorpay_fake: RazorpayFake) -> AsyncIterator[RazorpayGateway]:
    yield RazorpayGateway(razorpay_fake.settings(), timeout=5.0)
    # Faults a test asked for and did not use must not reach the next test.
    await razorpay_fake.reset()


def payment_request(
    amount_minor: int = 250_000, currency: str = "INR", payment_id: str | None = None
) -> PaymentRequest:
    payment_id = payment_id or str(uuid.uuid4())
    return PaymentRequest(
        payment_id=payment_id,
        amount_minor=amount_minor,
        currency=currency,
        description="Milestone 1: Design",
        customer_email="lead@client.test",
        customer_name="Client Co",
        return_url="http://settle.test/",
        metadata={"settle_payment_id": payment_id, "agency_id": "agency-1"},
    )


async def paid_order(
    gateway: RazorpayGateway, fake: RazorpayFake, amount_minor: int = 250_000
) -> tuple[PaymentRequest, str, dict[str, Any]]:
    """A payment whose order the payer paid: (request, order id, what Checkout returned)."""
    request = payment_request(amount_minor)
    checkout = await gateway.create_payment(request)
    return request, checkout.provider_order_id, await fake.pay(checkout.provider_order_id)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- creating payments ---------------------------------------------------------------------


async def test_create_payment_makes_an_order_for_checkout(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a payment of ₹2,500.00
    request = payment_request(250_000)
    # when the gateway creates it
    checkout = await gateway.create_payment(request)
    # then the frontend gets the order id and the public key id, and no hosted page
    assert checkout == Checkout(
        provider_order_id=checkout.provider_order_id, public_key=razorpay_fake.key_id
    )
    assert checkout.provider_order_id.startswith("order_")
    # and Razorpay holds the order in paise, with Settle's payment id as receipt and note
    order = await razorpay_fake.get(f"/v1/orders/{checkout.provider_order_id}")
    assert {k: order[k] for k in ("amount", "amount_due", "currency", "receipt", "status")} == {
        "amount": 250_000,
        "amount_due": 250_000,
        "currency": "INR",
        "receipt": request.payment_id,
        "status": "created",
    }
    assert order["notes"] == {"settle_payment_id": request.payment_id, "agency_id": "agency-1"}


@pytest.mark.parametrize(
    ("amount_minor", "currency"),
    [(5_000, "JPY"), (50, "USD"), (100, "INR"), (12_340, "KWD")],
)
async def test_amounts_go_to_razorpay_in_the_currencys_smallest_unit(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake, amount_minor: int, currency: str
) -> None:
    # given an amount in Settle's minor units (whole yen for JPY, which has no minor unit)
    request = payment_request(amount_minor, currency)
    # when the order is created
    checkout = await gateway.create_payment(request)
    # then Razorpay receives the same number: its unit is the currency's smallest one too
    order = await razorpay_fake.get(f"/v1/orders/{checkout.provider_order_id}")
    assert (order["amount"], order["currency"]) == (amount_minor, currency)


async def test_a_three_decimal_amount_not_ending_in_zero_is_refused_before_razorpay(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given 12.345 KWD, which Razorpay wants as a multiple of 10 fils
    request = payment_request(12_345, "KWD")
    # when the gateway is asked for it, then it refuses for good
    with pytest.raises(GatewayError) as caught:
        await gateway.create_payment(request)
    assert caught.value.temporary is False
    # and Razorpay never heard of it
    orders = await razorpay_fake.get(f"/v1/orders?receipt={request.payment_id}")
    assert orders["count"] == 0


async def test_razorpay_refuses_an_order_below_its_minimum_for_good(
    gateway: RazorpayGateway,
) -> None:
    # given the gateway's advertised minimums
    assert dict(gateway.minimums) == {"INR": 100, "USD": 50}
    # when an order of 99 paise reaches Razorpay anyway
    with pytest.raises(GatewayError) as caught:
        await gateway.create_payment(payment_request(99, "INR"))
    # then the refusal is permanent, with Razorpay's reason
    assert caught.value.temporary is False
    assert "minimum amount" in str(caught.value)


async def test_razorpay_does_not_dedupe_orders_so_settles_payment_row_must(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given one Settle payment
    request = payment_request()
    # when its order is asked for twice (what Settle's row lock exists to prevent)
    first = await gateway.create_payment(request)
    second = await gateway.create_payment(request)
    # then Razorpay made two orders with one receipt: the gateway alone cannot dedupe
    assert first.provider_order_id != second.provider_order_id
    orders = await razorpay_fake.get(f"/v1/orders?receipt={request.payment_id}")
    assert orders["count"] == 2


async def test_create_payment_link_gives_a_hosted_page(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a payment
    request = payment_request(150_000)
    # when a payment link is created for it
    checkout = await gateway.create_payment_link(request)
    # then the payer is sent to the link's short URL
    link = await razorpay_fake.get(f"/v1/payment_links/{checkout.provider_order_id}")
    assert checkout == Checkout(provider_order_id=link["id"], checkout_url=link["short_url"])
    assert link["id"].startswith("plink_")
    # and the link carries the amount, Settle's id as reference, and no Razorpay emails
    assert {
        k: link[k]
        for k in (
            "amount",
            "currency",
            "reference_id",
            "description",
            "customer",
            "notify",
            "notes",
            "callback_url",
            "callback_method",
            "status",
        )
    } == {
        "amount": 150_000,
        "currency": "INR",
        "reference_id": request.payment_id,
        "description": "Milestone 1: Design",
        "customer": {"name": "Client Co", "email": "lead@client.test"},
        "notify": {"email": False, "sms": False},
        "notes": {"settle_payment_id": request.payment_id, "agency_id": "agency-1"},
        "callback_url": "http://settle.test/",
        "callback_method": "get",
        "status": "created",
    }
    # and the short URL opens the link's page
    async with httpx.AsyncClient(timeout=5) as client:
        page = await client.get(link["short_url"])
    assert (page.status_code, page.text) == (200, f"Payment link {link['id']}: 150000 INR")


async def test_a_hosted_payment_is_a_payment_link(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a payment to be collected on Razorpay's own page
    request = replace(payment_request(150_000), hosted=True)
    # when the gateway creates it
    checkout = await gateway.create_payment(request)
    # then it is a payment link for the payment, not a Checkout order
    link = await razorpay_fake.get(f"/v1/payment_links/{checkout.provider_order_id}")
    assert checkout == Checkout(provider_order_id=link["id"], checkout_url=link["short_url"])
    assert (link["reference_id"], link["amount"]) == (request.payment_id, 150_000)
    orders = await razorpay_fake.get(f"/v1/orders?receipt={request.payment_id}")
    assert orders["count"] == 0


async def test_a_second_link_for_the_same_payment_returns_the_first(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a payment whose link was created (and, say, the answer was lost)
    request = payment_request(150_000)
    first = await gateway.create_payment_link(request)
    # when the link is asked for again
    second = await gateway.create_payment_link(request)
    # then Razorpay's refusal of the duplicate reference turns into the first link
    assert second == first
    links = await razorpay_fake.get(f"/v1/payment_links?reference_id={request.payment_id}")
    assert [link["id"] for link in links["payment_links"]] == [first.provider_order_id]


async def test_a_link_with_the_same_reference_and_another_amount_is_refused(
    gateway: RazorpayGateway,
) -> None:
    # given a link for a payment of ₹1,500.00
    request = payment_request(150_000)
    await gateway.create_payment_link(request)
    # when a link for the same payment id but another amount is asked for
    with pytest.raises(GatewayError) as caught:
        await gateway.create_payment_link(payment_request(160_000, payment_id=request.payment_id))
    # then the existing link is not passed off as the answer
    assert caught.value.temporary is False
    assert "another amount" in str(caught.value)


# --- the Checkout signature ----------------------------------------------------------------


async def test_checkout_signature_verifies_for_the_stored_order_only(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given two paid orders and what Checkout returned for the first
    _, order_id, paid = await paid_order(gateway, razorpay_fake)
    _, other_order_id, _ = await paid_order(gateway, razorpay_fake)
    payment_id, signature = paid["payment_id"], paid["signature"]
    tampered = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    # when each is checked, then only the genuine pair for the stored order verifies
    assert gateway.verify_checkout_signature(
        order_id=order_id, payment_id=payment_id, signature=signature
    )
    assert not gateway.verify_checkout_signature(
        order_id=order_id, payment_id=payment_id, signature=tampered
    )
    assert not gateway.verify_checkout_signature(
        order_id=other_order_id, payment_id=payment_id, signature=signature
    )
    assert not gateway.verify_checkout_signature(
        order_id=order_id, payment_id="pay_Forged00000000", signature=signature
    )
    assert not gateway.verify_checkout_signature(
        order_id=order_id, payment_id=payment_id, signature=""
    )


# --- webhooks ------------------------------------------------------------------------------


async def test_a_webhook_signature_must_match_the_raw_body(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a genuine delivery of payment.captured
    _, _, paid = await paid_order(gateway, razorpay_fake)
    body, headers = await razorpay_fake.webhook("payment.captured", payment_id=paid["payment_id"])
    assert gateway.verify_webhook(body, headers).event_type == "payment.captured"
    # when one byte of the amount is changed
    tampered = body.replace(b'"amount":250000', b'"amount":250001', 1)
    assert tampered != body
    # or the same JSON is serialized again (same data, other bytes)
    reserialized = json.dumps(json.loads(body)).encode()
    assert reserialized != body
    assert json.loads(reserialized) == json.loads(body)
    # or the signature is missing, or made with another secret
    unsigned = {k: v for k, v in headers.items() if k != "X-Razorpay-Signature"}
    other_secret = dict(headers, **{"X-Razorpay-Signature": hashlib.sha256(body).hexdigest()})
    # then each is rejected
    for raw, sent in (
        (tampered, headers),
        (reserialized, headers),
        (body, unsigned),
        (body, other_secret),
    ):
        with pytest.raises(InvalidSignatureError):
            gateway.verify_webhook(raw, sent)


async def test_header_names_are_matched_without_regard_to_case(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a genuine delivery whose headers arrive lower-cased (as ASGI servers give them)
    _, _, paid = await paid_order(gateway, razorpay_fake)
    body, headers = await razorpay_fake.webhook("payment.captured", payment_id=paid["payment_id"])
    lowered = {k.lower(): v for k, v in headers.items()}
    # when it is verified, then it is accepted, keeping Razorpay's event id
    event = gateway.verify_webhook(body, lowered)
    assert event.gateway_event_id == headers["X-Razorpay-Event-Id"]


async def test_the_event_id_comes_from_the_signed_body_not_the_unsigned_header(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a genuine delivery of payment.captured
    _, _, paid = await paid_order(gateway, razorpay_fake)
    body, headers = await razorpay_fake.webhook("payment.captured", payment_id=paid["payment_id"])
    created_at = json.loads(body)["created_at"]
    # when it is verified as delivered, redelivered (same header), replayed under a new
    # header, and without the header
    delivered = gateway.verify_webhook(body, headers)
    redelivered = gateway.verify_webhook(body, headers)
    replayed = gateway.verify_webhook(body, {**headers, "X-Razorpay-Event-Id": "Lz0bKxRbS0M8pB"})
    headerless = gateway.verify_webhook(
        body, {k: v for k, v in headers.items() if k != "X-Razorpay-Event-Id"}
    )
    # then all four have the one id the signature covers: event, time and entity
    expected = f"payment.captured:{created_at}:payment={paid['payment_id']}"
    assert [e.event_id for e in (delivered, redelivered, replayed, headerless)] == [expected] * 4
    # and each keeps the header it came with, for reference
    assert [e.gateway_event_id for e in (delivered, redelivered, replayed, headerless)] == [
        headers["X-Razorpay-Event-Id"],
        headers["X-Razorpay-Event-Id"],
        "Lz0bKxRbS0M8pB",
        None,
    ]


async def test_distinct_events_never_share_an_event_id(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given one payment authorized then captured, its order paid, and two refunds of it,
    # all reported in the same second
    _, order_id, paid = await paid_order(gateway, razorpay_fake)
    refunds = [
        await gateway.refund(
            provider_payment_id=paid["payment_id"],
            amount_minor=10_000,
            refund_id=str(uuid.uuid4()),
            reason="Scope cut",
        )
        for _ in range(2)
    ]
    deliveries = [
        await razorpay_fake.webhook("payment.authorized", payment_id=paid["payment_id"]),
        await razorpay_fake.webhook("payment.captured", payment_id=paid["payment_id"]),
        await razorpay_fake.webhook("order.paid", payment_id=paid["payment_id"]),
        *[
            await razorpay_fake.webhook("refund.processed", refund_id=refund.provider_refund_id)
            for refund in refunds
        ],
    ]
    same_second = []
    for body, headers in deliveries:
        data = {**json.loads(body), "created_at": 1_767_225_600}
        raw = json.dumps(data, separators=(",", ":")).encode()
        signature = hmac.new(razorpay_fake.webhook_secret.encode(), raw, hashlib.sha256)
        same_second.append((raw, {**headers, "X-Razorpay-Signature": signature.hexdigest()}))
    # when they are verified
    ids = [gateway.verify_webhook(raw, headers).event_id for raw, headers in same_second]
    # then each has its own id
    payment_id, [first, second] = paid["payment_id"], [r.provider_refund_id for r in refunds]
    assert ids == [
        f"payment.authorized:1767225600:payment={payment_id}",
        f"payment.captured:1767225600:payment={payment_id}",
        f"order.paid:1767225600:order={order_id},payment={payment_id}",
        f"refund.processed:1767225600:payment={payment_id},refund={first}",
        f"refund.processed:1767225600:payment={payment_id},refund={second}",
    ]


async def test_a_signed_body_without_its_time_or_entities_is_identified_by_its_hash(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a signed event with no created_at, and one with no entity
    bodies = [
        json.dumps({"entity": "event", "event": "payment.captured", "payload": {}}).encode(),
        json.dumps(
            {"entity": "event", "event": "account.updated", "payload": {}, "created_at": 1}
        ).encode(),
    ]
    secret = razorpay_fake.webhook_secret.encode()
    # when they are verified, then each is known by the hash of its signed bytes
    for body in bodies:
        signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
        event = gateway.verify_webhook(body, {"X-Razorpay-Signature": signature})
        assert event.event_id == f"sha256:{hashlib.sha256(body).hexdigest()}"


@pytest.mark.parametrize(
    ("event_type", "attempt", "kind", "failure_reason"),
    [
        ("payment.captured", "pay", EventKind.PAYMENT_SUCCEEDED, None),
        ("order.paid", "pay", EventKind.PAYMENT_SUCCEEDED, None),
        ("payment.authorized", "authorize", EventKind.PAYMENT_PENDING, None),
        ("payment.failed", "fail", EventKind.PAYMENT_FAILED, "Card declined by the bank"),
        ("payment.dispute.created", "pay", EventKind.OTHER, None),
    ],
)
async def test_payment_events_parse_into_normalized_events(
    gateway: RazorpayGateway,
    razorpay_fake: RazorpayFake,
    event_type: str,
    attempt: str,
    kind: EventKind,
    failure_reason: str | None,
) -> None:
    # given an order the payer paid, authorized, or failed to pay
    request = payment_request(250_000)
    order_id = (await gateway.create_payment(request)).provider_order_id
    if attempt == "fail":
        payment_id = await razorpay_fake.fail(order_id, "Card declined by the bank")
    elif attempt == "authorize":
        payment_id = (await razorpay_fake.authorize(order_id))["payment_id"]
    else:
        payment_id = (await razorpay_fake.pay(order_id))["payment_id"]
    body, headers = await razorpay_fake.webhook(event_type, payment_id=payment_id)
    # when the delivery is verified
    event = gateway.verify_webhook(body, headers)
    # then it is one normalized event about that order and payment; only order.paid
    # carries the order (and its notes, so Settle's payment id) in its payload
    entities = (
        f"order={order_id},payment={payment_id}"
        if event_type == "order.paid"
        else (f"payment={payment_id}")
    )
    assert event == GatewayEvent(
        provider=RAZORPAY,
        event_id=f"{event_type}:{json.loads(body)['created_at']}:{entities}",
        gateway_event_id=headers["X-Razorpay-Event-Id"],
        event_type=event_type,
        kind=kind,
        payload=json.loads(body),
        provider_order_id=order_id,
        provider_payment_id=payment_id,
        payment_id=request.payment_id if event_type == "order.paid" else None,
        amount_minor=250_000,
        currency="INR",
        failure_reason=failure_reason,
    )
    assert event.payload["contains"] == (
        ["payment", "order"] if event_type == "order.paid" else ["payment"]
    )


async def test_a_payment_with_settles_id_in_its_notes_names_the_payment(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a payment whose Checkout passed Settle's payment id in its notes
    request = payment_request(250_000)
    order_id = (await gateway.create_payment(request)).provider_order_id
    paid = await razorpay_fake.pay(order_id, notes={"settle_payment_id": request.payment_id})
    body, headers = await razorpay_fake.webhook("payment.captured", payment_id=paid["payment_id"])
    # when the delivery is verified, then the event names Settle's payment
    assert gateway.verify_webhook(body, headers).payment_id == request.payment_id


async def test_a_paid_link_parses_into_a_success_for_the_link(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a link the payer paid
    request = payment_request(150_000)
    link_id = (await gateway.create_payment_link(request)).provider_order_id
    paid = await razorpay_fake.pay_link(link_id)
    body, headers = await razorpay_fake.webhook("payment_link.paid", link_id=link_id)
    # when the delivery is verified
    event = gateway.verify_webhook(body, headers)
    # then it is a success found by the link id Settle stored, and by Settle's id
    assert event == GatewayEvent(
        provider=RAZORPAY,
        event_id=(
            f"payment_link.paid:{json.loads(body)['created_at']}:order={paid['order_id']},"
            f"payment={paid['payment_id']},payment_link={link_id}"
        ),
        gateway_event_id=headers["X-Razorpay-Event-Id"],
        event_type="payment_link.paid",
        kind=EventKind.PAYMENT_SUCCEEDED,
        payload=json.loads(body),
        provider_order_id=link_id,
        provider_payment_id=paid["payment_id"],
        payment_id=request.payment_id,
        amount_minor=150_000,
        currency="INR",
    )
    assert event.payload["contains"] == ["payment_link", "order", "payment"]
    # and its payment.captured names Settle's payment through the notes the link passed on
    body, headers = await razorpay_fake.webhook("payment.captured", payment_id=paid["payment_id"])
    assert gateway.verify_webhook(body, headers).payment_id == request.payment_id


@pytest.mark.parametrize(
    ("event_type", "settled_as", "kind", "failure_reason"),
    [
        ("refund.processed", None, EventKind.REFUND_SUCCEEDED, None),
        (
            "refund.failed",
            "failed",
            EventKind.REFUND_FAILED,
            "Razorpay could not process the refund",
        ),
    ],
)
async def test_refund_events_parse_into_normalized_events(
    gateway: RazorpayGateway,
    razorpay_fake: RazorpayFake,
    event_type: str,
    settled_as: str | None,
    kind: EventKind,
    failure_reason: str | None,
) -> None:
    # given a paid order with a refund of ₹400.00 that Razorpay processed, or failed later
    _, order_id, paid = await paid_order(gateway, razorpay_fake)
    if settled_as:
        await razorpay_fake.start_refunds_as("pending")
    refund = await gateway.refund(
        provider_payment_id=paid["payment_id"],
        amount_minor=40_000,
        refund_id=str(uuid.uuid4()),
        reason="Scope cut",
    )
    if settled_as:
        await razorpay_fake.settle_refund(refund.provider_refund_id, settled_as)
    body, headers = await razorpay_fake.webhook(event_type, refund_id=refund.provider_refund_id)
    # when the delivery is verified
    event = gateway.verify_webhook(body, headers)
    # then it names the refund, its own amount, and the payment it refunds
    assert event == GatewayEvent(
        provider=RAZORPAY,
        event_id=(
            f"{event_type}:{json.loads(body)['created_at']}:payment={paid['payment_id']},"
            f"refund={refund.provider_refund_id}"
        ),
        gateway_event_id=headers["X-Razorpay-Event-Id"],
        event_type=event_type,
        kind=kind,
        payload=json.loads(body),
        provider_order_id=order_id,
        provider_payment_id=paid["payment_id"],
        amount_minor=250_000,
        currency="INR",
        provider_refund_id=refund.provider_refund_id,
        refund_amount_minor=40_000,
        failure_reason=failure_reason,
    )
    assert event.payload["contains"] == ["refund", "payment"]


def test_a_signed_body_that_is_not_an_event_is_rejected(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given bodies signed with the right secret that are not Razorpay events
    secret = razorpay_fake.webhook_secret.encode()
    for raw in (b"not json", b"[]", b'{"entity":"event"}'):
        headers = {
            "X-Razorpay-Signature": hmac.new(secret, raw, hashlib.sha256).hexdigest(),
            "X-Razorpay-Event-Id": "EvtNotAnEvent1",
        }
        # when each is verified, then it is rejected
        with pytest.raises(InvalidSignatureError):
            gateway.verify_webhook(raw, headers)


# --- refunds -------------------------------------------------------------------------------


async def test_refunds_partial_then_full_never_above_what_was_captured(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a captured payment of ₹2,500.00
    _, _, paid = await paid_order(gateway, razorpay_fake)
    payment_id = paid["payment_id"]
    first_id, second_id, third_id = (str(uuid.uuid4()) for _ in range(3))
    # when ₹1,000.00 is refunded
    partial = await gateway.refund(
        provider_payment_id=payment_id, amount_minor=100_000, refund_id=first_id, reason="Late"
    )
    # then Razorpay processed it at once, with Settle's refund id as receipt and note
    assert partial == RefundResult(provider_refund_id=partial.provider_refund_id, settled=True)
    refund = await razorpay_fake.get(f"/v1/refunds/{partial.provider_refund_id}")
    assert {k: refund[k] for k in ("amount", "payment_id", "receipt", "notes", "status")} == {
        "amount": 100_000,
        "payment_id": payment_id,
        "receipt": first_id,
        "notes": {"settle_refund_id": first_id, "reason": "Late"},
        "status": "processed",
    }
    payment = await razorpay_fake.get(f"/v1/payments/{payment_id}")
    assert (payment["status"], payment["amount_refunded"], payment["refund_status"]) == (
        "captured",
        100_000,
        "partial",
    )
    # when more than the ₹1,500.00 left is asked for, then Razorpay refuses for good
    with pytest.raises(GatewayError) as caught:
        await gateway.refund(
            provider_payment_id=payment_id, amount_minor=150_001, refund_id=second_id, reason=""
        )
    assert caught.value.temporary is False
    assert "greater than amount captured" in str(caught.value)
    # when exactly what is left is refunded
    rest = await gateway.refund(
        provider_payment_id=payment_id, amount_minor=150_000, refund_id=third_id, reason=""
    )
    # then the payment is fully refunded
    assert rest.settled is True
    payment = await razorpay_fake.get(f"/v1/payments/{payment_id}")
    assert (payment["status"], payment["amount_refunded"], payment["refund_status"]) == (
        "refunded",
        250_000,
        "full",
    )


async def test_a_refund_above_the_captured_amount_is_refused(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a captured payment of ₹2,500.00
    _, _, paid = await paid_order(gateway, razorpay_fake)
    # when ₹2,500.01 is refunded
    with pytest.raises(GatewayError) as caught:
        await gateway.refund(
            provider_payment_id=paid["payment_id"],
            amount_minor=250_001,
            refund_id=str(uuid.uuid4()),
            reason="",
        )
    # then Razorpay refuses for good and nothing was refunded
    assert caught.value.temporary is False
    payment = await razorpay_fake.get(f"/v1/payments/{paid['payment_id']}")
    assert payment["amount_refunded"] == 0


async def test_a_retried_refund_refunds_once(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a captured payment and a refund Settle asked for
    _, _, paid = await paid_order(gateway, razorpay_fake)
    refund_id = str(uuid.uuid4())
    first = await gateway.refund(
        provider_payment_id=paid["payment_id"], amount_minor=50_000, refund_id=refund_id, reason=""
    )
    # when the same refund is asked for again (a retried job)
    again = await gateway.refund(
        provider_payment_id=paid["payment_id"], amount_minor=50_000, refund_id=refund_id, reason=""
    )
    # then Razorpay answers with the same refund and the money went back once
    assert again == first
    payment = await razorpay_fake.get(f"/v1/payments/{paid['payment_id']}")
    assert payment["amount_refunded"] == 50_000


async def test_a_refund_razorpay_has_not_processed_yet_is_not_settled(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given Razorpay queues refunds instead of processing them at once
    _, _, paid = await paid_order(gateway, razorpay_fake)
    await razorpay_fake.start_refunds_as("pending")
    # when one is asked for
    result = await gateway.refund(
        provider_payment_id=paid["payment_id"],
        amount_minor=50_000,
        refund_id=str(uuid.uuid4()),
        reason="",
    )
    # then Settle waits for refund.processed
    assert result == RefundResult(provider_refund_id=result.provider_refund_id, settled=False)


# --- temporary and permanent failures ------------------------------------------------------


async def test_a_server_error_is_temporary_and_the_retry_succeeds(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given Razorpay answers the next request with 500
    await razorpay_fake.fault("error")
    request = payment_request()
    # when the order is asked for, then the failure is temporary
    with pytest.raises(GatewayError) as caught:
        await gateway.create_payment(request)
    assert caught.value.temporary is True
    # and asking again (the retried job) gets the order
    checkout = await gateway.create_payment(request)
    assert checkout.provider_order_id.startswith("order_")


async def test_a_hung_gateway_fails_temporarily_within_the_timeout(
    razorpay_fake: RazorpayFake,
) -> None:
    # given a gateway with a half-second timeout and Razorpay never answering
    gateway = RazorpayGateway(razorpay_fake.settings(), timeout=0.5)
    await razorpay_fake.fault("hang")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        # when the order is asked for
        with pytest.raises(GatewayError) as caught:
            await gateway.create_payment(payment_request())
        # then it fails as temporary, in about the timeout rather than never
        assert caught.value.temporary is True
        assert loop.time() - started < 5
    finally:
        await razorpay_fake.reset()


async def test_an_unreachable_gateway_is_temporary(razorpay_fake: RazorpayFake) -> None:
    # given nothing listens at the API base
    settings = razorpay_fake.settings(razorpay_api_base=f"http://127.0.0.1:{closed_port()}")
    gateway = RazorpayGateway(settings, timeout=2.0)
    # when a status is asked for, then the failure is temporary
    with pytest.raises(GatewayError) as caught:
        await gateway.fetch_status(
            provider_order_id="order_Unreachable0001", provider_payment_id=None
        )
    assert caught.value.temporary is True


async def test_wrong_credentials_are_refused_for_good(razorpay_fake: RazorpayFake) -> None:
    # given a key secret Razorpay does not know
    gateway = RazorpayGateway(razorpay_fake.settings(razorpay_key_secret="not-the-secret"))
    # when an order is asked for, then Razorpay's 401 is a permanent failure
    with pytest.raises(GatewayError) as caught:
        await gateway.create_payment(payment_request())
    assert caught.value.temporary is False
    assert "Authentication failed" in str(caught.value)


# --- reconciliation ------------------------------------------------------------------------


async def test_fetch_status_follows_the_orders_payments(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given an order nobody has tried to pay yet
    order_id = (await gateway.create_payment(payment_request(250_000))).provider_order_id
    # then it is pending
    status = await gateway.fetch_status(provider_order_id=order_id, provider_payment_id=None)
    assert status == RemoteStatus(state=RemoteState.PENDING)
    # when an attempt fails, then the order is failed, with Razorpay's reason
    failed_id = await razorpay_fake.fail(order_id, "Insufficient funds")
    status = await gateway.fetch_status(provider_order_id=order_id, provider_payment_id=None)
    assert status == RemoteStatus(
        state=RemoteState.FAILED, provider_payment_id=failed_id, failure_reason="Insufficient funds"
    )
    # when a later attempt is authorized, then it is pending again
    authorized = await razorpay_fake.authorize(order_id)
    status = await gateway.fetch_status(provider_order_id=order_id, provider_payment_id=None)
    assert status == RemoteStatus(
        state=RemoteState.PENDING, provider_payment_id=authorized["payment_id"]
    )
    # when the payer pays, then it succeeded with the amount
    paid = await razorpay_fake.pay(order_id)
    status = await gateway.fetch_status(provider_order_id=order_id, provider_payment_id=None)
    assert status == RemoteStatus(
        state=RemoteState.SUCCEEDED,
        provider_payment_id=paid["payment_id"],
        amount_minor=250_000,
        currency="INR",
    )


async def test_fetch_status_reports_what_was_refunded(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given a paid order refunded in part, then in full
    _, order_id, paid = await paid_order(gateway, razorpay_fake)
    payment_id = paid["payment_id"]
    expected = RemoteStatus(
        state=RemoteState.SUCCEEDED,
        provider_payment_id=payment_id,
        amount_minor=250_000,
        currency="INR",
    )
    for amount, refunded in ((100_000, 100_000), (150_000, 250_000)):
        await gateway.refund(
            provider_payment_id=payment_id,
            amount_minor=amount,
            refund_id=str(uuid.uuid4()),
            reason="",
        )
        # when its status is asked for
        status = await gateway.fetch_status(
            provider_order_id=order_id, provider_payment_id=payment_id
        )
        # then it succeeded, with what has gone back so far
        assert status == RemoteStatus(
            state=expected.state,
            provider_payment_id=payment_id,
            amount_minor=250_000,
            currency="INR",
            amount_refunded_minor=refunded,
        )


async def test_fetch_status_of_a_link(
    gateway: RazorpayGateway, razorpay_fake: RazorpayFake
) -> None:
    # given an unpaid link, a paid link and a cancelled link
    unpaid = (await gateway.create_payment_link(payment_request(150_000))).provider_order_id
    paid_link = (await gateway.create_payment_link(payment_request(150_000))).provider_order_id
    paid = await razorpay_fake.pay_link(paid_link)
    cancelled = (await gateway.create_payment_link(payment_request(150_000))).provider_order_id
    await razorpay_fake.post(f"/v1/payment_links/{cancelled}/cancel")
    # when their statuses are asked for
    statuses = [
        await gateway.fetch_status(provider_order_id=link_id, provider_payment_id=None)
        for link_id in (unpaid, paid_link, cancelled)
    ]
    # then they are pending, succeeded and cancelled
    assert statuses == [
        RemoteStatus(state=RemoteState.PENDING),
        RemoteStatus(
            state=RemoteState.SUCCEEDED,
            provider_payment_id=paid["payment_id"],
            amount_minor=150_000,
            currency="INR",
        ),
        RemoteStatus(state=RemoteState.CANCELLED),
    ]


async def test_fetch_status_of_an_unknown_order_is_a_permanent_failure(
    gateway: RazorpayGateway,
) -> None:
    # given an order id Razorpay never issued
    # when its status is asked for, then Razorpay's refusal is permanent
    with pytest.raises(GatewayError) as caught:
        await gateway.fetch_status(
            provider_order_id="order_NeverIssued001", provider_payment_id=None
        )
    assert caught.value.temporary is False
    assert "does not exist" in str(caught.value)


# --- configuration -------------------------------------------------------------------------


def test_get_gateway_builds_razorpay_only_when_fully_configured(
    razorpay_fake: RazorpayFake,
) -> None:
    # given full Razorpay settings, then the provider's gateway is Razorpay's
    assert isinstance(get_gateway(RAZORPAY, razorpay_fake.settings()), RazorpayGateway)
    # given no webhook secret, then Razorpay is not configured
    with pytest.raises(GatewayNotConfiguredError):
        get_gateway(RAZORPAY, razorpay_fake.settings(razorpay_webhook_secret=None))
    with pytest.raises(GatewayNotConfiguredError):
        RazorpayGateway(razorpay_fake.settings(razorpay_key_secret=None))
