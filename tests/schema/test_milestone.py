"""Milestones through the API: the contract's terms, its workflow and payment terms."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from settle.core import clock
from settle.core.outbox import transaction
from settle.core.tenancy import Actor
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
from settle.resolvers.loaders import Loaders
from settle.resolvers.milestone import project_milestones
from settle.services import client as client_service
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient, count_queries

ERROR_FIELDS = """
    ... on Error { __typename code message }
    ... on ValidationError { field }
    ... on InvalidTransitionError { currentState }
"""

MONEY = "{ amount currency minorUnits }"

MILESTONE_FIELDS = f"""
    id projectId clientId title description kind
    amount {MONEY}
    dueDate position status rejectionReason
    submittedAt approvedAt cancelledAt approvedBy {{ name }}
    paymentStatus amountPaid {MONEY} paidAt paymentReference isOverdue
"""

CREATE_MILESTONE = f"""
mutation CreateMilestone($input: CreateMilestoneInput!) {{
  createMilestone(input: $input) {{
    __typename
    ... on Milestone {{ {MILESTONE_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

UPDATE_MILESTONE = f"""
mutation UpdateMilestone($id: ID!, $input: UpdateMilestoneInput!) {{
  updateMilestone(id: $id, input: $input) {{
    __typename
    ... on Milestone {{ {MILESTONE_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

START_MILESTONE = f"""
mutation StartMilestone($id: ID!) {{
  startMilestone(id: $id) {{
    __typename
    ... on Milestone {{ {MILESTONE_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

SUBMIT_MILESTONE = f"""
mutation SubmitMilestone($id: ID!) {{
  submitMilestone(id: $id) {{
    __typename
    ... on Milestone {{ {MILESTONE_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

APPROVE_MILESTONE = f"""
mutation ApproveMilestone($id: ID!) {{
  approveMilestone(id: $id) {{
    __typename
    ... on Milestone {{ {MILESTONE_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

REJECT_MILESTONE = f"""
mutation RejectMilestone($id: ID!, $reason: String!) {{
  rejectMilestone(id: $id, reason: $reason) {{
    __typename
    ... on Milestone {{ {MILESTONE_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

CANCEL_MILESTONE = f"""
mutation CancelMilestone($id: ID!, $reason: String) {{
  cancelMilestone(id: $id, reason: $reason) {{
    __typename
    ... on Milestone {{ {MILESTONE_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

MARK_MILESTONE_PAID = f"""
mutation MarkMilestonePaid($id: ID!, $reference: String!) {{
  markMilestonePaid(id: $id, reference: $reference) {{
    __typename
    ... on Milestone {{ {MILESTONE_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

APPLY_PAYMENT_TERMS = f"""
mutation ApplyPaymentTerms($projectId: ID!, $total: String!) {{
  applyPaymentTerms(projectId: $projectId, total: $total) {{
    __typename
    ... on PaymentTerms {{
      projectId advancePercent total {MONEY}
      milestones {{ id title kind position status amount {MONEY} }}
    }}
    {ERROR_FIELDS}
  }}
}}
"""

MILESTONE = f"""
query Milestone($id: ID!) {{
  milestone(id: $id) {{ {MILESTONE_FIELDS} }}
}}
"""

MILESTONES = """
query Milestones($first: Int!, $after: String, $filter: MilestoneFilter) {
  milestones(first: $first, after: $after, filter: $filter) {
    totalCount
    edges { cursor node { title status paymentStatus isOverdue } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

TIMELINE = """
query Timeline($filter: TimelineFilter) {
  timeline(first: 50, filter: $filter) {
    totalCount
    edges {
      node { entityType entityId verb summary actor { name } changes { field before after } }
    }
  }
}
"""

START = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)

# Every action as the API names it: (operation, extra variables).
ACTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "startMilestone": (START_MILESTONE, {}),
    "submitMilestone": (SUBMIT_MILESTONE, {}),
    "approveMilestone": (APPROVE_MILESTONE, {}),
    "rejectMilestone": (REJECT_MILESTONE, {"reason": "Not yet"}),
    "cancelMilestone": (CANCEL_MILESTONE, {"reason": "Dropped"}),
    "markMilestonePaid": (MARK_MILESTONE_PAID, {"reference": "NEFT-1"}),
}

# The workflow as the issue states it, written out independently of the service's table:
# the status each action leads to, and the statuses it may start from.
ALLOWED: dict[str, tuple[str, set[str]]] = {
    "startMilestone": ("in_progress", {"pending", "rejected"}),
    "submitMilestone": ("submitted", {"in_progress"}),
    "approveMilestone": ("approved", {"submitted"}),
    "rejectMilestone": ("rejected", {"submitted"}),
    "cancelMilestone": (
        "cancelled",
        {"pending", "in_progress", "submitted", "approved", "rejected"},
    ),
    "markMilestonePaid": ("paid", {"approved"}),
}


class FrozenClock:
    """Settle's clock, stopped at a known moment and moved on by hand."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def advance(self, **delta: float) -> datetime:
        self.moment += timedelta(**delta)
        return self.moment

    @property
    def iso(self) -> str:
        return self.moment.isoformat()


@pytest.fixture
def frozen() -> Iterator[FrozenClock]:
    frozen = FrozenClock(START)
    clock.set_clock(lambda: frozen.moment)
    yield frozen
    clock.set_clock(None)


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client)


@pytest.fixture
async def member(owner: Account) -> Account:
    return await create_user(owner, role=Role.MEMBER, name="Mo Member")


@pytest.fixture
async def admin(owner: Account) -> Account:
    return await create_user(owner, role=Role.ADMIN, name="Ada Admin")


@pytest.fixture
async def lead(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lee Lead")


@pytest.fixture
async def viewer(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_VIEWER, client=client, name="Vic Viewer")


async def create_project(
    owner: Account,
    client: Client,
    *,
    currency: str = "INR",
    advance_percent: int = 40,
    name: str = "Website",
) -> Project:
    return await Project.create(
        agency_id=owner.agency_id,
        client_id=client.id,
        name=name,
        currency=currency,
        advance_percent=advance_percent,
    )


async def create_milestone(
    project: Project,
    *,
    title: str = "Design",
    amount_minor: int = 100_000,
    status: MilestoneStatus = MilestoneStatus.PENDING,
    position: int = 0,
    **values: Any,
) -> Milestone:
    """A milestone row in a given status (the workflow itself is tested through the API)."""
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title=title,
        amount_minor=amount_minor,
        status=status,
        position=position,
        **values,
    )


def money(amount: str, currency: str, minor: int) -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "minorUnits": minor}


def expected(milestone: Milestone | str, project: Project, **overrides: Any) -> dict[str, Any]:
    """A new milestone as the API shows it, with ``overrides`` applied."""
    node = {
        "__typename": "Milestone",
        "id": milestone if isinstance(milestone, str) else str(milestone.id),
        "projectId": str(project.id),
        "clientId": str(project.client_id),
        "title": "Design",
        "description": None,
        "kind": "STANDARD",
        "amount": money("1000.00", "INR", 100_000),
        "dueDate": None,
        "position": 0,
        "status": "PENDING",
        "rejectionReason": None,
        "submittedAt": None,
        "approvedAt": None,
        "cancelledAt": None,
        "approvedBy": None,
        "paymentStatus": "UNPAID",
        "amountPaid": money("0.00", "INR", 0),
        "paidAt": None,
        "paymentReference": None,
        "isOverdue": False,
    }
    return {**node, **overrides}


async def events(entity_id: uuid.UUID | str) -> list[tuple[str, str, dict[str, Any]]]:
    """A milestone's timeline, oldest first: (verb, summary, changes)."""
    rows = await ActivityEvent.filter(entity_type="milestone", entity_id=entity_id).order_by(
        "created_at", "id"
    )
    return [(row.verb, row.summary, row.changes) for row in rows]


def change(before: Any, after: Any) -> dict[str, Any]:
    return {"before": before, "after": after}


# --- creating and editing ---------------------------------------------------------


async def test_create_milestone_in_the_projects_currency(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, project: Project
) -> None:
    # given a project in INR that already has one milestone
    await create_milestone(project, title="Discovery", position=0)
    # when the owner adds a milestone (with untidy input and no position)
    data = await gql.execute(
        CREATE_MILESTONE,
        {
            "input": {
                "projectId": str(project.id),
                "title": "  Design system ",
                "description": "Tokens, components\nand docs",
                "amount": "125000.50",
                "dueDate": "2026-04-30",
            }
        },
        token=owner.token,
    )
    # then it comes back in rupees, after the existing milestone
    created = data["createMilestone"]
    assert created == expected(
        created["id"],
        project,
        title="Design system",
        description="Tokens, components\nand docs",
        amount=money("125000.50", "INR", 12_500_050),
        dueDate="2026-04-30",
        position=1,
    )
    # and the row is stored with the project's agency, client and currency
    row = await Milestone.get(id=created["id"])
    assert (
        row.agency_id,
        row.client_id,
        row.currency,
        row.amount_minor,
        row.kind,
        row.status,
        row.payment_status,
    ) == (
        owner.agency_id,
        project.client_id,
        "INR",
        12_500_050,
        MilestoneKind.STANDARD,
        MilestoneStatus.PENDING,
        MilestonePaymentStatus.UNPAID,
    )
    # and the timeline records its terms
    assert await events(created["id"]) == [
        (
            "created",
            "Milestone Design system added to Website",
            {
                "amount": change(None, "125000.50"),
                "currency": change(None, "INR"),
                "description": change(None, "Tokens, components\nand docs"),
                "due_date": change(None, "2026-04-30"),
                "kind": change(None, "standard"),
                "position": change(None, 1),
                "status": change(None, "pending"),
                "title": change(None, "Design system"),
            },
        )
    ]


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"title": "   "}, "title", "REQUIRED"),
        ({"title": "x" * 201}, "title", "TOO_LONG"),
        ({"amount": ""}, "amount", "REQUIRED"),
        ({"amount": "ten"}, "amount", "VALIDATION_ERROR"),
        ({"amount": "10.001"}, "amount", "VALIDATION_ERROR"),
        ({"amount": "0"}, "amount", "OUT_OF_RANGE"),
        ({"amount": "-5.00"}, "amount", "OUT_OF_RANGE"),
        ({"amount": "1e20"}, "amount", "OUT_OF_RANGE"),
        ({"position": -1}, "position", "OUT_OF_RANGE"),
        # (NUL is refused before any operation runs: tests/test_bad_input.py)
        ({"description": "bad\x07byte"}, "description", "INVALID_CHARACTERS"),
        ({"projectId": "not-an-id"}, "projectId", "INVALID_ID"),
    ],
    ids=lambda value: str(value)[:30],
)
async def test_create_milestone_rejects_bad_input_naming_the_field(
    gql: GraphQLClient,
    owner: Account,
    project: Project,
    overrides: dict[str, Any],
    field: str,
    code: str,
) -> None:
    # given a project
    before = await row_counts(Milestone)
    # when a milestone is created with one bad field
    data = await gql.execute(
        CREATE_MILESTONE,
        {
            "input": {
                "projectId": str(project.id),
                "title": "Design",
                "amount": "100.00",
                **overrides,
            }
        },
        token=owner.token,
    )
    # then the error names the field, and nothing is written
    result = data["createMilestone"]
    assert (result["__typename"], result["field"], result["code"]) == (
        "ValidationError",
        field,
        code,
    )
    assert await row_counts(Milestone) == before


async def test_create_milestone_in_yen_takes_no_decimals(
    gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given a project in JPY
    project = await create_project(owner, client, currency="JPY")
    # when amounts with and without decimals are sent
    bad = await gql.execute(
        CREATE_MILESTONE,
        {"input": {"projectId": str(project.id), "title": "Design", "amount": "1500.5"}},
        token=owner.token,
    )
    good = await gql.execute(
        CREATE_MILESTONE,
        {"input": {"projectId": str(project.id), "title": "Design", "amount": "1500"}},
        token=owner.token,
    )
    # then yen fractions are refused and whole yen are kept as they are
    assert bad["createMilestone"] == {
        "__typename": "ValidationError",
        "code": "VALIDATION_ERROR",
        "message": "JPY amounts have at most 0 decimal places",
        "field": "amount",
    }
    assert good["createMilestone"]["amount"] == money("1500", "JPY", 1500)
    assert await Milestone.filter(project_id=project.id).values_list("amount_minor", flat=True) == [
        1500
    ]


async def test_only_owners_and_admins_define_milestones(
    gql: GraphQLClient,
    owner: Account,
    project: Project,
    admin: Account,
    member: Account,
    lead: Account,
    viewer: Account,
) -> None:
    # given a project and a user of every other role
    variables = {"input": {"projectId": str(project.id), "title": "Design", "amount": "100.00"}}
    before = await row_counts(Milestone)
    # when each tries to add a milestone
    results = {
        account.user.role: (await gql.execute(CREATE_MILESTONE, variables, token=account.token))[
            "createMilestone"
        ]["__typename"]
        for account in (member, lead, viewer, admin)
    }
    # then members and client users are refused, and only the admin's is written
    assert results == {
        Role.MEMBER: "PermissionDeniedError",
        Role.CLIENT_LEAD: "PermissionDeniedError",
        Role.CLIENT_VIEWER: "PermissionDeniedError",
        Role.ADMIN: "Milestone",
    }
    assert (await row_counts(Milestone))["milestone"] == before["milestone"] + 1


async def test_update_milestone_records_exactly_what_changed(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, project: Project
) -> None:
    # given a milestone
    milestone = await create_milestone(project, description="Old")
    # when its amount and title change, its due date is set and its description sent unchanged
    data = await gql.execute(
        UPDATE_MILESTONE,
        {
            "id": str(milestone.id),
            "input": {
                "title": "Design v2",
                "amount": "1500.25",
                "dueDate": "2026-05-01",
                "description": "Old",
            },
        },
        token=owner.token,
    )
    # then the milestone has the new terms
    assert data["updateMilestone"] == expected(
        milestone,
        project,
        title="Design v2",
        description="Old",
        amount=money("1500.25", "INR", 150_025),
        dueDate="2026-05-01",
    )
    row = await Milestone.get(id=milestone.id)
    assert (row.title, row.amount_minor, row.due_date) == ("Design v2", 150_025, date(2026, 5, 1))
    # and the timeline shows only what changed, amounts as decimal strings
    assert await events(milestone.id) == [
        (
            "updated",
            "Milestone Design v2 updated",
            {
                "amount": change("1000.00", "1500.25"),
                "due_date": change(None, "2026-05-01"),
                "title": change("Design", "Design v2"),
            },
        )
    ]
    # and sending the same values again records nothing
    before = await row_counts(Milestone)
    again = await gql.execute(
        UPDATE_MILESTONE,
        {"id": str(milestone.id), "input": {"title": "Design v2", "amount": "1500.250"}},
        token=owner.token,
    )
    assert again["updateMilestone"]["title"] == "Design v2"
    assert await row_counts(Milestone) == before


@pytest.mark.parametrize("status", ["approved", "paid", "cancelled"])
async def test_milestone_terms_are_locked_once_approved(
    gql: GraphQLClient, owner: Account, project: Project, status: str
) -> None:
    # given a milestone that is approved, paid or cancelled
    milestone = await create_milestone(project, status=MilestoneStatus(status))
    before = await row_counts(Milestone)
    # when the owner tries to change its amount
    data = await gql.execute(
        UPDATE_MILESTONE,
        {"id": str(milestone.id), "input": {"amount": "1.00"}},
        token=owner.token,
    )
    # then it is refused as locked, and nothing changes
    assert data["updateMilestone"] == {
        "__typename": "ConflictError",
        "code": "MILESTONE_LOCKED",
        "message": f"Milestone is {status} and can no longer be changed",
    }
    assert (await Milestone.get(id=milestone.id)).amount_minor == 100_000
    assert await row_counts(Milestone) == before


@pytest.mark.parametrize("status", ["pending", "in_progress", "submitted", "rejected"])
async def test_milestone_terms_change_until_approval(
    gql: GraphQLClient, owner: Account, project: Project, status: str
) -> None:
    # given a milestone not yet approved
    milestone = await create_milestone(project, status=MilestoneStatus(status))
    # when its amount changes
    data = await gql.execute(
        UPDATE_MILESTONE,
        {"id": str(milestone.id), "input": {"amount": "1.00"}},
        token=owner.token,
    )
    # then the change is kept and its status is untouched
    assert data["updateMilestone"]["amount"] == money("1.00", "INR", 100)
    row = await Milestone.get(id=milestone.id)
    assert (row.amount_minor, row.status) == (100, MilestoneStatus(status))


# --- the workflow ------------------------------------------------------------------


async def test_the_contract_from_pending_to_paid(
    gql: GraphQLClient,
    frozen: FrozenClock,
    owner: Account,
    project: Project,
    member: Account,
    lead: Account,
) -> None:
    # given a pending milestone
    milestone = await create_milestone(project, due_date=date(2026, 3, 31))
    variables = {"id": str(milestone.id)}
    base = expected(milestone, project, dueDate="2026-03-31")

    # when a member starts the work
    frozen.advance(minutes=1)
    started = await gql.execute(START_MILESTONE, variables, token=member.token)
    # then it is in progress
    assert started["startMilestone"] == {**base, "status": "IN_PROGRESS"}

    # when the member submits it
    submitted_at = frozen.advance(days=3)
    submitted = await gql.execute(SUBMIT_MILESTONE, variables, token=member.token)
    # then it awaits the client's approval
    after_submit = {**base, "status": "SUBMITTED", "submittedAt": submitted_at.isoformat()}
    assert submitted["submitMilestone"] == after_submit

    # when the client's lead approves it
    approved_at = frozen.advance(days=1)
    approved = await gql.execute(APPROVE_MILESTONE, variables, token=lead.token)
    # then it is approved, by the lead
    after_approval = {
        **after_submit,
        "status": "APPROVED",
        "approvedAt": approved_at.isoformat(),
        "approvedBy": {"name": "Lee Lead"},
    }
    assert approved["approveMilestone"] == after_approval

    # when the owner records the bank transfer by hand
    paid_at = frozen.advance(days=2)
    paid = await gql.execute(
        MARK_MILESTONE_PAID, {**variables, "reference": " NEFT-8812 "}, token=owner.token
    )
    # then it is paid in full, with the reference
    assert paid["markMilestonePaid"] == {
        **after_approval,
        "status": "PAID",
        "paymentStatus": "PAID",
        "amountPaid": money("1000.00", "INR", 100_000),
        "paidAt": paid_at.isoformat(),
        "paymentReference": "NEFT-8812",
    }
    # and so it is in the database
    row = await Milestone.get(id=milestone.id)
    assert (
        row.status,
        row.payment_status,
        row.amount_paid_minor,
        row.paid_at,
        row.payment_reference,
        row.submitted_at,
        row.approved_at,
        row.approved_by_id,
    ) == (
        MilestoneStatus.PAID,
        MilestonePaymentStatus.PAID,
        100_000,
        paid_at,
        "NEFT-8812",
        submitted_at,
        approved_at,
        lead.user.id,
    )
    # and each step is on the timeline with the status before and after
    assert await events(milestone.id) == [
        (
            "in_progress",
            "Milestone Design started by Mo Member",
            {"status": change("pending", "in_progress")},
        ),
        (
            "submitted",
            "Milestone Design submitted for approval by Mo Member",
            {
                "status": change("in_progress", "submitted"),
                "submitted_at": change(None, submitted_at.isoformat()),
            },
        ),
        (
            "approved",
            "Milestone Design approved by Lee Lead",
            {
                "status": change("submitted", "approved"),
                "approved_at": change(None, approved_at.isoformat()),
                "approved_by_id": change(None, str(lead.user.id)),
            },
        ),
        (
            "marked_paid",
            "Milestone Design marked paid by Olive Owner",
            {
                "status": change("approved", "paid"),
                "payment_status": change("unpaid", "paid"),
                "amount_paid": change("0.00", "1000.00"),
                "paid_at": change(None, paid_at.isoformat()),
                "payment_reference": change(None, "NEFT-8812"),
            },
        ),
    ]
    # and the client's lead reads the same history on the timeline
    timeline = await gql.execute(
        TIMELINE, {"filter": {"entityTypes": ["milestone"]}}, token=lead.token
    )
    assert [
        (edge["node"]["verb"], edge["node"]["actor"]["name"])
        for edge in timeline["timeline"]["edges"]
    ] == [
        ("marked_paid", "Olive Owner"),
        ("approved", "Lee Lead"),
        ("submitted", "Mo Member"),
        ("in_progress", "Mo Member"),
    ]
    assert timeline["timeline"]["edges"][0]["node"]["changes"][2] == {
        "field": "paymentReference",
        "before": None,
        "after": "NEFT-8812",
    }


async def test_rejected_work_goes_back_with_its_reason(
    gql: GraphQLClient,
    frozen: FrozenClock,
    project: Project,
    member: Account,
    lead: Account,
) -> None:
    # given a submitted milestone
    milestone = await create_milestone(
        project, status=MilestoneStatus.SUBMITTED, submitted_at=START
    )
    variables = {"id": str(milestone.id)}
    # when the lead rejects it with a reason
    frozen.advance(minutes=1)
    rejected = await gql.execute(
        REJECT_MILESTONE, {**variables, "reason": " Logo is too small "}, token=lead.token
    )
    # then it is rejected and says why
    assert rejected["rejectMilestone"] == expected(
        milestone,
        project,
        status="REJECTED",
        rejectionReason="Logo is too small",
        submittedAt=START.isoformat(),
    )
    # when the member picks it up again, the reason stays visible while they work
    frozen.advance(minutes=1)
    restarted = await gql.execute(START_MILESTONE, variables, token=member.token)
    assert restarted["startMilestone"]["status"] == "IN_PROGRESS"
    assert restarted["startMilestone"]["rejectionReason"] == "Logo is too small"
    # and when it is submitted again the old reason is cleared
    resubmitted_at = frozen.advance(minutes=1)
    resubmitted = await gql.execute(SUBMIT_MILESTONE, variables, token=member.token)
    assert resubmitted["submitMilestone"] == expected(
        milestone, project, status="SUBMITTED", submittedAt=resubmitted_at.isoformat()
    )
    # and the timeline tells the whole round trip
    assert await events(milestone.id) == [
        (
            "rejected",
            "Milestone Design rejected by Lee Lead",
            {
                "status": change("submitted", "rejected"),
                "rejection_reason": change(None, "Logo is too small"),
            },
        ),
        (
            "in_progress",
            "Milestone Design started by Mo Member",
            {"status": change("rejected", "in_progress")},
        ),
        (
            "submitted",
            "Milestone Design submitted for approval by Mo Member",
            {
                "status": change("in_progress", "submitted"),
                "submitted_at": change(START.isoformat(), resubmitted_at.isoformat()),
                "rejection_reason": change("Logo is too small", None),
            },
        ),
    ]


@pytest.mark.parametrize(
    ("operation", "field", "variables"),
    [
        (REJECT_MILESTONE, "rejectMilestone", {"reason": "  "}),
        (MARK_MILESTONE_PAID, "markMilestonePaid", {"reference": ""}),
    ],
    ids=["reject-reason", "paid-reference"],
)
async def test_a_reason_or_reference_is_required(
    gql: GraphQLClient,
    owner: Account,
    project: Project,
    operation: str,
    field: str,
    variables: dict[str, Any],
) -> None:
    # given milestones waiting for approval and for payment
    submitted = await create_milestone(project, status=MilestoneStatus.SUBMITTED)
    approved = await create_milestone(project, status=MilestoneStatus.APPROVED)
    target = submitted if field == "rejectMilestone" else approved
    before = await row_counts(Milestone)
    # when the owner rejects without a reason, or marks paid without a reference
    data = await gql.execute(operation, {"id": str(target.id), **variables}, token=owner.token)
    # then the missing field is named and nothing changes
    name = next(iter(variables))
    assert data[field] == {
        "__typename": "ValidationError",
        "code": "REQUIRED",
        "message": f"{name} must not be empty",
        "field": name,
    }
    assert (await Milestone.get(id=target.id)).status == target.status
    assert await row_counts(Milestone) == before


@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_each_action_only_from_the_statuses_the_workflow_allows(
    gql: GraphQLClient, db: Backend, owner: Account, project: Project, action: str
) -> None:
    # given one milestone in every status
    operation, extra = ACTIONS[action]
    rows = {
        status: await create_milestone(project, title=f"M {status.value}", status=status)
        for status in MilestoneStatus
    }
    target, sources = ALLOWED[action]
    for status, row in rows.items():
        # (an approval's invoice is made by the worker: let it finish before counting)
        await db.drain()
        before = await row_counts(Milestone)
        # when the owner (who may do anything) applies the action
        data = await gql.execute(operation, {"id": str(row.id), **extra}, token=owner.token)
        result = data[action]
        if status.value in sources:
            # then it moves where the workflow says
            assert result["status"] == target.upper(), (status, result)
            assert (await Milestone.get(id=row.id)).status == target
        else:
            # or it is refused with the current status, and nothing is written
            assert result == {
                "__typename": "InvalidTransitionError",
                "code": "INVALID_TRANSITION",
                "message": f"Milestone cannot move from {status.value} to {target}",
                "currentState": status.value,
            }, status
            assert (await Milestone.get(id=row.id)).status == status
            assert await row_counts(Milestone) == before


# Who may take each action (with the milestone in a status the action starts from).
ROLE_RULES: dict[str, set[Role]] = {
    "startMilestone": {Role.OWNER, Role.ADMIN, Role.MEMBER},
    "submitMilestone": {Role.OWNER, Role.ADMIN, Role.MEMBER},
    "approveMilestone": {Role.OWNER, Role.ADMIN, Role.CLIENT_LEAD},
    "rejectMilestone": {Role.OWNER, Role.ADMIN, Role.CLIENT_LEAD},
    "cancelMilestone": {Role.OWNER, Role.ADMIN},
    "markMilestonePaid": {Role.OWNER},
}

SOURCE = {
    "startMilestone": MilestoneStatus.PENDING,
    "submitMilestone": MilestoneStatus.IN_PROGRESS,
    "approveMilestone": MilestoneStatus.SUBMITTED,
    "rejectMilestone": MilestoneStatus.SUBMITTED,
    "cancelMilestone": MilestoneStatus.PENDING,
    "markMilestonePaid": MilestoneStatus.APPROVED,
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_who_may_take_each_action(
    gql: GraphQLClient,
    owner: Account,
    project: Project,
    admin: Account,
    member: Account,
    lead: Account,
    viewer: Account,
    action: str,
) -> None:
    operation, extra = ACTIONS[action]
    for account in (viewer, member, lead, admin, owner):
        # given a milestone the action may start from
        row = await create_milestone(project, status=SOURCE[action])
        before = await row_counts(Milestone)
        # when a user of each role tries it
        data = await gql.execute(operation, {"id": str(row.id), **extra}, token=account.token)
        result = data[action]
        role = account.user.role
        if role in ROLE_RULES[action]:
            # then the allowed roles move it
            assert result["status"] == ALLOWED[action][0].upper(), (role, result)
        else:
            # and everyone else is refused without a trace
            assert result == {
                "__typename": "PermissionDeniedError",
                "code": "PERMISSION_DENIED",
                "message": "You are not allowed to do this",
            }, role
            assert (await Milestone.get(id=row.id)).status == SOURCE[action]
            assert await row_counts(Milestone) == before


async def test_the_lead_of_another_client_cannot_reach_a_milestone(
    gql: GraphQLClient, owner: Account, project: Project
) -> None:
    # given a submitted milestone of Acme, and the lead of another client of the agency
    milestone = await create_milestone(project, status=MilestoneStatus.SUBMITTED)
    other = await create_client(owner, name="Bolt")
    stranger = await create_user(owner, role=Role.CLIENT_LEAD, client=other)
    before = await row_counts(Milestone)
    # when that lead tries to read and approve it
    read = await gql.execute(MILESTONE, {"id": str(milestone.id)}, token=stranger.token)
    approve = await gql.execute(APPROVE_MILESTONE, {"id": str(milestone.id)}, token=stranger.token)
    # then the milestone does not exist for them
    assert read == {"milestone": None}
    assert approve["approveMilestone"] == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
        "message": "Milestone not found",
    }
    assert (await Milestone.get(id=milestone.id)).status == MilestoneStatus.SUBMITTED
    assert await row_counts(Milestone) == before


async def test_cancel_records_when_and_why(
    gql: GraphQLClient, frozen: FrozenClock, admin: Account, project: Project
) -> None:
    # given an approved milestone and a pending one
    approved = await create_milestone(project, status=MilestoneStatus.APPROVED)
    pending = await create_milestone(project, title="Launch")
    # when an admin cancels the first with a reason and the second without
    cancelled_at = frozen.advance(hours=1)
    first = await gql.execute(
        CANCEL_MILESTONE,
        {"id": str(approved.id), "reason": "Scope moved to phase 2"},
        token=admin.token,
    )
    second = await gql.execute(CANCEL_MILESTONE, {"id": str(pending.id)}, token=admin.token)
    # then both are cancelled at that time
    assert first["cancelMilestone"] == expected(
        approved, project, status="CANCELLED", cancelledAt=cancelled_at.isoformat()
    )
    assert second["cancelMilestone"]["cancelledAt"] == cancelled_at.isoformat()
    # and the reason is on the timeline
    assert await events(approved.id) == [
        (
            "cancelled",
            "Milestone Design cancelled by Ada Admin",
            {
                "status": change("approved", "cancelled"),
                "cancelled_at": change(None, cancelled_at.isoformat()),
                "reason": change(None, "Scope moved to phase 2"),
            },
        )
    ]
    assert await events(pending.id) == [
        (
            "cancelled",
            "Milestone Launch cancelled by Ada Admin",
            {
                "status": change("pending", "cancelled"),
                "cancelled_at": change(None, cancelled_at.isoformat()),
            },
        )
    ]


async def test_two_approvals_at_once_approve_once(
    gql: GraphQLClient, owner: Account, project: Project, lead: Account
) -> None:
    # given a submitted milestone
    milestone = await create_milestone(project, status=MilestoneStatus.SUBMITTED)
    # when the owner and the client's lead approve it at the same moment
    results = await asyncio.gather(
        *(
            gql.execute(APPROVE_MILESTONE, {"id": str(milestone.id)}, token=account.token)
            for account in (owner, lead, owner, lead)
        )
    )
    # then exactly one approval wins; the others see it already approved
    outcomes = sorted(result["approveMilestone"]["__typename"] for result in results)
    assert outcomes == ["InvalidTransitionError"] * 3 + ["Milestone"]
    assert {
        result["approveMilestone"].get("currentState")
        for result in results
        if result["approveMilestone"]["__typename"] != "Milestone"
    } == {"approved"}
    # and one approval is recorded
    assert [verb for verb, _, _ in await events(milestone.id)] == ["approved"]


# --- payment terms -------------------------------------------------------------------


async def test_apply_payment_terms_creates_advance_and_balance(
    gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given a USD project with a 40% advance and one milestone already
    project = await create_project(owner, client, currency="USD", advance_percent=40)
    await create_milestone(project, title="Discovery", position=4)
    # when the owner applies the terms to a total that does not divide evenly
    data = await gql.execute(
        APPLY_PAYMENT_TERMS, {"projectId": str(project.id), "total": "100.01"}, token=owner.token
    )
    # then an advance of exactly 40% (rounded half up) and the rest as balance are created
    result = data["applyPaymentTerms"]
    ids = [m["id"] for m in result["milestones"]]
    assert result == {
        "__typename": "PaymentTerms",
        "projectId": str(project.id),
        "advancePercent": 40,
        "total": money("100.01", "USD", 10_001),
        "milestones": [
            {
                "id": ids[0],
                "title": "Advance (40%)",
                "kind": "ADVANCE",
                "position": 5,
                "status": "PENDING",
                "amount": money("40.00", "USD", 4000),
            },
            {
                "id": ids[1],
                "title": "Balance",
                "kind": "BALANCE",
                "position": 6,
                "status": "PENDING",
                "amount": money("60.01", "USD", 6001),
            },
        ],
    }
    # and they are stored, each on the timeline
    rows = await Milestone.filter(id__in=ids).order_by("position")
    assert [(r.title, r.kind, r.amount_minor, r.currency, r.client_id) for r in rows] == [
        ("Advance (40%)", MilestoneKind.ADVANCE, 4000, "USD", client.id),
        ("Balance", MilestoneKind.BALANCE, 6001, "USD", client.id),
    ]
    assert [(await events(i))[0][:2] for i in ids] == [
        ("created", "Milestone Advance (40%) added to Website"),
        ("created", "Milestone Balance added to Website"),
    ]


# (currency, advance percent, total, advance, balance)
AWKWARD_TOTALS = [
    ("USD", 40, "100.01", "40.00", "60.01"),
    ("USD", 50, "0.03", "0.02", "0.01"),
    ("USD", 33, "999999.99", "330000.00", "669999.99"),
    ("USD", 60, "0.05", "0.03", "0.02"),
    ("USD", 1, "0.50", "0.01", "0.49"),
    ("USD", 99, "0.99", "0.98", "0.01"),
    ("INR", 40, "33333.33", "13333.33", "20000.00"),
    ("INR", 60, "1000.05", "600.03", "400.02"),
    ("INR", 33, "100.00", "33.00", "67.00"),
    ("INR", 35, "0.10", "0.04", "0.06"),
    ("INR", 50, "9999999.99", "5000000.00", "4999999.99"),
    ("JPY", 40, "999", "400", "599"),
    ("JPY", 50, "3", "2", "1"),
    ("JPY", 33, "100", "33", "67"),
]


@pytest.mark.parametrize(
    ("currency", "percent", "total", "advance", "balance"),
    AWKWARD_TOTALS,
    ids=[f"{c}-{p}%-{t}" for c, p, t, _, _ in AWKWARD_TOTALS],
)
async def test_payment_terms_add_up_to_the_total_exactly(
    gql: GraphQLClient,
    owner: Account,
    client: Client,
    currency: str,
    percent: int,
    total: str,
    advance: str,
    balance: str,
) -> None:
    # given a project with an advance percentage, in INR, USD or JPY
    project = await create_project(owner, client, currency=currency, advance_percent=percent)
    # when the terms are applied to an awkward total
    data = await gql.execute(
        APPLY_PAYMENT_TERMS, {"projectId": str(project.id), "total": total}, token=owner.token
    )
    # then the advance is the documented rounding of total x percent, and the balance the rest
    milestones = data["applyPaymentTerms"]["milestones"]
    assert [(m["title"], m["amount"]["amount"]) for m in milestones] == [
        (f"Advance ({percent}%)", advance),
        ("Balance", balance),
    ]
    # and the stored minor units add up to the total to the last paisa, cent or yen
    stored = await Milestone.filter(project_id=project.id).values_list("amount_minor", flat=True)
    assert sum(stored) == data["applyPaymentTerms"]["total"]["minorUnits"]


@pytest.mark.parametrize(
    ("percent", "total", "parts"),
    [
        (0, "500.00", [("Balance", "BALANCE", "500.00")]),
        (100, "500.00", [("Advance (100%)", "ADVANCE", "500.00")]),
        (50, "0.01", [("Advance (50%)", "ADVANCE", "0.01")]),
        (40, "0.01", [("Balance", "BALANCE", "0.01")]),
    ],
    ids=["0%", "100%", "half-a-paisa", "under-half-a-paisa"],
)
async def test_a_part_that_comes_to_nothing_is_not_created(
    gql: GraphQLClient,
    owner: Account,
    client: Client,
    percent: int,
    total: str,
    parts: list[tuple[str, str, str]],
) -> None:
    # given a project whose advance is 0% or 100% of the total, or rounds to either
    project = await create_project(owner, client, advance_percent=percent)
    # when the terms are applied
    data = await gql.execute(
        APPLY_PAYMENT_TERMS, {"projectId": str(project.id), "total": total}, token=owner.token
    )
    # then only the part with money in it exists
    assert [
        (m["title"], m["kind"], m["amount"]["amount"])
        for m in data["applyPaymentTerms"]["milestones"]
    ] == parts
    assert await Milestone.filter(project_id=project.id).count() == 1


async def test_payment_terms_apply_once(
    gql: GraphQLClient, owner: Account, project: Project
) -> None:
    # given a project whose terms were applied
    variables = {"projectId": str(project.id), "total": "1000.00"}
    first = await gql.execute(APPLY_PAYMENT_TERMS, variables, token=owner.token)
    before = await row_counts(Milestone)
    # when they are applied again
    again = await gql.execute(APPLY_PAYMENT_TERMS, variables, token=owner.token)
    # then it is a conflict and nothing is written
    assert again["applyPaymentTerms"] == {
        "__typename": "ConflictError",
        "code": "CONFLICT",
        "message": "The project already has advance and balance milestones",
    }
    assert await row_counts(Milestone) == before
    # until both are cancelled: then new terms may replace them
    for node in first["applyPaymentTerms"]["milestones"]:
        await gql.execute(CANCEL_MILESTONE, {"id": node["id"]}, token=owner.token)
    redo = await gql.execute(
        APPLY_PAYMENT_TERMS, {"projectId": str(project.id), "total": "2000.00"}, token=owner.token
    )
    assert [m["amount"]["amount"] for m in redo["applyPaymentTerms"]["milestones"]] == [
        "800.00",
        "1200.00",
    ]
    assert await Milestone.filter(project_id=project.id).exclude(status="cancelled").count() == 2


@pytest.mark.parametrize(
    ("total", "code", "message"),
    [
        ("0", "OUT_OF_RANGE", "total must be greater than 0"),
        ("-10.00", "OUT_OF_RANGE", "total must be greater than 0"),
        ("10.001", "VALIDATION_ERROR", "INR amounts have at most 2 decimal places"),
        ("ten", "VALIDATION_ERROR", "'ten' is not a decimal amount"),
        (" ", "REQUIRED", "total must not be empty"),
    ],
)
async def test_payment_terms_reject_a_bad_total(
    gql: GraphQLClient, owner: Account, project: Project, total: str, code: str, message: str
) -> None:
    # given a project
    before = await row_counts(Milestone)
    # when the terms are applied to a total that is not an amount of rupees above zero
    data = await gql.execute(
        APPLY_PAYMENT_TERMS, {"projectId": str(project.id), "total": total}, token=owner.token
    )
    # then the total is named and nothing is written
    assert data["applyPaymentTerms"] == {
        "__typename": "ValidationError",
        "code": code,
        "message": message,
        "field": "total",
    }
    assert await row_counts(Milestone) == before


async def test_only_owners_and_admins_apply_payment_terms(
    gql: GraphQLClient,
    owner: Account,
    project: Project,
    admin: Account,
    member: Account,
    lead: Account,
) -> None:
    # given a project
    variables = {"projectId": str(project.id), "total": "100.00"}
    # when a member, a client lead and an admin apply the terms
    results = [
        (await gql.execute(APPLY_PAYMENT_TERMS, variables, token=a.token))["applyPaymentTerms"][
            "__typename"
        ]
        for a in (member, lead, admin)
    ]
    # then only the admin may
    assert results == ["PermissionDeniedError", "PermissionDeniedError", "PaymentTerms"]
    assert await Milestone.filter(project_id=project.id).count() == 2


# --- reading ---------------------------------------------------------------------------


async def test_is_overdue_after_the_due_date_until_paid_or_cancelled(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, project: Project
) -> None:
    # given "today" is 10 March and milestones due on either side of it, in several states
    yesterday, today = date(2026, 3, 9), date(2026, 3, 10)
    cases = [
        ("late", yesterday, MilestoneStatus.PENDING, True),
        ("late submitted", yesterday, MilestoneStatus.SUBMITTED, True),
        ("late approved", yesterday, MilestoneStatus.APPROVED, True),
        ("due today", today, MilestoneStatus.IN_PROGRESS, False),
        ("no date", None, MilestoneStatus.PENDING, False),
        ("late but paid", yesterday, MilestoneStatus.PAID, False),
        ("late but cancelled", yesterday, MilestoneStatus.CANCELLED, False),
    ]
    for position, (title, due, status, _) in enumerate(cases):
        await create_milestone(project, title=title, due_date=due, status=status, position=position)
    # when the project's milestones are listed, all of them and only the overdue or not
    listed = {}
    for key, overdue in (("all", None), ("overdue", True), ("not overdue", False)):
        data = await gql.execute(
            MILESTONES,
            {"first": 20, "filter": {"projectId": str(project.id), "overdue": overdue}},
            token=owner.token,
        )
        listed[key] = [
            (edge["node"]["title"], edge["node"]["isOverdue"])
            for edge in data["milestones"]["edges"]
        ]
    # then isOverdue marks the late, unpaid, uncancelled ones, and the filter agrees
    assert listed["all"] == [(title, overdue) for title, _, _, overdue in cases]
    assert listed["overdue"] == [(t, True) for t, _, _, overdue in cases if overdue]
    assert listed["not overdue"] == [(t, False) for t, _, _, overdue in cases if not overdue]
    # and a day later the one due today is overdue too
    frozen.advance(days=1)
    data = await gql.execute(
        MILESTONES,
        {"first": 20, "filter": {"projectId": str(project.id), "overdue": True}},
        token=owner.token,
    )
    assert [edge["node"]["title"] for edge in data["milestones"]["edges"]] == [
        "late",
        "late submitted",
        "late approved",
        "due today",
    ]


async def test_milestones_filtered_and_paginated(
    gql: GraphQLClient, owner: Account, client: Client, project: Project, rival: Account
) -> None:
    # given two projects of the agency, and one of a rival agency
    other = await create_project(owner, client, name="App")
    for position, status in enumerate(
        [MilestoneStatus.PENDING, MilestoneStatus.PAID, MilestoneStatus.PENDING]
    ):
        await create_milestone(
            project,
            title=f"Web {position}",
            status=status,
            position=2 - position,
            payment_status=MilestonePaymentStatus.PAID
            if status == MilestoneStatus.PAID
            else MilestonePaymentStatus.UNPAID,
        )
    await create_milestone(other, title="App 0")
    rival_client = await create_client(rival, name="Rivalco")
    await create_milestone(await create_project(rival, rival_client), title="Rival 0")

    async def titles(flt: dict[str, Any], first: int = 20) -> list[str]:
        nodes: list[str] = []
        after: str | None = None
        for _ in range(10):
            data = await gql.execute(
                MILESTONES, {"first": first, "after": after, "filter": flt}, token=owner.token
            )
            page = data["milestones"]
            nodes += [edge["node"]["title"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                return nodes
            after = page["pageInfo"]["endCursor"]
        pytest.fail("pagination did not end")

    # when they are listed one project at a time, in pages of two
    # then each project's come in position order
    assert await titles({"projectId": str(project.id)}, first=2) == ["Web 2", "Web 1", "Web 0"]
    assert await titles({"projectId": str(other.id)}, first=2) == ["App 0"]
    # and filters by status and payment status narrow the list
    assert await titles({"status": "PENDING"}) == ["Web 0", "Web 2", "App 0"]
    assert await titles({"paymentStatus": "PAID"}) == ["Web 1"]
    assert await titles({"projectId": str(project.id), "status": "PAID"}) == ["Web 1"]
    # and the rival's milestone is never among them
    assert sorted(await titles({}, first=3)) == ["App 0", "Web 0", "Web 1", "Web 2"]


async def test_milestones_page_size_is_checked(gql: GraphQLClient, owner: Account) -> None:
    # when more than 100 milestones are asked for
    body = await gql.execute(MILESTONES, {"first": 101}, token=owner.token, expect_errors=True)
    # then the error names the argument
    assert body["data"] is None
    assert body["errors"][0]["message"] == "first must be between 1 and 100"
    assert body["errors"][0]["extensions"] == {"code": "OUT_OF_RANGE", "field": "first"}


async def test_client_users_see_only_their_clients_milestones(
    gql: GraphQLClient, owner: Account, project: Project, viewer: Account
) -> None:
    # given milestones of the viewer's client and of another client
    mine = await create_milestone(project, title="Ours")
    other_client = await create_client(owner, name="Bolt")
    theirs = await create_milestone(await create_project(owner, other_client), title="Theirs")
    # when the viewer lists and looks them up
    listed = await gql.execute(MILESTONES, {"first": 20}, token=viewer.token)
    own = await gql.execute(MILESTONE, {"id": str(mine.id)}, token=viewer.token)
    other = await gql.execute(MILESTONE, {"id": str(theirs.id)}, token=viewer.token)
    unknown = await gql.execute(MILESTONE, {"id": "nonsense"}, token=viewer.token)
    # then only their client's milestone exists for them
    assert [edge["node"]["title"] for edge in listed["milestones"]["edges"]] == ["Ours"]
    assert own["milestone"] == {
        key: value
        for key, value in expected(mine, project, title="Ours").items()
        if key != "__typename"
    }
    assert other == unknown == {"milestone": None}


async def test_project_milestones_are_batched(
    owner: Account, client: Client, project: Project
) -> None:
    # given three projects with milestones out of position order, and one without any
    projects = [project, *[await create_project(owner, client, name=f"P{i}") for i in range(3)]]
    for p in projects[:3]:
        for position in (2, 0, 1):
            await create_milestone(p, title=f"{p.name} {position}", position=position)
    info: Any = SimpleNamespace(
        context=SimpleNamespace(actor=owner.actor, loaders=Loaders(owner.actor))
    )
    # when every project's milestones are resolved at once
    with count_queries() as counted:
        lists = await asyncio.gather(*(project_milestones(info, p.id) for p in projects))
    # then each project has its own, by position, from a single query
    assert [[m.title for m in milestones] for milestones in lists] == [
        [f"{p.name} {i}" for i in range(3)] for p in projects[:3]
    ] + [[]]
    assert counted.count == 1, counted.queries
    # and a client user of another client gets nothing through the same path
    outsider = await create_user(owner, role=Role.CLIENT_VIEWER, client=await create_client(owner))
    actor = Actor.from_user(outsider.user)
    info = SimpleNamespace(context=SimpleNamespace(actor=actor, loaders=Loaders(actor)))
    assert await project_milestones(info, project.id) == []


async def test_a_deleted_clients_milestones_go_with_it(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> None:
    # given a milestone of a client that is then deleted
    milestone = await create_milestone(project)
    async with transaction():
        await client_service.delete_client(owner.actor, client.id)
    before = await row_counts(Milestone)
    # when the owner looks it up, lists it, moves it, or adds to its project
    read = await gql.execute(MILESTONE, {"id": str(milestone.id)}, token=owner.token)
    listed = await gql.execute(MILESTONES, {"first": 20}, token=owner.token)
    started = await gql.execute(START_MILESTONE, {"id": str(milestone.id)}, token=owner.token)
    created = await gql.execute(
        CREATE_MILESTONE,
        {"input": {"projectId": str(project.id), "title": "Late", "amount": "1.00"}},
        token=owner.token,
    )
    # then it is gone like its client, and nothing is written
    assert read == {"milestone": None}
    assert listed["milestones"]["totalCount"] == 0
    assert started["startMilestone"]["code"] == "NOT_FOUND"
    assert created["createMilestone"] == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
        "message": "Project not found",
    }
    assert await row_counts(Milestone) == before
