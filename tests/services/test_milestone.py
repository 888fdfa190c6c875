"""The milestone service: the split rule, payment state, and races the API tests cannot stage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from settle.core.errors import ConflictError, InvalidTransitionError
from settle.core.money import Money, exponent
from settle.core.outbox import transaction
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.milestone import (
    Milestone,
    MilestoneKind,
    MilestonePaymentStatus,
    MilestoneStatus,
)
from settle.models.project import Project
from settle.services import milestone as milestone_service
from settle.services.milestone import ProjectPaymentState, split_advance
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import count_queries

PAID_AT = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


async def create_project(
    owner: Account, client: Client, *, currency: str = "INR", advance_percent: int = 40
) -> Project:
    return await Project.create(
        agency_id=owner.agency_id,
        client_id=client.id,
        name="Website",
        currency=currency,
        advance_percent=advance_percent,
    )


async def create_milestone(
    project: Project,
    *,
    kind: MilestoneKind = MilestoneKind.STANDARD,
    status: MilestoneStatus = MilestoneStatus.PENDING,
    paid_at: datetime | None = None,
    payment_status: MilestonePaymentStatus | None = None,
    **values: Any,
) -> Milestone:
    """A milestone row; ``paid_at`` makes it paid (status, payment status and amount paid)."""
    if paid_at is not None:
        status = MilestoneStatus.PAID
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title=values.pop("title", kind.value),
        amount_minor=10_000,
        kind=kind,
        status=status,
        payment_status=payment_status
        or (MilestonePaymentStatus.PAID if paid_at else MilestonePaymentStatus.UNPAID),
        amount_paid_minor=10_000 if paid_at else 0,
        paid_at=paid_at,
        **values,
    )


# --- the split rule --------------------------------------------------------------


def _half_up(total: Money, percent: int) -> int:
    """The documented rule, computed independently: decimal major units, ROUND_HALF_UP."""
    digits = exponent(total.currency)
    advance = (total.amount * percent / 100).quantize(
        Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP
    )
    return int(advance.scaleb(digits))


@pytest.mark.parametrize("currency", ["INR", "USD", "JPY"])
def test_split_rounds_the_advance_half_up_and_the_parts_add_up(currency: str) -> None:
    # given totals from the smallest unit to the largest allowed, many not dividing evenly
    totals = [1, 2, 3, 5, 7, 99, 101, 10_001, 33_333, 99_999_999, 10**17 - 1]
    for minor in totals:
        total = Money(minor, currency)
        for percent in range(101):
            # when each is split at every whole percentage
            advance, balance = split_advance(total, percent)
            # then the parts add up to the total exactly, in its currency
            assert advance.minor_units + balance.minor_units == minor
            assert advance.currency == balance.currency == currency
            # and the advance is total x percent / 100 rounded half up to the minor unit
            assert advance.minor_units == _half_up(total, percent), (minor, percent)
            assert 0 <= advance.minor_units <= minor


@pytest.mark.parametrize(
    ("total", "percent", "advance", "balance"),
    [
        (Money(10_001, "USD"), 40, "40.00", "60.01"),
        (Money(3, "USD"), 50, "0.02", "0.01"),
        (Money(99_999_999, "INR"), 33, "330000.00", "669999.99"),
        (Money(1, "JPY"), 50, "1", "0"),
        (Money(1, "JPY"), 49, "0", "1"),
        (Money(12_345, "INR"), 0, "0.00", "123.45"),
        (Money(12_345, "INR"), 100, "123.45", "0.00"),
    ],
)
def test_split_examples(total: Money, percent: int, advance: str, balance: str) -> None:
    # when an awkward total is split
    parts = split_advance(total, percent)
    # then the advance and the balance are exactly these
    assert tuple(part.format_amount() for part in parts) == (advance, balance)


# --- payment state ------------------------------------------------------------------


async def test_payment_state_of_projects_in_one_query(db: Backend, owner: Account) -> None:
    # given projects at every stage of being paid
    client = await create_client(owner)
    later = PAID_AT + timedelta(days=9)
    empty = await create_project(owner, client)
    unpaid = await create_project(owner, client)
    await create_milestone(unpaid, kind=MilestoneKind.ADVANCE)
    await create_milestone(unpaid, kind=MilestoneKind.BALANCE)
    advance_paid = await create_project(owner, client)
    await create_milestone(advance_paid, kind=MilestoneKind.ADVANCE, paid_at=PAID_AT)
    await create_milestone(advance_paid, kind=MilestoneKind.BALANCE)
    all_paid = await create_project(owner, client)
    await create_milestone(all_paid, kind=MilestoneKind.ADVANCE, paid_at=later)
    await create_milestone(all_paid, kind=MilestoneKind.BALANCE, paid_at=PAID_AT)
    await create_milestone(all_paid, status=MilestoneStatus.CANCELLED)
    no_advance = await create_project(owner, client)
    await create_milestone(no_advance, paid_at=PAID_AT)
    await create_milestone(no_advance, kind=MilestoneKind.ADVANCE, status=MilestoneStatus.CANCELLED)
    no_advance_unpaid = await create_project(owner, client)
    await create_milestone(no_advance_unpaid, paid_at=PAID_AT)
    await create_milestone(no_advance_unpaid, status=MilestoneStatus.APPROVED)
    refunded = await create_project(owner, client)
    # (refunded money is owed again: the refund put the milestone back to approved)
    await create_milestone(
        refunded,
        kind=MilestoneKind.ADVANCE,
        status=MilestoneStatus.APPROVED,
        payment_status=MilestonePaymentStatus.REFUNDED,
    )
    # (partly refunded, and the rest forgiven by a credit note: settled)
    partly_refunded = await create_project(owner, client)
    await create_milestone(
        partly_refunded,
        kind=MilestoneKind.ADVANCE,
        paid_at=PAID_AT,
        payment_status=MilestonePaymentStatus.PARTIALLY_REFUNDED,
    )
    all_cancelled = await create_project(owner, client)
    await create_milestone(all_cancelled, status=MilestoneStatus.CANCELLED)
    projects = [
        empty,
        unpaid,
        advance_paid,
        all_paid,
        no_advance,
        no_advance_unpaid,
        refunded,
        partly_refunded,
        all_cancelled,
    ]

    # when their payment state is read
    with count_queries() as counted:
        state = await milestone_service.payment_state(p.id for p in projects)

    # then each says whether there is an advance, when it was paid, and when all was paid
    assert [state[p.id] for p in projects] == [
        ProjectPaymentState(has_advance=False, advance_paid_at=None, all_paid_at=None),
        ProjectPaymentState(has_advance=True, advance_paid_at=None, all_paid_at=None),
        ProjectPaymentState(has_advance=True, advance_paid_at=PAID_AT, all_paid_at=None),
        # (the last payment counts; the cancelled milestone is not owed)
        ProjectPaymentState(has_advance=True, advance_paid_at=later, all_paid_at=later),
        ProjectPaymentState(has_advance=False, advance_paid_at=None, all_paid_at=PAID_AT),
        ProjectPaymentState(has_advance=False, advance_paid_at=None, all_paid_at=None),
        # (a refund takes the payment back; one forgiven by a credit note does not)
        ProjectPaymentState(has_advance=True, advance_paid_at=None, all_paid_at=None),
        ProjectPaymentState(has_advance=True, advance_paid_at=PAID_AT, all_paid_at=PAID_AT),
        ProjectPaymentState(has_advance=False, advance_paid_at=None, all_paid_at=None),
    ]
    assert set(state) == {p.id for p in projects}
    # and it took one query however many projects
    assert counted.count == 1, counted.queries


async def test_payment_state_without_ids_asks_nothing(db: Backend) -> None:
    with count_queries() as counted:
        assert await milestone_service.payment_state([]) == {}
    assert counted.count == 0


async def test_payment_state_follows_mark_paid(db: Backend, owner: Account) -> None:
    # given a project whose terms were applied
    client = await create_client(owner)
    project = await create_project(owner, client, advance_percent=50)
    async with transaction():
        terms = await milestone_service.apply_payment_terms(owner.actor, project.id, "999.99")
    advance, balance = terms.milestones

    async def pay(milestone: Milestone) -> Milestone:
        async with transaction():
            await Milestone.filter(id=milestone.id).update(status=MilestoneStatus.APPROVED)
            return await milestone_service.mark_milestone_paid(owner.actor, milestone.id, "REF")

    # when the advance is marked paid, and then the balance
    paid_advance = await pay(advance)
    after_advance = (await milestone_service.payment_state([project.id]))[project.id]
    paid_balance = await pay(balance)
    after_all = (await milestone_service.payment_state([project.id]))[project.id]

    # then the state follows each payment
    assert after_advance == ProjectPaymentState(True, paid_advance.paid_at, None)
    assert after_all == ProjectPaymentState(True, paid_advance.paid_at, paid_balance.paid_at)
    assert (advance.amount_minor, balance.amount_minor) == (50_000, 49_999)


# --- races ----------------------------------------------------------------------------


async def _approve(account: Account, milestone: Milestone) -> Milestone | InvalidTransitionError:
    try:
        async with transaction():
            return await milestone_service.approve_milestone(account.actor, milestone.id)
    except InvalidTransitionError as exc:
        return exc


async def test_racing_approvals_approve_once(db: Backend, owner: Account) -> None:
    # given a submitted milestone, its client's lead and an admin
    # (on PostgreSQL the transactions really run at once and the row lock serialises them)
    client = await create_client(owner)
    project = await create_project(owner, client)
    milestone = await create_milestone(project, status=MilestoneStatus.SUBMITTED)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    admin = await create_user(owner, role=Role.ADMIN)
    # when both approve at the same moment
    results = await asyncio.gather(_approve(lead, milestone), _approve(admin, milestone))
    # then exactly one succeeds and the other is told it is already approved
    approved = [r for r in results if isinstance(r, Milestone)]
    refused = [r for r in results if isinstance(r, InvalidTransitionError)]
    assert len(approved) == len(refused) == 1
    assert (refused[0].current, refused[0].target) == ("approved", "approved")
    # and the row and the timeline hold that one approval
    row = await Milestone.get(id=milestone.id)
    assert (row.status, row.approved_by_id) == (
        MilestoneStatus.APPROVED,
        approved[0].approved_by_id,
    )
    assert await ActivityEvent.filter(entity_id=milestone.id, verb="approved").count() == 1


async def _apply(account: Account, project: Project, total: str) -> object:
    try:
        async with transaction():
            return await milestone_service.apply_payment_terms(account.actor, project.id, total)
    except ConflictError as exc:
        return exc


async def test_racing_payment_terms_apply_once(db: Backend, owner: Account) -> None:
    # given a project without payment terms
    client = await create_client(owner)
    project = await create_project(owner, client, currency="USD")
    # when four requests apply terms at once
    results = await asyncio.gather(*(_apply(owner, project, f"{i}00.00") for i in range(1, 5)))
    # then one set of terms wins and the others conflict
    applied = [r for r in results if isinstance(r, milestone_service.PaymentTerms)]
    assert len(applied) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 3
    # and the project holds exactly that advance and balance
    rows = await Milestone.filter(project_id=project.id).order_by("position")
    assert [(r.kind, r.amount_minor) for r in rows] == [
        (m.kind, m.amount_minor) for m in applied[0].milestones
    ]
    assert sum(r.amount_minor for r in rows) == applied[0].total.minor_units
