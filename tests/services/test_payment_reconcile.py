"""Reconciliation: payments nobody heard of for too long are asked about, on a doubling schedule.

The sandbox keeps no state, so it answers "pending" until its page's buttons
are pressed: that is the unanswered case. What a gateway that did answer says
is applied with ``apply_status``, as ``reconcile_pending`` applies it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from settle.core import clock
from settle.core.outbox import transaction
from settle.core.settings import configure_settings, get_settings
from settle.gateways.base import RemoteState, RemoteStatus
from settle.models.client import Client
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.models.outbox import OutboxKind, OutboxMessage
from settle.models.payment import OfflineMethod, Payment, PaymentAuditEntry, PaymentStatus
from settle.models.project import Project
from settle.services import milestone as milestone_service
from settle.services import payment as payment_service
from settle.services.payment_reconcile import apply_status, reconcile_pending
from settle.subscriptions import channels
from tests.conftest import Backend
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_project,
    issue_invoice,
)
from tests.fixtures.sandbox import approved_milestone, audit_trail, pay_milestones

P = PaymentStatus
THRESHOLD = timedelta(minutes=15)  # payment_reconcile_after_seconds, by default


@dataclass
class Frozen:
    now: datetime


@pytest.fixture
def frozen() -> Iterator[Frozen]:
    """Settle's clock, stopped at the wall clock's time and moved by the test."""
    current = Frozen(datetime.now(UTC))
    clock.set_clock(lambda: current.now)
    yield current
    clock.set_clock(None)


@pytest.fixture
async def project(owner: Account) -> Project:
    return await create_project(owner, await create_client(owner, currency="USD"), currency="USD")


@pytest.fixture
async def milestone(db: Backend, frozen: Frozen, owner: Account, project: Project) -> Milestone:
    approved = await approved_milestone(owner, project, amount="500.00")
    await db.drain()
    return await Milestone.get(id=approved.id)


@pytest.fixture
async def payment(owner: Account, milestone: Milestone) -> Payment:
    """A $500.00 payment waiting at the sandbox's checkout."""
    return (await pay_milestones(owner, [milestone]))[0]


async def reconciled(payment: Payment) -> tuple[int, datetime | None, P, str | None]:
    row = await Payment.get(id=payment.id)
    return row.reconcile_attempts, row.last_reconciled_at, row.status, row.flagged_reason


async def test_a_payment_pending_past_the_threshold_is_asked_about(
    frozen: Frozen, owner: Account, project: Project, payment: Payment
) -> None:
    # given a payment with no checkout yet, and one settled offline: neither is asked about
    with_no_checkout = await approved_milestone(owner, project, title="Later")
    async with transaction():
        await payment_service.prepare_milestone_payment(owner.actor, [with_no_checkout.id], None)
    client = await Client.get(id=project.client_id)
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    async with transaction():
        await payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount="100.00",
            method=OfflineMethod.CASH,
            reference="Receipt",
            explorer_url=None,
        )

    # when reconciliation runs a second before the payment is due; then nobody is asked
    frozen.now = payment.created_at + THRESHOLD - timedelta(seconds=1)
    assert await reconcile_pending() == 0
    assert await reconciled(payment) == (0, None, P.PENDING, None)

    # when it runs at the threshold; then the sandbox is asked, and says pending
    frozen.now = payment.created_at + THRESHOLD
    assert await reconcile_pending() == 1
    assert await reconciled(payment) == (1, frozen.now, P.PENDING, None)
    # and it is not asked again right away
    assert await reconcile_pending() == 0
    assert await reconciled(payment) == (1, frozen.now, P.PENDING, None)


