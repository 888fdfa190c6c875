"""The webhook service: verified events stored once, processed once, in any order.

Events come from the sandbox gateway, signed as its hosted page signs them.
Duplicates and disorder, which no real gateway produces on demand, are built
as properly signed events and handed to the same ``receive`` / ``store`` /
``process`` the endpoint and the worker use.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from settle.core.outbox import relay_later, transaction
from settle.gateways.base import EventKind, GatewayEvent, InvalidSignatureError
from settle.gateways.sandbox import SIGNATURE_HEADER
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.models.outbox import OutboxKind, OutboxMessage
from settle.models.payment import (
    OfflineMethod,
    Payment,
    PaymentAuditEntry,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.models.project import Project
from settle.services import payment as payment_service
from settle.services import webhook as webhook_service
from settle.services.payment import PaymentNotFoundYetError
from settle.subscriptions import channels
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_project
from tests.fixtures.sandbox import (
    approved_milestone,
    audit_trail,
    event_body,
    gateway_event,
    pay_milestones,
    signed,
)

T = TypeVar("T")
P = PaymentStatus
SANDBOX = PaymentProvider.SANDBOX


@pytest.fixture
async def project(owner: Account) -> Project:
    return await create_project(owner, await create_client(owner, currency="USD"), currency="USD")


@pytest.fixture
async def milestone(db: Backend, owner: Account, project: Project) -> Milestone:
    """A $500.00 milestone, approved and invoiced."""
    approved = await approved_milestone(owner, project, amount="500.00")
    await db.drain()
    return await Milestone.get(id=approved.id)


@pytest.fixture
async def payment(owner: Account, milestone: Milestone) -> Payment:
    """The milestone's payment, waiting at the sandbox's checkout."""
    return (await pay_milestones(owner, [milestone]))[0]


def require_postgres(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite runs one transaction at a time; the race needs PostgreSQL")


async def committed(call: Awaitable[T]) -> T:
    async with transaction():
        return await call


async def stored(event: GatewayEvent) -> WebhookEvent:
    """An event stored as the endpoint stores it, its processing job held back."""
    with relay_later():
        received = await webhook_service.store(event)
    assert received.new
    return received.event


async def processing_jobs() -> list[list[Any]]:
    rows = OutboxMessage.filter(kind=OutboxKind.JOB, topic=payment_service.PROCESS_WEBHOOK_JOB)
    return [row.payload["args"] for row in await rows.order_by("id")]


async def announced_statuses(agency_id: uuid.UUID) -> list[str]:
    rows = OutboxMessage.filter(kind=OutboxKind.EVENT, topic=channels.payments(agency_id))
    return [row.payload["status"] for row in await rows.order_by("id")]


# --- receiving ---------------------------------------------------------------------------------


async def test_a_verified_event_is_stored_once_and_processed_once(
    db: Backend, owner: Account, payment: Payment
) -> None:
    # given a signed success delivered by the sandbox
    body = event_body(payment, "payment.succeeded", id="sbx_evt_1")

    # when it is received, and the gateway delivers it again
    first = await webhook_service.receive(SANDBOX, body, signed(body))
    again = await webhook_service.receive(SANDBOX, body, signed(body))
    await db.drain()

    # then one event is stored, with the raw payload and what it means
    assert (first.new, again.new, again.event.id) == (True, False, first.event.id)
    row = await WebhookEvent.get(id=first.event.id)
    assert (row.provider, row.event_id, row.event_type, row.payload["raw"]["id"]) == (
        SANDBOX,
        "sbx_evt_1",
        "payment.succeeded",
        "sbx_evt_1",
    )
    assert row.payload["event"]["kind"] == "payment_succeeded"
    assert payment_service.from_dict(row.payload["event"], row.payload["raw"]) == gateway_event(
        payment, "payment.succeeded", id="sbx_evt_1"
    )
    # and it was processed by one job
    assert await processing_jobs() == [[str(row.id)]]
    assert (row.outcome, row.attempts, row.last_error, row.payment_id) == (
        "applied",
        1,
        None,
        payment.id,
    )
    assert row.processed_at is not None
    assert (await Payment.get(id=payment.id)).status == P.SUCCEEDED
    assert [e.id for e in await webhook_service.events_for_payment(payment.id)] == [row.id]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {SIGNATURE_HEADER: ""},
        {SIGNATURE_HEADER: "0" * 64},
    ],
    ids=["missing", "empty", "wrong"],
)
async def test_an_unsigned_event_is_refused_and_nothing_is_stored(
    db: Backend, payment: Payment, headers: dict[str, str]
) -> None:
    # given a success without its signature, or with a wrong one
    body = event_body(payment, "payment.succeeded")
    before = await row_counts(WebhookEvent, Payment)
    # when it is received; then it is refused, and nothing is stored or sent
    with pytest.raises(InvalidSignatureError):
        await webhook_service.receive(SANDBOX, body, headers)
    assert await row_counts(WebhookEvent, Payment) == before


async def test_a_tampered_byte_breaks_the_signature(db: Backend, payment: Payment) -> None:
    # given a signed body, and the same body with one byte changed (a bigger amount)
    body = event_body(payment, "payment.succeeded")
    tampered = body.replace(b'"amount_minor": 50000', b'"amount_minor": 50001')
    assert len(tampered) == len(body)
    assert tampered != body
    # when the tampered body arrives with the genuine signature; then it is refused
    with pytest.raises(InvalidSignatureError):
        await webhook_service.receive(SANDBOX, tampered, signed(body))
    assert await WebhookEvent.all().count() == 0


async def test_a_signed_but_malformed_event_is_refused(db: Backend) -> None:
    # given correctly signed bodies that are not sandbox events (no JSON, no id, no object);
    # when each is received; then each is refused like a forgery
    for body in (b"not json", b'{"type": "payment.succeeded"}', b"[]"):
        with pytest.raises(InvalidSignatureError):
            await webhook_service.receive(SANDBOX, body, signed(body))
    assert await WebhookEvent.all().count() == 0


async def test_the_same_event_delivered_five_times_at_once_is_applied_once(
    db: Backend, owner: Account, milestone: Milestone, payment: Payment
) -> None:
    require_postgres(db)
    # given one signed success
    body = event_body(payment, "payment.succeeded")

    # when the gateway delivers it five times at the same moment
    results = await asyncio.gather(
        *(webhook_service.receive(SANDBOX, body, signed(body)) for _ in range(5))
    )
    await db.drain()

    # then all five are answered with the one stored event, and one job processed it
    assert sorted(result.new for result in results) == [False, False, False, False, True]
    assert len({result.event.id for result in results}) == 1
    [row] = await WebhookEvent.all()
    assert await processing_jobs() == [[str(row.id)]]
    assert (row.outcome, row.attempts) == ("applied", 1)
    # and the payment changed once, announced once
    assert (await Payment.get(id=payment.id)).status == P.SUCCEEDED
    assert await PaymentAuditEntry.filter(action="payment_succeeded").count() == 1
    assert (await announced_statuses(owner.agency_id)).count("succeeded") == 1
    assert (await Milestone.get(id=milestone.id)).status == MilestoneStatus.PAID


# --- processing --------------------------------------------------------------------------------


async def test_processing_one_event_twice_at_once_applies_it_once(
    db: Backend, owner: Account, payment: Payment
) -> None:
    require_postgres(db)
    # given a stored success not processed yet
    row = await stored(gateway_event(payment, "payment.succeeded"))

    # when two workers process it at the same moment
    outcomes = await asyncio.gather(
        webhook_service.process(row.id), webhook_service.process(row.id)
    )

    # then one applied it and the other found it done
    assert sorted(outcomes, key=str) == [None, "applied"]
    assert await PaymentAuditEntry.filter(action="payment_succeeded").count() == 1
    assert (await announced_statuses(owner.agency_id)).count("succeeded") == 1
    assert (await WebhookEvent.get(id=row.id)).attempts == 1


async def test_processing_an_event_again_changes_nothing(
    db: Backend, owner: Account, milestone: Milestone, payment: Payment
) -> None:
    # given a success processed once
    row = await stored(gateway_event(payment, "payment.succeeded"))
    assert await webhook_service.process(row.id) == "applied"
    before = await row_counts(Payment, PaymentAuditEntry, Invoice, Milestone)

    # when it is processed again (a redelivered job); then nothing more happens
    assert await webhook_service.process(row.id) is None
    assert await row_counts(Payment, PaymentAuditEntry, Invoice, Milestone) == before
    assert (await WebhookEvent.get(id=row.id)).attempts == 1
    # and an unknown event id is no error either
    assert await webhook_service.process(uuid.uuid4()) is None


async def test_a_failure_after_the_success_changes_nothing(
    db: Backend, owner: Account, milestone: Milestone, payment: Payment
) -> None:
    # given a payment the sandbox reported succeeded
    success = await stored(gateway_event(payment, "payment.succeeded"))
    assert await webhook_service.process(success.id) == "applied"

    # when a failure for it arrives late
    failure = await stored(
        gateway_event(payment, "payment.failed", failure_reason="Insufficient funds")
    )
    before = await row_counts(Payment, PaymentAuditEntry, Invoice, Milestone)
    outcome = await webhook_service.process(failure.id)

    # then it is ignored: the payment stays paid, and so do its milestone and invoice
    assert outcome == "ignored"
    row = await Payment.get(id=payment.id)
    assert (row.status, row.failure_reason, row.failed_at) == (P.SUCCEEDED, None, None)
    assert (await Milestone.get(id=milestone.id)).status == MilestoneStatus.PAID
    assert (await Invoice.get(id=milestone.invoice_id)).status == InvoiceStatus.PAID
    assert await row_counts(Payment, PaymentAuditEntry, Invoice, Milestone) == before
    processed = await WebhookEvent.get(id=failure.id)
    assert (processed.outcome, processed.payment_id) == ("ignored", payment.id)
    assert processed.processed_at is not None


async def test_a_refund_reported_before_the_success_ends_refunded(
    db: Backend, owner: Account, milestone: Milestone, payment: Payment
) -> None:
    # given the refund of the whole payment, delivered before the success it refunds
    refund = await stored(
        gateway_event(
            payment, "refund.succeeded", refund_id="sbx_rf_early", refund_amount_minor=50_000
        )
    )
    success = await stored(gateway_event(payment, "payment.succeeded"))

    # when the worker processes them in that order
    assert await webhook_service.process(refund.id) == "applied"
    assert (await Payment.get(id=payment.id)).status == P.REFUNDED
    assert await webhook_service.process(success.id) == "applied"

    # then the payment ends refunded, and the milestone it paid is owed again
    row = await Payment.get(id=payment.id)
    assert (row.status, row.amount_refunded_minor, row.provider_payment_id) == (
        P.REFUNDED,
        50_000,
        f"sbx_pay_{payment.id}",
    )
    assert row.succeeded_at is not None
    paid = await Milestone.get(id=milestone.id)
    assert (
        paid.status,
        paid.payment_status,
        paid.amount_paid_minor,
        paid.amount_refunded_minor,
    ) == (MilestoneStatus.APPROVED, MilestonePaymentStatus.REFUNDED, 50_000, 50_000)
    invoice = await Invoice.get(id=milestone.invoice_id)
    assert (invoice.amount_paid_minor, invoice.amount_refunded_minor) == (50_000, 50_000)
    [settled] = await Refund.filter(payment_id=payment.id)
    assert (settled.status, settled.amount_minor, settled.provider_refund_id) == (
        RefundStatus.SUCCEEDED,
        50_000,
        "sbx_rf_early",
    )
    assert [action for action, *_ in await audit_trail(row)][-2:] == [
        "refund_succeeded",
        "payment_succeeded",
    ]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"amount_minor": 49_999}, "The gateway reported amount 499.99 instead of 500.00"),
        ({"currency": "EUR"}, "The gateway reported currency EUR instead of USD"),
    ],
    ids=["amount", "currency"],
)
async def test_a_success_for_another_amount_or_currency_is_flagged_not_applied(
    db: Backend,
    owner: Account,
    milestone: Milestone,
    payment: Payment,
    fields: dict[str, Any],
    reason: str,
) -> None:
    # given a success reporting money other than the payment's
    row = await stored(gateway_event(payment, "payment.succeeded", **fields))

    # when it is processed
    outcome = await webhook_service.process(row.id)

    # then the payment is flagged for a person and not paid
    assert outcome == "flagged"
    flagged = await Payment.get(id=payment.id)
    assert (flagged.status, flagged.flagged_reason, flagged.succeeded_at) == (
        P.PENDING,
        f"{reason}; not applied",
        None,
    )
    assert (await Milestone.get(id=milestone.id)).status == MilestoneStatus.APPROVED
    assert (await Invoice.get(id=milestone.invoice_id)).status == InvoiceStatus.SENT
    assert (await audit_trail(flagged))[-1] == (
        "payment_succeeded_flagged",
        "sandbox",
        None,
        f"{reason}; not applied",
    )
    assert (await WebhookEvent.get(id=row.id)).outcome == "flagged"


async def test_an_event_of_no_interest_is_stored_and_ignored(db: Backend, payment: Payment) -> None:
    # given a verified event type Settle does not act on, stored
    row = await stored(gateway_event(payment, "payment.authorized"))
    assert row.payload["event"]["kind"] == EventKind.OTHER.value
    # when it is processed; then it is marked ignored and the payment is untouched
    assert await webhook_service.process(row.id) == "ignored"
    processed = await WebhookEvent.get(id=row.id)
    assert (processed.outcome, processed.payment_id) == ("ignored", None)
    assert (await Payment.get(id=payment.id)).status == P.PENDING


async def test_an_event_for_an_unknown_payment_waits_for_it(db: Backend, payment: Payment) -> None:
    # given a success for a payment this database has never seen
    event = gateway_event(
        payment,
        "payment.succeeded",
        payment_id=str(uuid.uuid4()),
        order_id="sbx_unknown",
        payment_ref="sbx_pay_unknown",
    )
    row = await stored(event)

    # when it is processed; then it raises for a retry, and the event stays unprocessed
    with pytest.raises(PaymentNotFoundYetError):
        await webhook_service.process(row.id)
    await webhook_service.record_failure(row.id, "PaymentNotFoundYetError: not yet")
    waiting = await WebhookEvent.get(id=row.id)
    assert (waiting.processed_at, waiting.outcome, waiting.attempts, waiting.last_error) == (
        None,
        None,
        1,
        "PaymentNotFoundYetError: not yet",
    )
    assert (await Payment.get(id=payment.id)).status == P.PENDING


async def test_a_success_for_invoices_paid_meanwhile_is_refunded_not_applied_twice(
    db: Backend, owner: Account, milestone: Milestone, payment: Payment
) -> None:
    # given the milestone's invoice paid in full by bank transfer while the payment was open
    assert milestone.invoice_id is not None
    async with transaction():
        await payment_service.record_offline_payment(
            owner.actor,
            milestone.invoice_id,
            amount="500.00",
            method=OfflineMethod.BANK_TRANSFER,
            reference="UTR-77",
            explorer_url=None,
        )
    invoice = await Invoice.get(id=milestone.invoice_id)

    # when the gateway's success for the open payment (superseded meanwhile) arrives
    row = await stored(gateway_event(payment, "payment.succeeded"))
    outcome = await webhook_service.process(row.id)
    await db.drain()

    # then it is taken as a duplicate: recorded, refunded in full, the invoice not paid twice
    assert outcome == "duplicate"
    duplicate = await Payment.get(id=payment.id)
    assert (duplicate.status, duplicate.flagged_reason, duplicate.auto_refund_reason) == (
        P.REFUNDED,
        None,
        f"Captured after Invoice {invoice.number} is paid: refunded in full as a duplicate payment",
    )
    [refund] = await Refund.filter(payment_id=payment.id)
    assert (refund.status, refund.amount_minor, refund.reason) == (
        RefundStatus.SUCCEEDED,
        50_000,
        f"Duplicate payment: Invoice {invoice.number} is paid",
    )
    assert (await Invoice.get(id=invoice.id)).amount_paid_minor == 50_000


async def test_a_long_event_id_is_still_recognised_as_a_duplicate(
    db: Backend, payment: Payment
) -> None:
    # given an event whose id is longer than the column (stored cut to its width)
    body = event_body(payment, "payment.succeeded", id="e" * 300)
    # when it is delivered twice; then the second is found as the duplicate it is
    first = await webhook_service.receive(SANDBOX, body, signed(body))
    again = await webhook_service.receive(SANDBOX, body, signed(body))
    assert (first.new, again.new, again.event.id) == (True, False, first.event.id)
    assert await WebhookEvent.all().count() == 1
