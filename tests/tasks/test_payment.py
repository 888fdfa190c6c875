"""Payment actors: webhook processing retried until its payment exists, refunds, reconciliation.

Each actor is run as the worker runs it (``actor.fn`` on the in-process
worker's loop), twice where a redelivery must change nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from settle.core import clock
from settle.core.outbox import relay_later, transaction
from settle.core.settings import Settings
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.payment import (
    Payment,
    PaymentAuditEntry,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.models.project import Project
from settle.services import payment as payment_service
from settle.services.payment import PaymentNotFoundYetError
from settle.tasks.broker import actor_names
from settle.tasks.payment import process_webhook, reconcile, refund
from settle.tasks.scheduler import ScheduledJob, default_jobs
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_project
from tests.fixtures.sandbox import approved_milestone, deliver, pay_milestones

P = PaymentStatus


@pytest.fixture
async def project(owner: Account) -> Project:
    return await create_project(owner, await create_client(owner, currency="USD"), currency="USD")


@pytest.fixture
async def milestone(db: Backend, owner: Account, project: Project) -> Milestone:
    """A $500.00 milestone, approved and invoiced."""
    approved = await approved_milestone(owner, project, amount="500.00")
    await db.drain()
    return await Milestone.get(id=approved.id)


def require_postgres(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite runs one transaction at a time; the race needs PostgreSQL")


async def run_process_webhook(webhook_event_id: object) -> None:
    await asyncio.to_thread(process_webhook.fn, str(webhook_event_id))


async def attempts_of(row: WebhookEvent) -> tuple[int, str | None, str | None]:
    stored = await WebhookEvent.get(id=row.id)
    return stored.attempts, stored.outcome, stored.last_error


# --- processing webhooks -----------------------------------------------------------------------


async def test_a_redelivered_processing_job_applies_the_event_once(
    db: Backend, owner: Account, milestone: Milestone
) -> None:
    # given a success the worker applied
    payment, _ = await pay_milestones(owner, [milestone])
    received = await deliver(payment, "payment.succeeded")
    await db.drain()
    assert await attempts_of(received.event) == (1, "applied", None)

    # when its job is delivered again
    await run_process_webhook(received.event.id)

    # then nothing more happened
    assert await attempts_of(received.event) == (1, "applied", None)
    assert await PaymentAuditEntry.filter(action="payment_succeeded").count() == 1
    assert (await Payment.get(id=payment.id)).status == P.SUCCEEDED


async def test_a_failed_attempt_is_recorded_and_raised_for_a_retry(
    db: Backend, owner: Account, milestone: Milestone
) -> None:
    # given a stored success for a payment that does not exist (its job held back)
    payment, _ = await pay_milestones(owner, [milestone])
    with relay_later():
        received = await deliver(
            payment,
            "payment.succeeded",
            id="sbx_evt_lost",
            payment_id=None,
            order_id="sbx_elsewhere",
            payment_ref="sbx_pay_elsewhere",
        )

    # when the worker processes it, twice
    for attempt in (1, 2):
        with pytest.raises(PaymentNotFoundYetError):
            await run_process_webhook(received.event.id)
        # then each attempt is counted with its error, and the event stays unprocessed
        assert await attempts_of(received.event) == (
            attempt,
            None,
            "PaymentNotFoundYetError: No sandbox payment for sbx_evt_lost",
        )
    assert (await WebhookEvent.get(id=received.event.id)).processed_at is None
    assert (await Payment.get(id=payment.id)).status == P.PENDING


async def test_an_event_before_its_payment_commits_is_applied_on_the_retry(
    db: Backend, owner: Account, milestone: Milestone
) -> None:
    require_postgres(db)
    # given a payment being written by a request that has not committed yet
    prepared = asyncio.Event()
    release = asyncio.Event()
    written: list[Payment] = []

    async def prepare_and_wait() -> None:
        async with transaction():
            payment, _ = await payment_service.prepare_milestone_payment(
                owner.actor, [milestone.id], None
            )
            written.append(payment)
            prepared.set()
            await release.wait()

    request = asyncio.create_task(prepare_and_wait())
    await asyncio.wait_for(prepared.wait(), timeout=10)
    [payment] = written

    # when the gateway's success for it is stored and processed at once
    with relay_later():
        received = await deliver(payment, "payment.succeeded")
    with pytest.raises(PaymentNotFoundYetError):
        await run_process_webhook(received.event.id)

    # then the attempt is counted and the event waits
    attempts, outcome, error = await attempts_of(received.event)
    assert (attempts, outcome) == (1, None)
    assert error is not None
    assert error.startswith("PaymentNotFoundYetError: ")

    # when the request commits and the job is retried
    release.set()
    await asyncio.wait_for(request, timeout=10)
    await run_process_webhook(received.event.id)

    # then the success is applied, and the event's error is cleared
    assert await attempts_of(received.event) == (2, "applied", None)
    assert (await Payment.get(id=payment.id)).status == P.SUCCEEDED
    assert (await Milestone.get(id=milestone.id)).status == MilestoneStatus.PAID


# --- refunds -----------------------------------------------------------------------------------


async def test_a_redelivered_refund_job_refunds_once(
    db: Backend, owner: Account, milestone: Milestone
) -> None:
    # given a captured payment and a refund asked for, its job held back
    payment, _ = await pay_milestones(owner, [milestone])
    await deliver(payment, "payment.succeeded")
    await db.drain()
    with relay_later():
        async with transaction():
            asked = await payment_service.request_refund(owner.actor, payment.id, "100.00", "x")

    # when the job runs, and is delivered again
    for _ in range(2):
        await asyncio.to_thread(refund.fn, str(asked.id))

    # then the sandbox refunded once, and the payment shows it once
    row = await Refund.get(id=asked.id)
    assert (row.status, row.provider_refund_id) == (RefundStatus.SUCCEEDED, f"sbx_rf_{asked.id}")
    settled = await Payment.get(id=payment.id)
    assert (settled.status, settled.amount_refunded_minor) == (P.PARTIALLY_REFUNDED, 10_000)
    assert await PaymentAuditEntry.filter(action="refund_succeeded").count() == 1


# --- reconciliation ----------------------------------------------------------------------------


@pytest.fixture
def moved_clock() -> Iterator[list[datetime]]:
    """Settle's clock at the time in the list's one entry (the wall clock's to start with)."""
    moment = [datetime.now(UTC)]
    clock.set_clock(lambda: moment[0])
    yield moment
    clock.set_clock(None)


async def test_the_reconcile_job_asks_about_the_payments_due(
    db: Backend, moved_clock: list[datetime], owner: Account, milestone: Milestone
) -> None:
    # given a payment pending for longer than the threshold
    payment, _ = await pay_milestones(owner, [milestone])
    moved_clock[0] = payment.created_at + timedelta(minutes=15)

    # when the scheduled job runs
    await asyncio.to_thread(reconcile.fn)

    # then the sandbox was asked about it
    row = await Payment.get(id=payment.id)
    assert (row.status, row.reconcile_attempts, row.last_reconciled_at) == (
        P.PENDING,
        1,
        moved_clock[0],
    )


# --- declarations ------------------------------------------------------------------------------


def test_the_actors_are_declared_with_retries_under_their_job_names() -> None:
    # given / when / then: webhooks retry for about an hour, refunds longer, reconcile never
    assert {
        declared.actor_name: (
            declared.options.get("max_retries"),
            declared.options.get("min_backoff"),
            declared.options.get("max_backoff"),
        )
        for declared in (process_webhook, refund, reconcile)
    } == {
        payment_service.PROCESS_WEBHOOK_JOB: (12, 1_000, 600_000),
        payment_service.REFUND_JOB: (10, 5_000, 3_600_000),
        payment_service.RECONCILE_JOB: (0, None, None),
    }
    assert {
        payment_service.PROCESS_WEBHOOK_JOB,
        payment_service.REFUND_JOB,
        payment_service.RECONCILE_JOB,
    } <= set(actor_names())


def test_reconciliation_is_scheduled_every_ten_minutes() -> None:
    # given the default settings; when the schedule is built; then reconciliation is on it
    jobs = default_jobs(Settings())
    assert ScheduledJob("payment.reconcile", "*/10 * * * *", "payment.reconcile") in jobs