async def test_questions_come_at_doubling_intervals(frozen: Frozen, payment: Payment) -> None:
    # given the default schedule: 15 minutes after creation, then 30, 60, 120 minutes apart
    due = payment.created_at + THRESHOLD
    asked_at = []
    for attempt in range(1, 5):
        # when reconciliation runs a second early; then the payment is not due yet
        frozen.now = due - timedelta(seconds=1)
        row = await Payment.get(id=payment.id)
        assert payment_service.reconcile_due(row, frozen.now) is False
        assert await reconcile_pending() == 0
        # when it runs on time; then it is asked about
        frozen.now = due
        assert payment_service.reconcile_due(row, frozen.now) is True
        assert await reconcile_pending() == 1
        assert await reconciled(payment) == (attempt, due, P.PENDING, None)
        asked_at.append(due - payment.created_at)
        due += THRESHOLD * 2**attempt
    assert asked_at == [timedelta(minutes=m) for m in (15, 45, 105, 225)]


async def test_a_payment_that_never_resolves_is_flagged_and_no_longer_asked_about(
    db: Backend, frozen: Frozen, payment: Payment
) -> None:
    # given reconciliation that gives up after three questions
    configure_settings(db.settings.model_copy(update={"payment_reconcile_max_attempts": 3}))
    try:
        # when it asks three times, a day apart, and hears "pending" each time
        for day in range(1, 4):
            frozen.now = payment.created_at + timedelta(days=day)
            assert await reconcile_pending() == 1

        # then the payment is flagged for a person to look at, with the reason audited
        reason = "Still pending after 3 questions to sandbox; no longer asked about"
        assert await reconciled(payment) == (3, frozen.now, P.PENDING, reason)
        assert (await audit_trail(payment))[-1] == (
            "reconcile_gave_up",
            "reconciliation",
            None,
            reason,
        )
        # and it is never asked about again
        frozen.now = payment.created_at + timedelta(days=365)
        assert await reconcile_pending() == 0
        assert (await reconciled(payment))[0] == 3
    finally:
        configure_settings(db.settings)


async def test_a_success_found_by_reconciliation_is_applied_once(
    frozen: Frozen, owner: Account, milestone: Milestone, payment: Payment
) -> None:
    # given the gateway's answer: the payment succeeded (its webhook was lost)
    frozen.now = payment.created_at + THRESHOLD
    status = RemoteStatus(
        RemoteState.SUCCEEDED,
        provider_payment_id="sbx_pay_found",
        amount_minor=50_000,
        currency="USD",
    )

    # when the answer is applied, and applied again by an overlapping run
    await apply_status(payment.id, status)
    frozen.now += timedelta(seconds=1)
    await apply_status(payment.id, status)

    # then the payment succeeded once, audited as reconciliation's doing
    row = await Payment.get(id=payment.id)
    assert (row.status, row.provider_payment_id, row.reconcile_attempts) == (
        P.SUCCEEDED,
        "sbx_pay_found",
        1,
    )
    entries = await PaymentAuditEntry.filter(payment_id=payment.id, action="payment_succeeded")
    assert [(e.source, e.actor_id) for e in entries] == [("reconciliation", None)]
    # and its money's effects happened once
    paid = await Milestone.get(id=milestone.id)
    assert (paid.status, paid.payment_status, paid.payment_reference) == (
        MilestoneStatus.PAID,
        MilestonePaymentStatus.PAID,
        "sbx_pay_found",
    )
    invoice = await Invoice.get(id=milestone.invoice_id)
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 50_000)
    events = OutboxMessage.filter(kind=OutboxKind.EVENT, topic=channels.payments(owner.agency_id))
    assert [e.payload["status"] for e in await events.order_by("id")].count("succeeded") == 1
    # and a paid payment is asked about no more
    frozen.now += timedelta(days=1)
    assert await reconcile_pending() == 0


