"""``POST /webhooks/<provider>`` and the sandbox's hosted checkout page, over HTTP.

Deliveries carry real sandbox signatures over the raw body, as the sandbox's
own page sends them; the in-process worker applies what was stored.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from settle.core import clock
from settle.core.settings import configure_settings
from settle.gateways.sandbox import PAGE_TTL_SECONDS
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.payment import Payment, PaymentStatus, WebhookEvent
from settle.models.project import Project
from settle.services import payment_link
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_project,
    issue_invoice,
)
from tests.fixtures.sandbox import approved_milestone, event_body, pay_milestones, signed

P = PaymentStatus


@pytest.fixture
async def milestone(db: Backend, owner: Account) -> Milestone:
    """A $1,250.00 milestone, approved and invoiced."""
    project: Project = await create_project(
        owner, await create_client(owner, currency="USD"), currency="USD"
    )
    approved = await approved_milestone(owner, project, amount="1250.00")
    await db.drain()
    return approved


@pytest.fixture
async def payment(owner: Account, milestone: Milestone) -> Payment:
    """The milestone's payment, waiting at the sandbox's checkout."""
    return (await pay_milestones(owner, [milestone]))[0]


def page_path(payment: Payment) -> str:
    assert payment.checkout_url is not None
    return payment.checkout_url.removeprefix("http://settle.test")


async def post_webhook(
    http: httpx.AsyncClient, provider: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await http.post(
        f"/webhooks/{provider}",
        content=body,
        headers={"content-type": "application/json", **headers},
    )


# --- POST /webhooks/<provider> ---------------------------------------------------------------


async def test_a_signed_delivery_is_acknowledged_and_a_redelivery_is_a_duplicate(
    db: Backend, http: httpx.AsyncClient, payment: Payment
) -> None:
    # given a signed success from the sandbox
    body = event_body(payment, "payment.succeeded", id="sbx_evt_http")

    # when it is posted, and posted again
    first = await post_webhook(http, "sandbox", body, signed(body))
    again = await post_webhook(http, "sandbox", body, signed(body))
    await db.drain()

    # then both are acknowledged with the one stored event, the second as a duplicate
    [row] = await WebhookEvent.all()
    assert (first.status_code, first.json()) == (
        200,
        {"received": True, "id": str(row.id), "duplicate": False},
    )
    assert (again.status_code, again.json()) == (
        200,
        {"received": True, "id": str(row.id), "duplicate": True},
    )
    # and the worker applied it once
    assert (row.event_id, row.outcome, row.attempts) == ("sbx_evt_http", "applied", 1)
    assert (await Payment.get(id=payment.id)).status == P.SUCCEEDED


@pytest.mark.parametrize("forgery", ["tampered byte", "missing header", "other body's signature"])
async def test_a_delivery_that_does_not_verify_is_refused_and_changes_nothing(
    db: Backend, http: httpx.AsyncClient, payment: Payment, forgery: str
) -> None:
    # given a signed success, changed the forgery's way
    body = event_body(payment, "payment.succeeded")
    headers = signed(body)
    if forgery == "tampered byte":
        body = body.replace(b'"currency": "USD"', b'"currency": "USE"')
    elif forgery == "missing header":
        headers = {}
    else:
        headers = signed(event_body(payment, "payment.succeeded"))
    before = await row_counts(WebhookEvent, Payment)

    # when it is posted
    response = await post_webhook(http, "sandbox", body, headers)

    # then it is refused, and nothing was stored or sent
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_SIGNATURE"
    assert await row_counts(WebhookEvent, Payment) == before
    assert (await Payment.get(id=payment.id)).status == P.PENDING


@pytest.mark.parametrize("provider", ["paypal", "offline", "SANDBOX"])
async def test_an_unknown_provider_is_not_found(
    db: Backend, http: httpx.AsyncClient, provider: str
) -> None:
    # given a body signed as the sandbox signs; when it is posted for another provider
    body = b'{"id": "evt", "type": "payment.succeeded"}'
    response = await post_webhook(http, provider, body, signed(body))
    # then there is no such endpoint
    assert (response.status_code, response.json()["code"]) == (404, "NOT_FOUND")
    assert await WebhookEvent.all().count() == 0


@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
async def test_a_gateway_with_no_secret_configured_is_not_found(
    db: Backend, http: httpx.AsyncClient, provider: str
) -> None:
    # given the test settings, which configure neither Stripe nor Razorpay
    body = b'{"id": "evt_1", "type": "payment_intent.succeeded"}'
    # when a delivery for it arrives; then there is no such endpoint
    response = await post_webhook(http, provider, body, {"stripe-signature": "t=1,v1=00"})
    assert (response.status_code, response.json()["code"]) == (404, "NOT_FOUND")
    assert await WebhookEvent.all().count() == 0


async def test_with_the_sandbox_switched_off_its_endpoint_and_page_are_not_found(
    db: Backend, http: httpx.AsyncClient, payment: Payment
) -> None:
    # given a signed sandbox success, and the sandbox then switched off
    body = event_body(payment, "payment.succeeded")
    headers = signed(body)
    configure_settings(db.settings.model_copy(update={"sandbox_payments": False}))
    try:
        response = await post_webhook(http, "sandbox", body, headers)
        page = await http.get(page_path(payment))
    finally:
        configure_settings(db.settings)
    # then neither answers, and nothing is stored
    assert (response.status_code, page.status_code) == (404, 404)
    assert await WebhookEvent.all().count() == 0


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_signed_delivery_over_the_body_limit_is_refused_unread_and_changes_nothing(
    db: Backend, http: httpx.AsyncClient, payment: Payment, declared: bool
) -> None:
    # given a correctly signed success padded to 3 MiB, past the 1 MiB limit
    body = event_body(payment, "payment.succeeded", padding="x" * (3 * 1024 * 1024))
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for start in range(0, len(body), 65536):
            sent += len(body[start : start + 65536])
            yield body[start : start + 65536]

    headers = {"content-type": "application/json", **signed(body)}
    if declared:
        headers["content-length"] = str(len(body))

    # when it is posted, with its length declared or streamed without one
    response = await http.post("/webhooks/sandbox", content=chunks(), headers=headers)

    # then it is refused at once (declared) or at the limit (streamed), and nothing is stored
    assert (response.status_code, response.json()) == (
        413,
        {"code": "REQUEST_TOO_LARGE", "message": "The request body is larger than 1048576 bytes"},
    )
    assert sent == (0 if declared else 17 * 65536)
    assert await WebhookEvent.all().count() == 0
    assert (await Payment.get(id=payment.id)).status == P.PENDING


async def test_only_post_is_answered(db: Backend, http: httpx.AsyncClient) -> None:
    # given / when / then
    assert (await http.get("/webhooks/sandbox")).status_code == 405


# --- the sandbox's hosted page -----------------------------------------------------------------


async def test_the_page_shows_the_amount_and_the_buttons(
    db: Backend, http: httpx.AsyncClient, payment: Payment
) -> None:
    # when the payer opens the checkout link
    response = await http.get(page_path(payment))

    # then the page shows what is paid, and a Pay and a Fail button posting back to it
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "<strong>$1,250.00</strong>" in response.text
    assert "<strong>pending</strong>" in response.text
    forms = re.findall(r'<form method="post" action="([^"]+)"', response.text)
    assert forms == [
        f"{payment.checkout_url}/succeed",
        f"{payment.checkout_url}/fail",
    ]
    assert re.findall(r"<button[^>]*>(\w+)</button>", response.text) == ["Pay", "Fail"]


async def test_pressing_pay_twice_delivers_one_event_that_pays_the_milestone(
    db: Backend, http: httpx.AsyncClient, milestone: Milestone, payment: Payment
) -> None:
    # when the payer presses Pay, and presses it again
    first = await http.post(f"{page_path(payment)}/succeed")
    again = await http.post(f"{page_path(payment)}/succeed")
    await db.drain()

    # then both presses are answered, and one signed event went through the pipeline
    assert (first.status_code, again.status_code) == (200, 200)
    assert "Payment sent" in first.text
    [row] = await WebhookEvent.all()
    assert (row.event_id, row.event_type, row.outcome) == (
        f"sbx_evt_{payment.id}_succeed",
        "payment.succeeded",
        "applied",
    )
    # and the payment and the milestone are paid
    paid = await Payment.get(id=payment.id)
    assert (paid.status, paid.provider_payment_id) == (P.SUCCEEDED, f"sbx_pay_{payment.id}")
    assert (await Milestone.get(id=milestone.id)).status == MilestoneStatus.PAID
    # and the page now shows the payment done, with no buttons
    page = await http.get(page_path(payment))
    assert "<strong>succeeded</strong>" in page.text
    assert "<form" not in page.text


async def test_pressing_fail_declines_the_payment(
    db: Backend, http: httpx.AsyncClient, milestone: Milestone, payment: Payment
) -> None:
    # when the payer presses Fail and the worker has run
    response = await http.post(f"{page_path(payment)}/fail")
    await db.drain()
    # then the payment is declined and the milestone still waits for its money
    assert (response.status_code, "Payment declined" in response.text) == (200, True)
    declined = await Payment.get(id=payment.id)
    assert (declined.status, declined.failure_reason) == (P.FAILED, "Declined in the sandbox")
    assert (await Milestone.get(id=milestone.id)).status == MilestoneStatus.APPROVED


@dataclass
class Frozen:
    now: datetime


@pytest.fixture
def frozen() -> Iterator[Frozen]:
    current = Frozen(datetime.now(UTC))
    clock.set_clock(lambda: current.now)
    yield current
    clock.set_clock(None)


async def test_an_expired_link_is_not_found(
    db: Backend, frozen: Frozen, http: httpx.AsyncClient, payment: Payment
) -> None:
    # given a checkout link made now (the clock stopped)
    path = page_path(payment)
    # when it is opened a second before it expires; then it works
    frozen.now += timedelta(seconds=PAGE_TTL_SECONDS - 1)
    assert (await http.get(path)).status_code == 200
    # when it is opened or pressed as it expires; then it is not found, and nothing is sent
    frozen.now += timedelta(seconds=1)
    assert (await http.get(path)).status_code == 404
    assert (await http.post(f"{path}/succeed")).status_code == 404
    assert await WebhookEvent.all().count() == 0


async def test_a_forged_link_or_button_is_not_found(
    db: Backend, http: httpx.AsyncClient, payment: Payment
) -> None:
    # given a genuine link, and one whose signature was altered
    path = page_path(payment)
    token = path.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    altered = ("B" if signature.startswith("A") else "A") + signature[1:]
    forged = f"/sandbox/pay/{payload}.{altered}"
    # when the altered link, a made-up one or an unknown button is used; then none is found
    for response in (
        await http.get(forged),
        await http.post(f"{forged}/succeed"),
        await http.get("/sandbox/pay/not-a-token"),
        await http.post(f"{path}/refund"),
    ):
        assert response.status_code == 404
        assert "This checkout link is not valid" in response.text
    assert await WebhookEvent.all().count() == 0
    # and a press that is not a POST is not a press
    assert (await http.get(f"{path}/succeed")).status_code == 405


# --- invoice payment links --------------------------------------------------------------------


async def test_an_invoices_payment_link_leads_to_a_hosted_checkout_and_pays_it(
    db: Backend, owner: Account, http: httpx.AsyncClient
) -> None:
    # given an issued invoice of ₹100.00 and the payment link printed on it
    client = await create_client(owner, currency="INR")
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    await db.drain()
    link = payment_link.payment_url(invoice)
    assert link is not None
    path = link.removeprefix("http://settle.test")

    # when the payer opens it, twice
    first = await http.get(path)
    second = await http.get(path)

    # then one payment of the balance is started and both go to its hosted page
    [payment] = await Payment.all()
    assert (payment.amount_minor, payment.currency, payment.invoice_id) == (
        10_000,
        "INR",
        invoice.id,
    )
    assert payment.checkout_url is not None
    assert [first.status_code, second.status_code] == [303, 303]
    assert first.headers["location"] == second.headers["location"] == payment.checkout_url

    # when the payer presses Pay on that page and the worker runs
    pressed = await http.post(payment.checkout_url.removeprefix("http://settle.test") + "/succeed")
    assert pressed.status_code == 200
    await db.drain()

    # then the invoice is paid, and the link says so
    await invoice.refresh_from_db()
    assert (invoice.status.value, invoice.amount_paid_minor) == ("paid", 10_000)
    paid = await http.get(path)
    assert paid.status_code == 409
    assert "This invoice is paid" in paid.text


async def test_a_forged_or_expired_payment_link_starts_nothing(
    db: Backend, owner: Account, http: httpx.AsyncClient
) -> None:
    # given an issued invoice's link
    client = await create_client(owner, currency="INR")
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    link = payment_link.payment_url(invoice)
    assert link is not None
    path = link.removeprefix("http://settle.test")

    # when the token is altered, or used after it expired
    forged = await http.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB"))
    later = datetime.now(UTC) + timedelta(days=payment_link.PAYMENT_LINK_DAYS, seconds=1)
    clock.set_clock(lambda: later)
    try:
        expired = await http.get(path)
    finally:
        clock.set_clock(None)

    # then both are refused and no payment exists
    assert [forged.status_code, expired.status_code] == [404, 404]
    assert await Payment.all().count() == 0
