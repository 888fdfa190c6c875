"""The refund rule: money refunded is owed again unless a credit note forgives it.

The review saw a fully refunded milestone stay PAID with its invoice PAID and
nothing due, while the project said 500.00 outstanding and the final files
locked, and every pay route refused. Here the invoice, the milestone, the
project's payment status, the deliverable locks and the pay routes are checked
to agree after every step of random sequences of paying, refunding, forgiving
and paying again, and a refunded milestone is paid again by each route.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from settle.core.errors import AppError
from settle.core.outbox import transaction
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.deliverable import Deliverable
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.models.payment import OfflineMethod, Payment, PaymentStatus
from settle.models.project import Project
from settle.services import credit_note as credit_note_service
from settle.services import deliverable as deliverable_service
from settle.services import milestone as milestone_service
from settle.services import payment as payment_service
from settle.services import settlement
from settle.services.payment import AlreadyPaidError
from tests.conftest import Backend
from tests.fixtures.factories import (
    Account,
    create_client,
    create_final_deliverable,
    create_project,
    create_user,
)
from tests.fixtures.sandbox import approved_milestone, deliver, pay_invoice, pay_milestones

T = TypeVar("T")
MS = MilestoneStatus
MP = MilestonePaymentStatus


class Rollback(Exception):
    """Raised to undo a probe's transaction."""


async def committed(call: Awaitable[T]) -> T:
    async with transaction():
        return await call


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client, currency="INR")