@pytest.mark.parametrize(
    ("state", "status"),
    [(RemoteState.FAILED, P.FAILED), (RemoteState.CANCELLED, P.CANCELLED)],
)
async def test_a_failure_found_by_reconciliation_frees_the_milestone(
    frozen: Frozen, milestone: Milestone, payment: Payment, state: RemoteState, status: P
) -> None:
    # given the gateway's answer: the payment failed, or was cancelled
    frozen.now += THRESHOLD
    # when it is applied
    await apply_status(payment.id, RemoteStatus(state, failure_reason="Expired at the gateway"))
    # then the payment ends so, and the milestone can be paid again
    row = await Payment.get(id=payment.id)
    assert (row.status, row.failure_reason, row.reconcile_attempts) == (
        status,
        "Expired at the gateway",
        1,
    )
    assert (await Milestone.get(id=milestone.id)).payment_status == MilestonePaymentStatus.UNPAID
    assert (await audit_trail(row))[-1][:2] == (f"payment_{status.value}", "reconciliation")


async def test_a_success_for_another_amount_found_by_reconciliation_is_flagged(
    frozen: Frozen, milestone: Milestone, payment: Payment
) -> None:
    # given the gateway's answer: a success, but of $50.00 instead of $500.00
    # when it is applied; then the payment is flagged and stays pending
    await apply_status(
        payment.id, RemoteStatus(RemoteState.SUCCEEDED, amount_minor=5_000, currency="USD")
    )
    reason = "The gateway reported amount 50.00 instead of 500.00; not applied"
    assert await reconciled(payment) == (1, frozen.now, P.PENDING, reason)
    assert (await Milestone.get(id=milestone.id)).status == MilestoneStatus.APPROVED


async def test_no_answer_counts_as_a_question(frozen: Frozen, payment: Payment) -> None:
    # given a gateway that did not answer (an outage)
    await apply_status(payment.id, None)
    # then the question counts, and nothing else changed
    assert await reconciled(payment) == (1, frozen.now, P.PENDING, None)
    assert sorted(action for action, *_ in await audit_trail(payment)) == [
        "checkout_created",
        "created",
    ]


async def test_a_lost_capture_of_a_superseded_payment_is_found_and_refunded(
    db: Backend, frozen: Frozen, owner: Account, milestone: Milestone, payment: Payment
) -> None:
    # given the milestone paid by hand while its payment was open: the payment is superseded
    async with transaction():
        await milestone_service.mark_milestone_paid(owner.actor, milestone.id, "UTR-9")
    await db.drain()
    assert (await Payment.get(id=payment.id)).status is P.SUPERSEDED

    # when reconciliation asks about it, and the gateway says it was captured after all
    frozen.now = payment.created_at + THRESHOLD
    await apply_status(
        payment.id,
        RemoteStatus(
            RemoteState.SUCCEEDED, provider_payment_id="sbx_pay_late", amount_minor=50_000
        ),
    )
    await db.drain()

    # then that money is refunded in full as a duplicate, and the milestone was paid once
    row = await Payment.get(id=payment.id)
    assert (row.status, row.amount_refunded_minor) == (P.REFUNDED, 50_000)
    assert row.auto_refund_reason is not None
    invoice = await Invoice.get(id=milestone.invoice_id)
    assert (invoice.status, invoice.amount_paid_minor, invoice.amount_refunded_minor) == (
        InvoiceStatus.PAID,
        50_000,
        0,
    )


async def test_a_superseded_payment_is_never_flagged_for_silence(
    db: Backend, frozen: Frozen, owner: Account, milestone: Milestone, payment: Payment
) -> None:
    # given a superseded payment
    async with transaction():
        await milestone_service.mark_milestone_paid(owner.actor, milestone.id, "UTR-9")
    await db.drain()

    # when every question goes unanswered or says it failed
    for attempt in range(get_settings().payment_reconcile_max_attempts):
        frozen.now = payment.created_at + THRESHOLD * 2 ** (attempt + 1)
        await apply_status(payment.id, RemoteStatus(RemoteState.FAILED) if attempt else None)

    # then it stays superseded, unflagged, and is asked about no more
    assert await reconciled(payment) == (
        get_settings().payment_reconcile_max_attempts,
        frozen.now,
        P.SUPERSEDED,
        None,
    )
    frozen.now += timedelta(days=30)
    assert await reconcile_pending() == 0
