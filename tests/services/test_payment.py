"""The payment service: starting payments, what a success pays, refunds, overrides, the audit log.

Payments go through the sandbox gateway, the default in tests; the gateway's
word arrives as signed sandbox webhooks processed by the in-process worker
(``db.drain()``), as in production.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError

from settle.core import clock
from settle.core.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.core.money import Money
from settle.core.outbox import relay_later, transaction
from settle.core.settings import get_settings
from settle.gateways.base import Checkout, PaymentGateway
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.deliverable import Deliverable
from settle.models.invoice import Invoice, InvoiceLine, InvoiceStatus
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.models.outbox import OutboxKind, OutboxMessage
from settle.models.payment import (
    OfflineMethod,
    Payment,
    PaymentAllocation,
    PaymentAuditEntry,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.models.project import Project
from settle.services import credit_note as credit_note_service
from settle.services import deliverable as deliverable_service
from settle.services import invoice as invoice_service
from settle.services import milestone as milestone_service
from settle.services import payment as payment_service
from settle.services.deliverable import Access, LockReason
from settle.services.payment import AlreadyPaidError, PaymentFilter, PaymentLimitError
from settle.subscriptions import channels
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import (
    Account,
    create_client,
    create_final_deliverable,
    create_invoice,
    create_project,
    create_user,
    issue_invoice,
)
from tests.fixtures.sandbox import (
    approved_milestone,
    audit_trail,
    deliver,
    pay_invoice,
    pay_milestones,
    sandbox,
)

T = TypeVar("T")
P = PaymentStatus
MS = MilestoneStatus
MP = MilestonePaymentStatus
SANDBOX = PaymentProvider.SANDBOX
PAYMENT_TABLES = (Payment, PaymentAllocation, PaymentAuditEntry, Refund, WebhookEvent, Invoice)


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="USD")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client, currency="USD")


@pytest.fixture
async def lead(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lena Lead")


def require_postgres(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite runs one transaction at a time; the race needs PostgreSQL")


async def committed(call: Awaitable[T]) -> T:
    """One service call in its own transaction, as a request makes it."""
    async with transaction():
        return await call


async def paid(db: Backend, payment: Payment) -> Payment:
    """The payment after the sandbox reported its success and the worker applied it."""
    await deliver(payment, "payment.succeeded")
    await db.drain()
    return await Payment.get(id=payment.id)


async def allocations_of(payment: Payment) -> set[tuple[uuid.UUID, uuid.UUID | None, int]]:
    rows = await PaymentAllocation.filter(payment_id=payment.id)
    return {(row.invoice_id, row.milestone_id, row.amount_minor) for row in rows}


async def verbs(entity_type: str, entity_id: uuid.UUID) -> list[str]:
    rows = ActivityEvent.filter(entity_type=entity_type, entity_id=entity_id)
    return [row.verb for row in await rows.order_by("created_at", "id")]


async def announced(agency_id: uuid.UUID) -> list[dict[str, Any]]:
    """The PaymentStatusChanged events written for the agency, in order."""
    rows = OutboxMessage.filter(kind=OutboxKind.EVENT, topic=channels.payments(agency_id))
    return [row.payload for row in await rows.order_by("id")]


async def submitted_milestone(owner: Account, project: Project, title: str = "Draft") -> Milestone:
    async with transaction():
        milestone = await milestone_service.create_milestone(
            owner.actor, project.id, {"title": title, "amount": "100.00"}
        )
    async with transaction():
        await milestone_service.start_milestone(owner.actor, milestone.id)
    async with transaction():
        return await milestone_service.submit_milestone(owner.actor, milestone.id)


# --- starting a payment ------------------------------------------------------------------


async def test_a_milestone_is_paid_on_the_invoice_its_approval_issued(
    db: Backend, owner: Account, lead: Account, client: Client, project: Project
) -> None:
    # given a milestone the client lead approved, and the invoice the approval issued
    milestone = await approved_milestone(owner, project, amount="500.00", approver=lead)
    await db.drain()
    [invoice] = await Invoice.all()
    assert (invoice.status, invoice.total_minor) == (InvoiceStatus.SENT, 50_000)

    # when the client lead pays it
    payment, resumed = await pay_milestones(lead, [milestone])

    # then one sandbox payment of that invoice waits at its hosted checkout
    assert resumed is False
    row = await Payment.get(id=payment.id)
    assert (
        row.status,
        row.provider,
        row.amount_minor,
        row.currency,
        row.client_id,
        row.project_id,
        row.invoice_id,
        row.created_by_id,
        row.provider_order_id,
    ) == (
        P.PENDING,
        SANDBOX,
        50_000,
        "USD",
        client.id,
        project.id,
        invoice.id,
        lead.user.id,
        f"sbx_{payment.id}",
    )
    assert row.checkout_url is not None
    base, token = row.checkout_url.rsplit("/", 1)
    assert base == "http://settle.test/sandbox/pay"
    assert sandbox().page_payment_id(token) == str(payment.id)
    assert payment_service.checkout_of(row) == Checkout(
        provider_order_id=f"sbx_{payment.id}", checkout_url=row.checkout_url
    )
    assert await allocations_of(row) == {(invoice.id, milestone.id, 50_000)}
    # and the milestone shows a payment under way, on the one invoice
    waiting = await Milestone.get(id=milestone.id)
    assert (waiting.status, waiting.payment_status, waiting.invoice_id) == (
        MS.APPROVED,
        MP.PROCESSING,
        invoice.id,
    )
    assert await Invoice.all().count() == 1
    # and the start is audited: the lead made it, the gateway gave the checkout
    assert await audit_trail(row) == [
        ("created", "user", lead.user.id, None),
        ("checkout_created", "sandbox", None, None),
    ]
    assert await verbs("payment", payment.id) == ["created"]
    assert [(e["status"], e["amountMinor"]) for e in await announced(owner.agency_id)] == [
        ("created", 50_000),
        ("pending", 50_000),
    ]


async def test_milestones_not_invoiced_yet_are_paid_on_one_invoice_issued_at_once(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given two approved milestones whose invoice jobs have not run yet
    with relay_later():
        design = await approved_milestone(owner, project, title="Design", amount="500.00")
        build = await approved_milestone(owner, project, title="Build", amount="1250.50")
    assert await Invoice.all().count() == 0

    # when the client lead pays both at once
    payment, _ = await pay_milestones(lead, [design, build])

    # then one invoice billing both was issued on the spot, and the payment pays it
    [invoice] = await Invoice.all()
    assert (invoice.status, invoice.total_minor, invoice.project_id) == (
        InvoiceStatus.SENT,
        175_050,
        project.id,
    )
    assert invoice.number == f"INV-{clock.now().year}-0001"
    lines = await InvoiceLine.filter(invoice_id=invoice.id).order_by("position")
    assert [(line.milestone_id, line.amount_minor) for line in lines] == [
        (design.id, 50_000),
        (build.id, 125_050),
    ]
    assert (payment.amount_minor, payment.invoice_id) == (175_050, invoice.id)
    assert await allocations_of(payment) == {
        (invoice.id, design.id, 50_000),
        (invoice.id, build.id, 125_050),
    }
    # and when the approvals' invoice jobs run at last, they find it and issue no other
    for milestone in (design, build):
        found = await committed(invoice_service.generate_for_milestone(milestone.id))
        assert found is not None
        assert found.id == invoice.id
    assert await Invoice.all().count() == 1


async def test_an_invoice_is_paid_for_what_it_still_owes(
    db: Backend, owner: Account, lead: Account, client: Client
) -> None:
    # given an issued $100.00 invoice of which $30.00 arrived by bank transfer
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    await committed(
        payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount="30.00",
            method=OfflineMethod.BANK_TRANSFER,
            reference="UTR-0001",
            explorer_url=None,
        )
    )

    # when the client lead pays the invoice
    payment, resumed = await pay_invoice(lead, invoice)

    # then the payment is for the $70.00 left
    assert resumed is False
    assert (payment.status, payment.amount_minor, payment.invoice_id, payment.project_id) == (
        P.PENDING,
        7_000,
        invoice.id,
        None,
    )
    assert await allocations_of(payment) == {(invoice.id, None, 7_000)}
    # and once it succeeds the invoice is paid in full
    await paid(db, payment)
    settled = await Invoice.get(id=invoice.id)
    assert (settled.status, settled.amount_paid_minor) == (InvoiceStatus.PAID, 10_000)


async def test_only_the_client_lead_an_owner_or_an_admin_starts_a_payment(
    db: Backend, owner: Account, lead: Account, client: Client, project: Project
) -> None:
    # given an approved, invoiced milestone, and users of every other kind
    milestone = await approved_milestone(owner, project)
    await db.drain()
    [invoice] = await Invoice.all()
    member = await create_user(owner, role=Role.MEMBER)
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    admin = await create_user(owner, role=Role.ADMIN)
    other_lead = await create_user(
        owner, role=Role.CLIENT_LEAD, client=await create_client(owner, name="Blue")
    )
    await db.drain()  # the invitation emails
    before = await row_counts(*PAYMENT_TABLES, Milestone)

    # when a member or a client viewer tries to pay it; then they are refused
    for account in (member, viewer):
        with pytest.raises(PermissionDeniedError):
            await pay_milestones(account, [milestone])
        with pytest.raises(PermissionDeniedError):
            await pay_invoice(account, invoice)
    # and another client's lead does not even see it
    with pytest.raises(NotFoundError):
        await pay_milestones(other_lead, [milestone])
    with pytest.raises(NotFoundError):
        await pay_invoice(other_lead, invoice)
    assert await row_counts(*PAYMENT_TABLES, Milestone) == before

    # when the client lead, an owner and an admin pay it; then they all get the one payment
    results = [await pay_milestones(account, [milestone]) for account in (lead, owner, admin)]
    first = results[0][0]
    assert [(p.id, resumed) for p, resumed in results] == [
        (first.id, False),
        (first.id, True),
        (first.id, True),
    ]
    assert await Payment.all().count() == 1


async def test_paying_again_returns_the_pending_payment_without_asking_the_gateway(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a milestone whose payment was started
    milestone = await approved_milestone(owner, project)
    await db.drain()
    [invoice] = await Invoice.all()
    first, _ = await pay_milestones(lead, [milestone])

    # when the lead pays it again, and then pays its invoice
    again, resumed = await pay_milestones(lead, [milestone])
    by_invoice, by_invoice_resumed = await pay_invoice(lead, invoice)

    # then both return the same payment and its checkout, and the gateway was asked once
    assert (again.id, resumed, again.checkout_url) == (first.id, True, first.checkout_url)
    assert (by_invoice.id, by_invoice_resumed) == (first.id, True)
    assert await Payment.all().count() == 1
    assert await PaymentAuditEntry.filter(action="checkout_created").count() == 1
    assert [action for action, *_ in await audit_trail(first)] == ["created", "checkout_created"]


async def test_a_bulk_payment_overlapping_one_under_way_is_refused_not_silently_cut(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given milestone A with a payment under way, and milestone B approved too
    a = await approved_milestone(owner, project, title="A")
    b = await approved_milestone(owner, project, title="B")
    await db.drain()
    first, _ = await pay_milestones(lead, [a])
    before = await row_counts(Payment, PaymentAllocation)

    # when the lead pays A and B together
    with pytest.raises(ConflictError) as refused:
        await pay_milestones(lead, [a, b])

    # then it is refused rather than resuming A's payment and dropping B, and nothing is written
    assert "already in a payment under way" in refused.value.message
    assert await row_counts(Payment, PaymentAllocation) == before
    # and the same milestones together still resume the payment under way
    again, resumed = await pay_milestones(lead, [a])
    assert (again.id, resumed) == (first.id, True)


async def test_paying_a_milestone_whose_invoice_is_being_paid_returns_that_payment(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a milestone whose invoice the lead started paying
    milestone = await approved_milestone(owner, project)
    await db.drain()
    [invoice] = await Invoice.all()
    by_invoice, _ = await pay_invoice(lead, invoice)

    # when the lead pays the milestone itself
    by_milestone, resumed = await pay_milestones(lead, [milestone])

    # then the invoice's payment, which pays the milestone too, is returned
    assert (by_milestone.id, resumed) == (by_invoice.id, True)
    assert await Payment.all().count() == 1
    # and once it succeeds the milestone is paid by it
    await paid(db, by_invoice)
    settled = await Milestone.get(id=milestone.id)
    assert (settled.status, settled.payment_reference) == (MS.PAID, f"sbx_pay_{by_invoice.id}")


async def test_a_failed_payment_leaves_the_milestone_to_pay_again(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a milestone whose payment the sandbox declined
    milestone = await approved_milestone(owner, project)
    await db.drain()
    failed, _ = await pay_milestones(lead, [milestone])
    await deliver(failed, "payment.failed", failure_reason="Card declined")
    await db.drain()
    declined = await Payment.get(id=failed.id)
    assert (declined.status, declined.failure_reason) == (P.FAILED, "Card declined")
    assert (await Milestone.get(id=milestone.id)).payment_status == MP.UNPAID

    # when the lead pays it again; then a new payment is started
    retry, resumed = await pay_milestones(lead, [milestone])
    assert (resumed, retry.status) == (False, P.PENDING)
    assert retry.id != failed.id
    assert (await Milestone.get(id=milestone.id)).payment_status == MP.PROCESSING


async def test_something_paid_is_not_paid_again(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a milestone paid through the sandbox
    milestone = await approved_milestone(owner, project)
    await db.drain()
    [invoice] = await Invoice.all()
    payment, _ = await pay_milestones(lead, [milestone])
    await paid(db, payment)
    before = await row_counts(*PAYMENT_TABLES)

    # when it, or its invoice, is paid again; then both are refused as already paid
    with pytest.raises(AlreadyPaidError) as milestone_refused:
        await pay_milestones(lead, [milestone])
    with pytest.raises(AlreadyPaidError) as invoice_refused:
        await pay_invoice(lead, invoice)
    assert (milestone_refused.value.code, invoice_refused.value.code) == (
        "ALREADY_PAID",
        "ALREADY_PAID",
    )
    assert await row_counts(*PAYMENT_TABLES) == before


async def test_a_milestone_not_approved_is_not_payable(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a milestone submitted for approval and one approved
    submitted = await submitted_milestone(owner, project)
    approved = await approved_milestone(owner, project)
    await db.drain()
    before = await row_counts(*PAYMENT_TABLES, Milestone)

    # when the lead pays the submitted one, alone or with the approved one
    for milestones in ([submitted], [approved, submitted]):
        with pytest.raises(ValidationError) as refused:
            await pay_milestones(lead, milestones)
        # then it is refused, and nothing is written
        assert (refused.value.field, refused.value.code) == ("milestoneIds", "NOT_PAYABLE")
    assert await row_counts(*PAYMENT_TABLES, Milestone) == before
    assert (await Milestone.get(id=approved.id)).payment_status == MP.UNPAID


async def test_milestones_of_two_clients_or_currencies_are_not_paid_together(
    db: Backend, owner: Account, client: Client, project: Project
) -> None:
    # given approved milestones of two clients, and of one client in two currencies
    other = await create_project(owner, await create_client(owner, name="Blue"), currency="USD")
    in_rupees = await create_project(owner, client, name="App", currency="INR")
    with relay_later():
        ours = await approved_milestone(owner, project)
        theirs = await approved_milestone(owner, other)
        rupees = await approved_milestone(owner, in_rupees)
    before = await row_counts(*PAYMENT_TABLES, Milestone)

    # when an owner pays each pair together; then both are refused as a mismatch
    for pair in ([ours, theirs], [ours, rupees]):
        with pytest.raises(ValidationError) as refused:
            await pay_milestones(owner, pair)
        assert (refused.value.field, refused.value.code) == ("milestoneIds", "MISMATCH")
    assert await row_counts(*PAYMENT_TABLES, Milestone) == before


@pytest.mark.parametrize(
    ("currency", "amount", "code"),
    [
        ("INR", "10000000.00", None),
        ("INR", "10000000.01", "AMOUNT_TOO_LARGE"),
        ("USD", "100000.00", None),
        ("USD", "100000.01", "AMOUNT_TOO_LARGE"),
    ],
)
async def test_the_ceiling_per_payment_is_checked_before_the_gateway(
    db: Backend, owner: Account, currency: str, amount: str, code: str | None
) -> None:
    # given an approved milestone of the amount, not invoiced yet
    project = await create_project(owner, await create_client(owner), currency=currency)
    with relay_later():
        milestone = await approved_milestone(owner, project, amount=amount)
    expected = Money.parse(amount, currency).minor_units

    # when an owner pays it
    if code is None:
        payment, _ = await pay_milestones(owner, [milestone])
        # then up to the ceiling it is taken to the gateway
        assert (payment.status, payment.amount_minor, payment.currency) == (
            P.PENDING,
            expected,
            currency,
        )
        return
    with pytest.raises(PaymentLimitError) as refused:
        await pay_milestones(owner, [milestone])
    # then above it the payment is refused, and not even its invoice is kept
    assert (refused.value.field, refused.value.code) == ("amount", code)
    assert await Payment.all().count() == 0
    assert await Invoice.all().count() == 0
    assert (await Milestone.get(id=milestone.id)).payment_status == MP.UNPAID


@dataclass(frozen=True)
class Minimums:
    """The one thing check_limits reads of a gateway."""

    minimums: Mapping[str, int] = field(default_factory=dict)


# What the card gateways take at the least: ₹1.00 and $0.50.
CARD_GATEWAY = cast(PaymentGateway, Minimums({"INR": 100, "USD": 50}))


@pytest.mark.parametrize(
    ("amount", "currency", "code", "message"),
    [
        ("0.99", "INR", "AMOUNT_TOO_SMALL", "A payment is at least ₹1.00"),
        ("1.00", "INR", None, None),
        ("0.49", "USD", "AMOUNT_TOO_SMALL", "A payment is at least $0.50"),
        ("0.50", "USD", None, None),
        ("10000000.00", "INR", None, None),
        ("10000000.01", "INR", "AMOUNT_TOO_LARGE", "A payment is at most ₹1,00,00,000.00"),
        ("100000.00", "USD", None, None),
        ("100000.01", "USD", "AMOUNT_TOO_LARGE", "A payment is at most $100,000.00"),
        # No minimum is known for yen: one yen, the smallest unit, is the least.
        ("1", "JPY", None, None),
        ("0", "JPY", "AMOUNT_TOO_SMALL", "A payment is at least ¥1"),
        ("250000000", "JPY", None, None),
    ],
)
def test_limits_per_currency(amount: str, currency: str, code: str | None, message: str) -> None:
    # given an amount; when its limits are checked for a card gateway
    money = Money.parse(amount, currency)
    if code is None:
        payment_service.check_limits(money, CARD_GATEWAY)
        return
    with pytest.raises(PaymentLimitError) as refused:
        payment_service.check_limits(money, CARD_GATEWAY)
    # then outside them it is refused with the limit in the currency's own words
    assert (refused.value.field, refused.value.code, refused.value.message) == (
        "amount",
        code,
        message,
    )


def test_the_sandbox_takes_any_amount_above_zero() -> None:
    # given the sandbox, which has no minimum; when a cent, a paisa or a yen is checked;
    # then each passes, and only nothing at all is too small
    for money in (Money(1, "USD"), Money(1, "INR"), Money(1, "JPY")):
        payment_service.check_limits(money, sandbox())
    with pytest.raises(PaymentLimitError):
        payment_service.check_limits(Money(0, "USD"), sandbox())


async def test_yen_are_paid_in_whole_yen(db: Backend, owner: Account) -> None:
    # given an approved milestone of ¥150,000 and its invoice
    project = await create_project(owner, await create_client(owner), currency="JPY")
    milestone = await approved_milestone(owner, project, amount="150000")
    await db.drain()

    # when it is paid through the sandbox
    payment, _ = await pay_milestones(owner, [milestone])
    settled = await paid(db, payment)

    # then every amount is in whole yen, with no minor unit
    assert (payment.amount_minor, payment.currency) == (150_000, "JPY")
    assert payment_service.snapshot(settled)["amount"] == "150000"
    row = await Milestone.get(id=milestone.id)
    assert (row.status, row.amount_paid_minor) == (MS.PAID, 150_000)
    [invoice] = await Invoice.all()
    assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, 150_000)


async def test_twenty_concurrent_payments_of_a_milestone_make_one_payment_and_one_checkout(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    require_postgres(db)
    # given an approved milestone not invoiced yet
    with relay_later():
        milestone = await approved_milestone(owner, project, approver=lead)

    # when twenty requests pay it at the same moment
    results = await asyncio.gather(*(pay_milestones(lead, [milestone]) for _ in range(20)))

    # then one payment, on one invoice, was made and taken to the gateway once
    assert len({payment.id for payment, _ in results}) == 1
    assert sorted(resumed for _, resumed in results) == [False] + [True] * 19
    assert len({payment.checkout_url for payment, _ in results}) == 1
    assert await Payment.all().count() == 1
    assert await PaymentAllocation.all().count() == 1
    assert await Invoice.all().count() == 1
    [payment] = await Payment.all()
    assert payment.status == P.PENDING
    assert [action for action, *_ in await audit_trail(payment)] == [
        "created",
        "checkout_created",
    ]


# --- what a success pays ---------------------------------------------------------------------


async def test_a_success_pays_the_milestones_and_their_invoices(
    db: Backend, owner: Account, lead: Account, client: Client, project: Project
) -> None:
    # given two approved milestones, each on the invoice its approval issued, paid together
    design = await approved_milestone(owner, project, title="Design", amount="500.00")
    build = await approved_milestone(owner, project, title="Build", amount="250.00")
    await db.drain()
    payment, _ = await pay_milestones(lead, [design, build])
    assert payment.invoice_id is None  # two invoices

    # when the sandbox reports the success and the worker applies it
    received = await deliver(payment, "payment.succeeded")
    await db.drain()

    # then the payment succeeded with the gateway's reference
    row = await Payment.get(id=payment.id)
    reference = f"sbx_pay_{payment.id}"
    assert (row.status, row.provider_payment_id, row.flagged_reason) == (
        P.SUCCEEDED,
        reference,
        None,
    )
    assert row.succeeded_at is not None
    # and each milestone is paid: its amount, the moment, the reference
    for milestone, amount in ((design, 50_000), (build, 25_000)):
        settled = await Milestone.get(id=milestone.id)
        assert (
            settled.status,
            settled.payment_status,
            settled.amount_paid_minor,
            settled.paid_at,
            settled.payment_reference,
        ) == (MS.PAID, MP.PAID, amount, row.succeeded_at, reference)
        assert (await verbs("milestone", milestone.id))[-1] == "paid"
        # and so is its invoice
        invoice = await Invoice.get(id=settled.invoice_id)
        assert (invoice.status, invoice.amount_paid_minor) == (InvoiceStatus.PAID, amount)
        assert (await verbs("invoice", invoice.id))[-1] == "paid"
    # and the timeline, the audit log and the webhook event say so
    assert await verbs("payment", payment.id) == ["created", "succeeded"]
    assert await audit_trail(row) == [
        ("created", "user", lead.user.id, None),
        ("checkout_created", "sandbox", None, None),
        ("payment_succeeded", "sandbox", None, None),
    ]
    success = await PaymentAuditEntry.get(payment_id=payment.id, action="payment_succeeded")
    assert success.webhook_event_id == received.event.id
    assert (success.before["status"], success.after["status"]) == ("pending", "succeeded")
    event = await WebhookEvent.get(id=received.event.id)
    assert (event.outcome, event.payment_id, event.agency_id, event.attempts) == (
        "applied",
        payment.id,
        owner.agency_id,
        1,
    )
    # and PaymentStatusChanged was announced once for the success
    successes = [e for e in await announced(owner.agency_id) if e["status"] == "succeeded"]
    assert len(successes) == 1
    assert {k: v for k, v in successes[0].items() if k != "changedAt"} == {
        "paymentId": str(payment.id),
        "agencyId": str(owner.agency_id),
        "clientId": str(client.id),
        "projectId": str(project.id),
        "invoiceIds": sorted(
            str(a.invoice_id) for a in await PaymentAllocation.filter(payment_id=payment.id)
        ),
        "milestoneIds": sorted([str(design.id), str(build.id)]),
        "status": "succeeded",
        "provider": "sandbox",
        "amountMinor": 75_000,
        "amountRefundedMinor": 0,
        "currency": "USD",
    }


async def test_paying_one_of_an_invoices_milestones_leaves_it_partially_paid(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given an invoice issued by hand for two approved milestones
    with relay_later():
        design = await approved_milestone(owner, project, title="Design", amount="500.00")
        build = await approved_milestone(owner, project, title="Build", amount="250.00")
    draft = await committed(
        invoice_service.create_invoice_from_milestones(owner.actor, [design.id, build.id])
    )
    invoice = await committed(invoice_service.finalize_invoice(owner.actor, draft.id))

    # when the lead pays one of them and the payment succeeds
    payment, _ = await pay_milestones(lead, [design])
    await paid(db, payment)

    # then the invoice is partially paid, by that milestone's share
    row = await Invoice.get(id=invoice.id)
    assert (row.status, row.amount_paid_minor) == (InvoiceStatus.PARTIALLY_PAID, 50_000)
    assert (await Milestone.get(id=design.id)).status == MS.PAID
    unpaid = await Milestone.get(id=build.id)
    assert (unpaid.status, unpaid.payment_status) == (MS.APPROVED, MP.UNPAID)
    # and the other milestone is paid on it later, which pays the invoice in full
    second, _ = await pay_milestones(lead, [build])
    await paid(db, second)
    row = await Invoice.get(id=invoice.id)
    assert (row.status, row.amount_paid_minor) == (InvoiceStatus.PAID, 75_000)


async def access(account: Account, deliverable: Deliverable) -> Access:
    state = await deliverable_service.project_payment_state(deliverable.project_id)
    return deliverable_service.access_for(account.actor, deliverable, state)


async def test_deliverables_follow_the_refund_rule(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a project's one milestone, approved, and its final files
    milestone = await approved_milestone(owner, project)
    await db.drain()
    deliverable = await create_final_deliverable(project)
    assert await access(lead, deliverable) == Access(False, LockReason.BALANCE_UNPAID, None)

    # when the milestone is paid; then the final files open to the client
    payment = await paid(db, (await pay_milestones(lead, [milestone]))[0])
    paid_at = (await Milestone.get(id=milestone.id)).paid_at
    assert paid_at is not None
    days = timedelta(days=get_settings().deliverable_access_days)
    assert await access(lead, deliverable) == Access(True, None, paid_at + days)

    # when part of the money is refunded; then it is owed again and the files lock
    await committed(payment_service.request_refund(owner.actor, payment.id, "100.00", "Late"))
    await db.drain()
    reopened = await Milestone.get(id=milestone.id)
    assert (reopened.status, reopened.payment_status) == (MS.APPROVED, MP.PARTIALLY_REFUNDED)
    assert await access(lead, deliverable) == Access(False, LockReason.BALANCE_UNPAID, None)

    # when the agency forgives what was refunded; then the files open again
    assert reopened.invoice_id is not None
    await committed(
        credit_note_service.issue_credit_note(owner.actor, reopened.invoice_id, "100.00", "Late")
    )
    forgiven = await Milestone.get(id=milestone.id)
    assert (forgiven.status, forgiven.amount_credited_minor) == (MS.PAID, 10_000)
    assert forgiven.paid_at is not None
    assert await access(lead, deliverable) == Access(True, None, forgiven.paid_at + days)

    # when the rest is refunded; then they lock again, as if never paid
    await committed(payment_service.request_refund(owner.actor, payment.id, None, "Cancelled"))
    await db.drain()
    assert (await Milestone.get(id=milestone.id)).payment_status == MP.REFUNDED
    assert await access(lead, deliverable) == Access(False, LockReason.BALANCE_UNPAID, None)
    # and the agency keeps its own access
    assert await access(owner, deliverable) == Access(True, None, None)


# --- refunds -----------------------------------------------------------------------------------


@pytest.fixture
async def captured(db: Backend, owner: Account, lead: Account, project: Project) -> Payment:
    """A $500.00 milestone paid through the sandbox."""
    milestone = await approved_milestone(owner, project)
    await db.drain()
    payment, _ = await pay_milestones(lead, [milestone])
    return await paid(db, payment)


async def test_a_partial_then_a_full_refund_settle_through_the_sandbox(
    db: Backend, owner: Account, captured: Payment
) -> None:
    [allocation] = await PaymentAllocation.filter(payment_id=captured.id)

    # when an owner refunds $200.00 and the worker asks the sandbox
    first = await committed(
        payment_service.request_refund(owner.actor, captured.id, "200.00", "Scope reduced")
    )
    assert (first.status, first.amount_minor, first.currency) == (
        RefundStatus.PENDING,
        20_000,
        "USD",
    )
    await db.drain()

    # then the refund settled, and the payment, milestone and invoice show it
    refund = await Refund.get(id=first.id)
    assert (refund.status, refund.provider_refund_id, refund.reason) == (
        RefundStatus.SUCCEEDED,
        f"sbx_rf_{first.id}",
        "Scope reduced",
    )
    assert refund.settled_at is not None
    payment = await Payment.get(id=captured.id)
    assert (payment.status, payment.amount_refunded_minor) == (P.PARTIALLY_REFUNDED, 20_000)
    # (the money refunded is owed again: the milestone and its invoice reopen)
    milestone = await Milestone.get(id=allocation.milestone_id)
    assert (milestone.status, milestone.payment_status, milestone.amount_refunded_minor) == (
        MS.APPROVED,
        MP.PARTIALLY_REFUNDED,
        20_000,
    )
    invoice = await Invoice.get(id=allocation.invoice_id)
    assert (invoice.status, invoice.amount_refunded_minor) == (
        InvoiceStatus.PARTIALLY_PAID,
        20_000,
    )

    # when the rest is refunded (no amount: all that is left)
    rest = await committed(payment_service.request_refund(owner.actor, captured.id, None, "Gone"))
    await db.drain()

    # then the payment and the milestone are refunded in full
    assert (rest.amount_minor, (await Refund.get(id=rest.id)).status) == (
        30_000,
        RefundStatus.SUCCEEDED,
    )
    payment = await Payment.get(id=captured.id)
    assert (payment.status, payment.amount_refunded_minor) == (P.REFUNDED, 50_000)
    milestone = await Milestone.get(id=allocation.milestone_id)
    assert (milestone.payment_status, milestone.amount_refunded_minor) == (MP.REFUNDED, 50_000)
    assert (await Invoice.get(id=allocation.invoice_id)).amount_refunded_minor == 50_000
    # and each step is audited, the requests with who asked and why
    assert (await audit_trail(payment))[3:] == [
        ("refund_requested", "user", owner.user.id, "Scope reduced"),
        ("refund_succeeded", "sandbox", None, None),
        ("refund_requested", "user", owner.user.id, "Gone"),
        ("refund_succeeded", "sandbox", None, None),
    ]
    assert (await verbs("milestone", milestone.id))[-2:] == ["refunded", "refunded"]
    # and subscribers hear of each change once: asking for a refund changes nothing yet
    assert [e["status"] for e in await announced(owner.agency_id)][-3:] == [
        "succeeded",
        "partially_refunded",
        "refunded",
    ]


async def test_a_refund_is_never_above_what_was_captured(
    db: Backend, owner: Account, lead: Account, captured: Payment
) -> None:
    # given refunds asked for but not settled yet (their jobs held)
    with relay_later():
        await committed(payment_service.request_refund(owner.actor, captured.id, "300.00", "a"))

        # when more than what is left is asked for; then it is refused
        for amount, message in (
            ("200.01", "At most $200.00 can be refunded"),
            ("0", "amount must be greater than 0"),
        ):
            with pytest.raises(ValidationError) as refused:
                await committed(
                    payment_service.request_refund(owner.actor, captured.id, amount, "b")
                )
            assert (refused.value.field, refused.value.code, refused.value.message) == (
                "amount",
                "OUT_OF_RANGE",
                message,
            )
        # and exactly what is left is taken, after which nothing is
        await committed(payment_service.request_refund(owner.actor, captured.id, "200.00", "c"))
        with pytest.raises(ValidationError) as nothing_left:
            await committed(payment_service.request_refund(owner.actor, captured.id, None, "d"))
        assert (nothing_left.value.field, nothing_left.value.code) == ("amount", "OUT_OF_RANGE")
    assert await Refund.filter(payment_id=captured.id).count() == 2

    # and only owners and admins refund, always with a reason
    with pytest.raises(PermissionDeniedError):
        await committed(payment_service.request_refund(lead.actor, captured.id, "1.00", "e"))
    with pytest.raises(ValidationError) as no_reason:
        await committed(payment_service.request_refund(owner.actor, captured.id, "1.00", " "))
    assert (no_reason.value.field, no_reason.value.code) == ("reason", "REQUIRED")


async def test_a_payment_not_captured_is_not_refunded(
    db: Backend, owner: Account, project: Project
) -> None:
    # given a payment still waiting at its checkout
    milestone = await approved_milestone(owner, project)
    payment, _ = await pay_milestones(owner, [milestone])
    # when an owner refunds it; then there is nothing to refund yet
    with pytest.raises(InvalidTransitionError):
        await committed(payment_service.request_refund(owner.actor, payment.id, None, "x"))
    assert await Refund.all().count() == 0


async def test_an_offline_payment_is_refunded_at_once(
    db: Backend, owner: Account, client: Client
) -> None:
    # given $100.00 received by bank transfer
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    payment = await committed(
        payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount="100.00",
            method=OfflineMethod.BANK_TRANSFER,
            reference="UTR-9",
            explorer_url=None,
        )
    )

    # when $40.00 of it is given back
    refund = await committed(
        payment_service.request_refund(owner.actor, payment.id, "40.00", "Overcharged")
    )

    # then it is settled on the spot, with no gateway to ask
    assert (refund.status, refund.amount_minor) == (RefundStatus.SUCCEEDED, 4_000)
    row = await Payment.get(id=payment.id)
    assert (row.status, row.amount_refunded_minor) == (P.PARTIALLY_REFUNDED, 4_000)
    assert (await Invoice.get(id=invoice.id)).amount_refunded_minor == 4_000
    assert await OutboxMessage.filter(topic=payment_service.REFUND_JOB).count() == 0


async def test_a_refused_refund_fails_and_the_money_stays_captured(
    db: Backend, owner: Account, captured: Payment
) -> None:
    # given a refund asked for, whose job has not run
    with relay_later():
        refund = await committed(
            payment_service.request_refund(owner.actor, captured.id, "100.00", "Asked")
        )

    # when the gateway refuses it for good (twice, as a redelivered job would report)
    for _ in range(2):
        await committed(payment_service.refund_refused(refund.id, "The card was closed"))

    # then the refund failed with the gateway's reason, once
    row = await Refund.get(id=refund.id)
    assert (row.status, row.failure_reason, row.settled_at) == (
        RefundStatus.FAILED,
        "The card was closed",
        None,
    )
    payment = await Payment.get(id=captured.id)
    assert (payment.status, payment.amount_refunded_minor) == (P.SUCCEEDED, 0)
    assert (await audit_trail(payment))[-1] == (
        "refund_failed",
        "sandbox",
        None,
        "The card was closed",
    )
    assert await PaymentAuditEntry.filter(action="refund_failed").count() == 1
    # and the whole amount can be refunded again
    again = await committed(payment_service.request_refund(owner.actor, captured.id, None, "x"))
    assert again.amount_minor == 50_000


# --- overrides ------------------------------------------------------------------------------


async def test_an_override_to_succeeded_applies_the_money_with_the_reason(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a pending payment the gateway never confirmed
    milestone = await approved_milestone(owner, project)
    await db.drain()
    payment, _ = await pay_milestones(lead, [milestone])

    # when an owner overrides it to succeeded
    reason = "Confirmed on the bank statement"
    await committed(payment_service.override_status(owner.actor, payment.id, P.SUCCEEDED, reason))

    # then the money's effects apply, and the override is audited with the reason
    row = await Payment.get(id=payment.id)
    assert row.status == P.SUCCEEDED
    settled = await Milestone.get(id=milestone.id)
    assert (settled.status, settled.payment_status, settled.payment_reference) == (
        MS.PAID,
        MP.PAID,
        str(payment.id),
    )
    assert (await Invoice.get(id=settled.invoice_id)).status == InvoiceStatus.PAID
    assert (await audit_trail(row))[-1] == ("status_overridden", "user", owner.user.id, reason)
    entry = await PaymentAuditEntry.get(payment_id=payment.id, action="status_overridden")
    assert (entry.before["status"], entry.after["status"]) == ("pending", "succeeded")
    # and a succeeded payment is not overridden again, to anything
    for target in (P.SUCCEEDED, P.FAILED, P.CANCELLED):
        with pytest.raises(InvalidTransitionError):
            await committed(payment_service.override_status(owner.actor, payment.id, target, "x"))


async def test_an_override_to_failed_frees_the_milestone(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a pending payment
    milestone = await approved_milestone(owner, project)
    payment, _ = await pay_milestones(lead, [milestone])

    # when an admin overrides it to failed
    admin = await create_user(owner, role=Role.ADMIN)
    await committed(payment_service.override_status(admin.actor, payment.id, P.FAILED, "Abandoned"))

    # then it failed for that reason, and the milestone can be paid again
    row = await Payment.get(id=payment.id)
    assert (row.status, row.failure_reason) == (P.FAILED, "Abandoned")
    assert row.failed_at is not None
    assert (await Milestone.get(id=milestone.id)).payment_status == MP.UNPAID
    assert (await audit_trail(row))[-1] == ("status_overridden", "user", admin.user.id, "Abandoned")
    # and a late success from the gateway still pays it: the money was taken
    await paid(db, payment)
    assert (await Milestone.get(id=milestone.id)).status == MS.PAID


async def test_overrides_are_for_owners_and_admins_with_a_reason(
    db: Backend, owner: Account, lead: Account, project: Project
) -> None:
    # given a pending payment
    milestone = await approved_milestone(owner, project)
    payment, _ = await pay_milestones(lead, [milestone])
    member = await create_user(owner, role=Role.MEMBER)
    await db.drain()  # the invitation email
    before = await row_counts(*PAYMENT_TABLES, Milestone)
    # when the client lead or a member overrides it; then they are refused
    for account in (lead, member):
        with pytest.raises(PermissionDeniedError):
            await committed(
                payment_service.override_status(account.actor, payment.id, P.SUCCEEDED, "x")
            )
    # and an owner is refused without a reason, or for a status no gateway reports
    for status, reason, field_name, code in (
        (P.SUCCEEDED, None, "reason", "REQUIRED"),
        (P.PENDING, "x", "status", "VALIDATION_ERROR"),
        (P.REFUNDED, "x", "status", "VALIDATION_ERROR"),
    ):
        with pytest.raises(ValidationError) as refused:
            await committed(
                payment_service.override_status(owner.actor, payment.id, status, reason)
            )
        assert (refused.value.field, refused.value.code) == (field_name, code)
    # and nothing changed
    assert await row_counts(*PAYMENT_TABLES, Milestone) == before
    assert (await Payment.get(id=payment.id)).status == P.PENDING


# --- money received outside the gateways -------------------------------------------------------


async def test_money_received_offline_pays_the_invoice_and_then_its_milestone(
    db: Backend, owner: Account, project: Project
) -> None:
    # given a milestone's issued $500.00 invoice
    milestone = await approved_milestone(owner, project)
    await db.drain()
    [invoice] = await Invoice.all()

    # when $200.00 arrives by bank transfer
    transfer = await committed(
        payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount="200.00",
            method=OfflineMethod.BANK_TRANSFER,
            reference="UTR-2026-001",
            explorer_url=None,
        )
    )

    # then the payment is recorded as succeeded, and the invoice is partly paid
    assert (
        transfer.provider,
        transfer.status,
        transfer.method,
        transfer.reference,
        transfer.amount_minor,
        transfer.invoice_id,
        transfer.created_by_id,
    ) == (
        PaymentProvider.OFFLINE,
        P.SUCCEEDED,
        OfflineMethod.BANK_TRANSFER,
        "UTR-2026-001",
        20_000,
        invoice.id,
        owner.user.id,
    )
    row = await Invoice.get(id=invoice.id)
    assert (row.status, row.amount_paid_minor) == (InvoiceStatus.PARTIALLY_PAID, 20_000)
    assert (await Milestone.get(id=milestone.id)).status == MS.APPROVED
    assert await audit_trail(transfer) == [
        ("created", "user", owner.user.id, "bank_transfer: UTR-2026-001"),
        ("offline_recorded", "user", owner.user.id, None),
    ]

    # when the rest arrives in crypto, with its transaction's explorer link
    explorer = "https://etherscan.io/tx/0xabc123"
    crypto = await committed(
        payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount="300.00",
            method=OfflineMethod.CRYPTO,
            reference="0xabc123",
            explorer_url=explorer,
        )
    )

    # then the invoice is paid, and so is the milestone it bills, with that reference
    assert (crypto.method, crypto.explorer_url) == (OfflineMethod.CRYPTO, explorer)
    row = await Invoice.get(id=invoice.id)
    assert (row.status, row.amount_paid_minor) == (InvoiceStatus.PAID, 50_000)
    settled = await Milestone.get(id=milestone.id)
    assert (
        settled.status,
        settled.payment_status,
        settled.amount_paid_minor,
        settled.payment_reference,
    ) == (MS.PAID, MP.PAID, 50_000, "0xabc123")


async def test_a_milestone_paid_offline_keeps_the_reference_it_has_room_for(
    db: Backend, owner: Account, project: Project
) -> None:
    # given a milestone's issued invoice
    milestone = await approved_milestone(owner, project)
    await db.drain()
    [invoice] = await Invoice.all()
    # when it is paid offline with the longest reference a payment takes
    reference = "R" * 255
    await committed(
        payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount="500.00",
            method=OfflineMethod.OTHER,
            reference=reference,
            explorer_url=None,
        )
    )
    # then the milestone keeps as much of it as its column holds
    settled = await Milestone.get(id=milestone.id)
    assert (settled.status, settled.payment_reference) == (MS.PAID, reference[:200])


@pytest.mark.parametrize(
    ("amount", "method", "reference", "explorer_url", "field_name", "code"),
    [
        ("0", OfflineMethod.CASH, "Receipt 1", None, "amount", "OUT_OF_RANGE"),
        ("100.01", OfflineMethod.CASH, "Receipt 1", None, "amount", "OUT_OF_RANGE"),
        ("50.00", OfflineMethod.BANK_TRANSFER, None, None, "reference", "REQUIRED"),
        ("50.00", OfflineMethod.OTHER, "   ", None, "reference", "REQUIRED"),
        ("50.00", OfflineMethod.CRYPTO, "0xabc", None, "explorerUrl", "REQUIRED"),
        (
            "50.00",
            OfflineMethod.CRYPTO,
            "0xabc",
            "ftp://x.test/0xabc",
            "explorerUrl",
            "INVALID_URL",
        ),
    ],
)
async def test_offline_money_is_refused_when_incomplete_or_above_what_is_owed(
    db: Backend,
    owner: Account,
    client: Client,
    amount: str,
    method: OfflineMethod,
    reference: str | None,
    explorer_url: str | None,
    field_name: str,
    code: str,
) -> None:
    # given an issued $100.00 invoice, its PDF rendered
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    await db.drain()
    before = await row_counts(*PAYMENT_TABLES)
    # when money is recorded against it wrongly; then it is refused and nothing is written
    with pytest.raises(ValidationError) as refused:
        await committed(
            payment_service.record_offline_payment(
                owner.actor,
                invoice.id,
                amount=amount,
                method=method,
                reference=reference,
                explorer_url=explorer_url,
            )
        )
    assert (refused.value.field, refused.value.code) == (field_name, code)
    assert await row_counts(*PAYMENT_TABLES) == before


async def test_offline_money_needs_a_manager_and_an_invoice_owing_it(
    db: Backend, owner: Account, lead: Account, client: Client
) -> None:
    # given a draft and an issued $100.00 invoice
    draft = await create_invoice(owner, client)
    invoice = await issue_invoice(owner, await create_invoice(owner, client))

    async def record(account: Account, invoice_id: uuid.UUID) -> Payment:
        return await committed(
            payment_service.record_offline_payment(
                account.actor,
                invoice_id,
                amount="100.00",
                method=OfflineMethod.CASH,
                reference="Receipt 7",
                explorer_url=None,
            )
        )

    # when the client lead records money; then only owners and admins may
    with pytest.raises(PermissionDeniedError):
        await record(lead, invoice.id)
    # when money is recorded against a draft; then it is not an invoice anyone owes yet
    with pytest.raises(NotFoundError):
        await record(owner, draft.id)
    # when the issued invoice is paid, and paid again; then the second is refused
    await record(owner, invoice.id)
    with pytest.raises(AlreadyPaidError):
        await record(owner, invoice.id)
    assert await Payment.all().count() == 1


# --- the audit log -----------------------------------------------------------------------------


async def test_the_audit_log_refuses_every_update_and_delete(
    db: Backend, owner: Account, project: Project
) -> None:
    # given a payment's audit entries
    milestone = await approved_milestone(owner, project)
    payment, _ = await pay_milestones(owner, [milestone])
    entries = await PaymentAuditEntry.filter(payment_id=payment.id).order_by("created_at")
    before = [(e.id, e.action, e.reason, e.before, e.after) for e in entries]
    entry = entries[0]
    entry.reason = "rewritten"
    attempts: list[Callable[[BaseDBAsyncClient], Awaitable[Any]]] = [
        lambda _: entry.save(),
        lambda _: entry.delete(),
        lambda _: PaymentAuditEntry.filter(id=entry.id).update(action="forged"),
        lambda _: PaymentAuditEntry.filter(payment_id=payment.id).delete(),
        lambda conn: conn.execute_query("UPDATE payment_audit_entry SET reason = 'rewritten'"),
        lambda conn: conn.execute_query("DELETE FROM payment_audit_entry"),
    ]

    # when code changes or removes one, through the ORM or in plain SQL
    for attempt in attempts:
        # then the database refuses it, as an integrity error on both backends
        with pytest.raises(IntegrityError, match="append-only"):
            async with transaction() as conn:
                await attempt(conn)
    # and the log is as it was
    rows = await PaymentAuditEntry.filter(payment_id=payment.id).order_by("created_at")
    assert [(e.id, e.action, e.reason, e.before, e.after) for e in rows] == before


# --- reading -----------------------------------------------------------------------------------


async def test_payments_are_listed_by_filter_and_seen_by_their_client_only(
    db: Backend, owner: Account, rival: Account, lead: Account, client: Client, project: Project
) -> None:
    # given a pending payment of our client, a paid one of another, and one in another agency
    ours = (await pay_milestones(lead, [await approved_milestone(owner, project)]))[0]
    other_project = await create_project(owner, await create_client(owner, name="Blue"))
    theirs = await paid(
        db, (await pay_milestones(owner, [await approved_milestone(owner, other_project)]))[0]
    )
    rival_project = await create_project(rival, await create_client(rival))
    await pay_milestones(rival, [await approved_milestone(rival, rival_project)])

    async def listed(account: Account, **values: Any) -> list[uuid.UUID]:
        page = await payment_service.list_payments(
            account.actor, PaymentFilter(**values), first=10, after=None
        )
        return [payment.id for payment in page.items]

    # then the agency sees its own, newest first, and filters them
    assert await listed(owner) == [theirs.id, ours.id]
    assert await listed(owner, status=P.SUCCEEDED) == [theirs.id]
    assert await listed(owner, client_id=client.id) == [ours.id]
    assert await listed(owner, project_id=other_project.id) == [theirs.id]
    assert await listed(owner, provider=PaymentProvider.OFFLINE) == []
    assert await listed(owner, min_amount_minor=50_000, max_amount_minor=50_000) == [
        theirs.id,
        ours.id,
    ]
    assert await listed(owner, min_amount_minor=50_001) == []
    # and the client lead sees its client's only, the rival agency none of ours
    assert await listed(lead) == [ours.id]
    with pytest.raises(NotFoundError):
        await payment_service.get_payment(lead.actor, theirs.id)
    with pytest.raises(NotFoundError):
        await payment_service.get_payment(rival.actor, ours.id)
    # and the audit log is for owners and admins
    with pytest.raises(PermissionDeniedError):
        await payment_service.audit_log(lead.actor, ours.id)
    assert [e.action for e in await payment_service.audit_log(owner.actor, ours.id)] == [
        "created",
        "checkout_created",
    ]
    # and an invoice's payments are found by the invoice
    assert theirs.invoice_id is not None
    by_invoice = await payment_service.payments_for_invoices(owner.actor, [theirs.invoice_id])
    assert {key: [p.id for p in found] for key, found in by_invoice.items()} == {
        theirs.invoice_id: [theirs.id]
    }