@pytest.fixture
async def lead(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lena Lead")


async def invoiced_milestone(db: Backend, owner: Account, project: Project) -> Milestone:
    """A ₹500.00 milestone, approved, with the invoice its approval issued."""
    milestone = await approved_milestone(owner, project, amount="500.00")
    await db.drain()
    milestone = await Milestone.get(id=milestone.id)
    assert milestone.invoice_id is not None
    return milestone


async def pay_refused(lead: Account, owner: Account, milestone: Milestone) -> bool:
    """Whether every pay route refuses (each probed in a transaction that is rolled back)."""
    assert milestone.invoice_id is not None
    invoice_id = milestone.invoice_id
    probes: list[Callable[[], Awaitable[object]]] = [
        lambda: payment_service.prepare_milestone_payment(lead.actor, [milestone.id], None),
        lambda: payment_service.prepare_invoice_payment(lead.actor, invoice_id, None),
        lambda: payment_service.record_offline_payment(
            owner.actor,
            invoice_id,
            amount="0.01",
            method=OfflineMethod.CASH,
            reference="probe",
            explorer_url=None,
        ),
        lambda: milestone_service.mark_milestone_paid(owner.actor, milestone.id, "probe"),
    ]
    refused = []
    for probe in probes:
        try:
            async with transaction():
                await probe()
                raise Rollback
        except Rollback:
            refused.append(False)
        except AppError:
            refused.append(True)
    # One answer from every route: they agree.
    assert len(set(refused)) == 1, refused
    return refused[0]


async def check_invariants(
    lead: Account, owner: Account, milestone: Milestone, files: Deliverable
) -> None:
    """The invoice, milestone, project status, files and pay routes all tell the same story."""
    invoice = await Invoice.get(id=milestone.invoice_id)
    milestone = await Milestone.get(id=milestone.id)
    due = settlement.invoice_due(invoice)
    # what was kept and what was forgiven, plus what is due, is the total, to the paisa
    assert (
        invoice.amount_paid_minor
        - invoice.amount_refunded_minor
        + invoice.amount_credited_minor
        + due
        == invoice.total_minor
    )
    assert due >= 0
    assert invoice.status == (
        InvoiceStatus.PAID
        if due == 0
        else InvoiceStatus.PARTIALLY_PAID
        if invoice.amount_paid_minor > invoice.amount_refunded_minor
        else InvoiceStatus.SENT
    )
    # the milestone is its invoice's only line: it owes what the invoice owes
    line = await settlement.line_of(milestone)
    assert settlement.milestone_due(milestone, line) == due
    assert (milestone.status == MS.PAID) == (due == 0)
    status = await payment_service.project_payment_status(owner.actor, milestone.project_id)
    assert status.outstanding_minor == due
    # the final files open exactly when nothing is due
    state = await deliverable_service.project_payment_state(milestone.project_id)
    assert deliverable_service.access_for(lead.actor, files, state).allowed == (due == 0)
    # and a pay route is refused exactly when nothing is due
    assert await pay_refused(lead, owner, milestone) == (due == 0)


async def succeeded_payments(milestone: Milestone) -> list[Payment]:
    return await Payment.filter(
        invoice_id=milestone.invoice_id,
        status__in=[PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED],
    ).order_by("created_at")


@pytest.mark.parametrize("seed", range(5))
async def test_every_step_of_paying_refunding_and_forgiving_keeps_the_books_true(
    db: Backend, owner: Account, lead: Account, project: Project, seed: int
) -> None:
    # given a ₹500.00 milestone with its invoice and its final files
    rng = random.Random(seed)
    milestone = await invoiced_milestone(db, owner, project)
    files = await create_final_deliverable(project)
    await check_invariants(lead, owner, milestone, files)

    # when random steps of pay / refund in part / refund in full / forgive / pay again are taken
    for _ in range(8):
        invoice = await Invoice.get(id=milestone.invoice_id)
        due = settlement.invoice_due(invoice)
        refundable = [
            p
            for p in await succeeded_payments(milestone)
            if p.amount_minor > p.amount_refunded_minor
        ]
        steps = []
        if due > 0:
            steps += ["pay_milestone", "pay_invoice", "offline", "credit"]
        if refundable:
            steps += ["refund_part", "refund_all"]
        step = rng.choice(steps)
        if step == "pay_milestone":
            payment, _ = await pay_milestones(lead, [milestone])
            await deliver(payment, "payment.succeeded")
        elif step == "pay_invoice":
            payment, _ = await pay_invoice(lead, invoice)
            await deliver(payment, "payment.succeeded")
        elif step == "offline":
            amount = rng.randint(1, due)
            await committed(
                payment_service.record_offline_payment(
                    owner.actor,
                    invoice.id,
                    amount=f"{amount / 100:.2f}",
                    method=OfflineMethod.BANK_TRANSFER,
                    reference=f"UTR-{uuid.uuid4().hex[:8]}",
                    explorer_url=None,
                )
            )
        elif step == "credit":
            amount = rng.randint(1, due)
            await committed(
                credit_note_service.issue_credit_note(
                    owner.actor, invoice.id, f"{amount / 100:.2f}", "Goodwill"
                )
            )
        else:
            payment = rng.choice(refundable)
            left = payment.amount_minor - payment.amount_refunded_minor
            amount = rng.randint(1, left) if step == "refund_part" else left
            await committed(
                payment_service.request_refund(
                    owner.actor, payment.id, f"{amount / 100:.2f}", "Changed scope"
                )
            )
        await db.drain()

        # then after every step the books agree
        await check_invariants(lead, owner, milestone, files)


@pytest.mark.parametrize("route", ["pay_milestones", "pay_invoice", "offline", "mark_paid"])
async def test_a_refunded_milestone_is_paid_again_by_every_route(
    db: Backend, owner: Account, lead: Account, project: Project, route: str
) -> None:
    # given a ₹500.00 milestone paid, then refunded in full
    milestone = await invoiced_milestone(db, owner, project)
    payment, _ = await pay_milestones(lead, [milestone])
    await deliver(payment, "payment.succeeded")
    await db.drain()
    await committed(payment_service.request_refund(owner.actor, payment.id, None, "Cancelled"))
    await db.drain()
    reopened = await Milestone.get(id=milestone.id)
    invoice = await Invoice.get(id=milestone.invoice_id)
    assert (reopened.status, reopened.payment_status, invoice.status) == (
        MS.APPROVED,
        MP.REFUNDED,
        InvoiceStatus.SENT,
    )
    assert settlement.invoice_due(invoice) == 50_000

    # when it is paid again by the route
    if route == "pay_milestones":
        again, _ = await pay_milestones(lead, [milestone])
        await deliver(again, "payment.succeeded")
    elif route == "pay_invoice":
        again, _ = await pay_invoice(lead, invoice)
        await deliver(again, "payment.succeeded")
    elif route == "offline":
        await committed(
            payment_service.record_offline_payment(
                owner.actor,
                invoice.id,
                amount="500.00",
                method=OfflineMethod.BANK_TRANSFER,
                reference="UTR-2",
                explorer_url=None,
            )
        )
    else:
        await committed(milestone_service.mark_milestone_paid(owner.actor, milestone.id, "UTR-3"))
    await db.drain()

    # then the milestone and its invoice are paid again, and nothing is due
    paid = await Milestone.get(id=milestone.id)
    invoice = await Invoice.get(id=milestone.invoice_id)
    assert (paid.status, paid.payment_status, invoice.status) == (
        MS.PAID,
        MP.PAID,
        InvoiceStatus.PAID,
    )
    assert (invoice.amount_paid_minor, invoice.amount_refunded_minor) == (100_000, 50_000)
    assert settlement.invoice_due(invoice) == 0
    with pytest.raises(AlreadyPaidError):
        await committed(payment_service.prepare_milestone_payment(lead.actor, [paid.id], None))
