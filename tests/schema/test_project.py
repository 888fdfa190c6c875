"""Projects through the API: create, update, archive, list, statistics, on both backends."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from settle.core.outbox import transaction
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.models.project import Project, ProjectStatus, Task, TaskStatus, TimeEntry
from settle.services import client as client_service
from settle.services import project as project_service
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient, count_queries

ERROR_FIELDS = """
    ... on Error { __typename code message }
    ... on ValidationError { field }
"""

PROJECT_FIELDS = """
  id clientId name description status startDate dueDate currency
  budget { amount currency minorUnits }
  hourlyRate { amount currency minorUnits }
  billable advancePercent invoiceDueDays archivedAt
"""

CREATE_PROJECT = f"""
mutation CreateProject($input: CreateProjectInput!) {{
  createProject(input: $input) {{
    __typename
    ... on Project {{ {PROJECT_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

UPDATE_PROJECT = f"""
mutation UpdateProject($id: ID!, $input: UpdateProjectInput!) {{
  updateProject(id: $id, input: $input) {{
    __typename
    ... on Project {{ {PROJECT_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

ARCHIVE_PROJECT = f"""
mutation ArchiveProject($id: ID!) {{
  archiveProject(id: $id) {{
    __typename
    ... on Project {{ id name archivedAt }}
    {ERROR_FIELDS}
  }}
}}
"""

PROJECT = f"""
query Project($id: ID!) {{
  project(id: $id) {{ {PROJECT_FIELDS} client {{ id name }} }}
}}
"""

PROJECTS = """
query Projects($first: Int!, $after: String, $filter: ProjectFilter, $orderBy: ProjectOrder) {
  projects(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
    totalCount
    edges { cursor node { id name } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

MONEY = "{ amount currency minorUnits }"

STATISTICS_FIELDS = f"""
  hoursLogged {{ billable nonBillable total }}
  billableAmount {MONEY}
  budget {MONEY}
  budgetUsed {MONEY}
  budgetUsedPercent
  taskCompletionPercent
  milestoneTotals {{ paid {MONEY} approvedUnpaid {MONEY} pending {MONEY} }}
"""

PROJECT_STATISTICS = f"""
query ProjectStatistics($id: ID!) {{
  project(id: $id) {{ statistics {{ {STATISTICS_FIELDS} }} }}
}}
"""

PROJECTS_WITH_STATISTICS = f"""
query ProjectsWithStatistics {{
  projects(first: 100) {{
    totalCount
    edges {{ node {{ id name client {{ name }} statistics {{ {STATISTICS_FIELDS} }} }} }}
  }}
}}
"""

PROJECT_TIMELINE = """
query ProjectTimeline($clientId: ID!) {
  timeline(first: 20, filter: {clientId: $clientId, entityTypes: ["project"]}) {
    edges { node { entityId verb summary actor { name } changes { field before after } } }
  }
}
"""

DENIED = {
    "__typename": "PermissionDeniedError",
    "code": "PERMISSION_DENIED",
    "message": "You are not allowed to do this",
}
TERMS_DENIED = {
    "__typename": "PermissionDeniedError",
    "code": "PERMISSION_DENIED",
    "message": "Only an owner or admin may set payment terms",
}


def money(amount: str, currency: str, minor: int) -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "minorUnits": minor}


async def _project(account: Account, client: Client, **values: Any) -> Project:
    async with transaction():
        return await project_service.create_project(
            account.actor, client.id, {"name": f"Project {uuid.uuid4().hex[:6]}", **values}
        )


async def _timeline(gql: GraphQLClient, account: Account, client: Client) -> list[dict[str, Any]]:
    data = await gql.execute(PROJECT_TIMELINE, {"clientId": str(client.id)}, token=account.token)
    return [edge["node"] for edge in data["timeline"]["edges"]]


async def _names(gql: GraphQLClient, account: Account, **variables: Any) -> list[str]:
    data = await gql.execute(PROJECTS, {"first": 100, **variables}, token=account.token)
    connection = data["projects"]
    assert connection["totalCount"] == len(connection["edges"])
    return [edge["node"]["name"] for edge in connection["edges"]]


# --- create ----------------------------------------------------------------


async def test_create_project_returns_it_stores_it_and_records_it(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a client billed in INR
    client = await create_client(owner, name="Acme", currency="INR")
    # when the owner creates a project with every field (and untidy text)
    data = await gql.execute(
        CREATE_PROJECT,
        {
            "input": {
                "clientId": str(client.id),
                "name": "  Website redesign ",
                "description": "New site\nand CMS",
                "status": "ON_HOLD",
                "startDate": "2026-03-01",
                "dueDate": "2026-06-30",
                "budget": " 1250000.50 ",
                "hourlyRate": "4500",
                "billable": True,
                "advancePercent": 40,
                "invoiceDueDays": 15,
            }
        },
        token=owner.token,
    )
    # then it comes back exactly, in the client's currency
    created = data["createProject"]
    assert created == {
        "__typename": "Project",
        "id": created["id"],
        "clientId": str(client.id),
        "name": "Website redesign",
        "description": "New site\nand CMS",
        "status": "ON_HOLD",
        "startDate": "2026-03-01",
        "dueDate": "2026-06-30",
        "currency": "INR",
        "budget": money("1250000.50", "INR", 125_000_050),
        "hourlyRate": money("4500.00", "INR", 450_000),
        "billable": True,
        "advancePercent": 40,
        "invoiceDueDays": 15,
        "archivedAt": None,
    }
    # and it is stored in minor units in the owner's agency
    row = await Project.get(id=created["id"])
    assert (
        row.agency_id,
        row.client_id,
        row.status,
        row.budget_minor,
        row.hourly_rate_minor,
        row.currency,
        row.start_date,
        row.due_date,
        row.budget_alert_level,
    ) == (
        owner.agency_id,
        client.id,
        ProjectStatus.ON_HOLD,
        125_000_050,
        450_000,
        "INR",
        date(2026, 3, 1),
        date(2026, 6, 30),
        0,
    )
    # and the timeline records who created it, with every field, amounts as decimals
    assert await _timeline(gql, owner, client) == [
        {
            "entityId": created["id"],
            "verb": "created",
            "summary": "Project Website redesign created for Acme",
            "actor": {"name": "Olive Owner"},
            "changes": [
                {"field": "advancePercent", "before": None, "after": 40},
                {"field": "billable", "before": None, "after": True},
                {"field": "budget", "before": None, "after": "1250000.50"},
                {"field": "currency", "before": None, "after": "INR"},
                {"field": "description", "before": None, "after": "New site\nand CMS"},
                {"field": "dueDate", "before": None, "after": "2026-06-30"},
                {"field": "hourlyRate", "before": None, "after": "4500.00"},
                {"field": "invoiceDueDays", "before": None, "after": 15},
                {"field": "name", "before": None, "after": "Website redesign"},
                {"field": "notifyMilestoneMembers", "before": None, "after": False},
                {"field": "startDate", "before": None, "after": "2026-03-01"},
                {"field": "status", "before": None, "after": "on_hold"},
            ],
        }
    ]


async def test_create_project_defaults(gql: GraphQLClient, owner: Account) -> None:
    # given a client billed in EUR
    client = await create_client(owner, name="Acme", currency="EUR")
    # when a project is created with a name only
    data = await gql.execute(
        CREATE_PROJECT,
        {"input": {"clientId": str(client.id), "name": "Retainer"}},
        token=owner.token,
    )
    # then it is active, billable, in the client's currency, with the default terms
    created = data["createProject"]
    assert created == {
        "__typename": "Project",
        "id": created["id"],
        "clientId": str(client.id),
        "name": "Retainer",
        "description": None,
        "status": "ACTIVE",
        "startDate": None,
        "dueDate": None,
        "currency": "EUR",
        "budget": None,
        "hourlyRate": None,
        "billable": True,
        "advancePercent": 0,
        "invoiceDueDays": 30,
        "archivedAt": None,
    }


async def test_create_project_in_another_currency_than_the_clients(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a client billed in USD
    client = await create_client(owner, name="Acme", currency="USD")
    # when a project is created in yen, its amounts given in yen
    data = await gql.execute(
        CREATE_PROJECT,
        {
            "input": {
                "clientId": str(client.id),
                "name": "Tokyo launch",
                "currency": "jpy",
                "budget": "1500000",
                "hourlyRate": "12000",
            }
        },
        token=owner.token,
    )
    # then the amounts are yen, which have no minor unit
    created = data["createProject"]
    assert (created["currency"], created["budget"], created["hourlyRate"]) == (
        "JPY",
        money("1500000", "JPY", 1_500_000),
        money("12000", "JPY", 12_000),
    )


BAD_CREATE_INPUT: list[tuple[dict[str, Any], str, str]] = [
    ({"name": ""}, "name", "REQUIRED"),
    ({"name": "   "}, "name", "REQUIRED"),
    ({"name": "x" * 201}, "name", "TOO_LONG"),
    ({"description": "x" * 10_001}, "description", "TOO_LONG"),
    ({"budget": "12.345"}, "budget", "VALIDATION_ERROR"),
    ({"budget": "-1.00"}, "budget", "OUT_OF_RANGE"),
    ({"budget": "0"}, "budget", "OUT_OF_RANGE"),
    ({"budget": "twelve"}, "budget", "VALIDATION_ERROR"),
    ({"budget": "NaN"}, "budget", "VALIDATION_ERROR"),
    ({"budget": "1e15"}, "budget", "OUT_OF_RANGE"),
    ({"hourlyRate": "10.001"}, "hourlyRate", "VALIDATION_ERROR"),
    ({"hourlyRate": "-0.01"}, "hourlyRate", "OUT_OF_RANGE"),
    ({"currency": "JPY", "budget": "100.5"}, "budget", "VALIDATION_ERROR"),
    ({"currency": "XYZ"}, "currency", "INVALID_CURRENCY"),
    ({"currency": ""}, "currency", "INVALID_CURRENCY"),
    ({"advancePercent": 101}, "advancePercent", "OUT_OF_RANGE"),
    ({"advancePercent": -1}, "advancePercent", "OUT_OF_RANGE"),
    ({"invoiceDueDays": 366}, "invoiceDueDays", "OUT_OF_RANGE"),
    ({"invoiceDueDays": -1}, "invoiceDueDays", "OUT_OF_RANGE"),
    ({"startDate": "2026-03-02", "dueDate": "2026-03-01"}, "dueDate", "INVALID_RANGE"),
]


async def test_create_project_rejects_bad_input(gql: GraphQLClient, owner: Account) -> None:
    # given a client
    client = await create_client(owner, name="Acme", currency="USD")
    before = await row_counts(Project)
    for values, field, code in BAD_CREATE_INPUT:
        # when a project with one bad field is created
        data = await gql.execute(
            CREATE_PROJECT,
            {"input": {"clientId": str(client.id), "name": "Website", **values}},
            token=owner.token,
        )
        # then it is a validation error naming that field
        result = data["createProject"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
    # and nothing was written
    assert await row_counts(Project) == before


async def test_create_project_with_a_bad_or_unknown_client(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a deleted client
    deleted = await create_client(owner, name="Gone")
    async with transaction():
        await client_service.delete_client(owner.actor, deleted.id)
    before = await row_counts(Project)
    # when projects are created for a malformed id, an unknown one and the deleted client
    malformed = await gql.execute(
        CREATE_PROJECT, {"input": {"clientId": "nope", "name": "X"}}, token=owner.token
    )
    unknown = await gql.execute(
        CREATE_PROJECT, {"input": {"clientId": str(uuid.uuid4()), "name": "X"}}, token=owner.token
    )
    gone = await gql.execute(
        CREATE_PROJECT, {"input": {"clientId": str(deleted.id), "name": "X"}}, token=owner.token
    )
    # then the first names clientId and the others do not find the client
    assert malformed["createProject"] == {
        "__typename": "ValidationError",
        "code": "INVALID_ID",
        "message": "clientId is not a valid id",
        "field": "clientId",
    }
    not_found = {"__typename": "NotFoundError", "code": "NOT_FOUND", "message": "Client not found"}
    assert unknown["createProject"] == not_found
    assert gone["createProject"] == not_found
    assert await row_counts(Project) == before


async def test_payment_terms_are_set_by_owners_and_admins_only(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a member and an admin of the agency, and a client
    member = await create_user(owner, role=Role.MEMBER)
    admin = await create_user(owner, role=Role.ADMIN)
    client = await create_client(owner, name="Acme")
    before = await row_counts(Project)
    # when the member creates projects with a 50% advance, or 7 due days
    for terms in ({"advancePercent": 50}, {"invoiceDueDays": 7}, {"advancePercent": 500}):
        data = await gql.execute(
            CREATE_PROJECT,
            {"input": {"clientId": str(client.id), "name": "Website", **terms}},
            token=member.token,
        )
        # then each is refused, and nothing is written
        assert data["createProject"] == TERMS_DENIED, terms
    assert await row_counts(Project) == before
    # when the member creates one with the default terms spelled out
    data = await gql.execute(
        CREATE_PROJECT,
        {
            "input": {
                "clientId": str(client.id),
                "name": "Website",
                "advancePercent": 0,
                "invoiceDueDays": 30,
            }
        },
        token=member.token,
    )
    project_id = data["createProject"]["id"]
    # then it is created
    assert (data["createProject"]["advancePercent"], data["createProject"]["invoiceDueDays"]) == (
        0,
        30,
    )
    # and the member cannot change its terms, but may resend the ones in force
    for terms in ({"advancePercent": 50}, {"invoiceDueDays": 45}, {"advancePercent": None}):
        data = await gql.execute(
            UPDATE_PROJECT, {"id": project_id, "input": terms}, token=member.token
        )
        assert data["updateProject"] == TERMS_DENIED, terms
    data = await gql.execute(
        UPDATE_PROJECT,
        {"id": project_id, "input": {"name": "Website v2", "advancePercent": 0}},
        token=member.token,
    )
    assert data["updateProject"]["name"] == "Website v2"
    # when the admin sets a 60% advance with 14 due days
    data = await gql.execute(
        UPDATE_PROJECT,
        {"id": project_id, "input": {"advancePercent": 60, "invoiceDueDays": 14}},
        token=admin.token,
    )
    # then the terms are in force, stored, and recorded
    assert (data["updateProject"]["advancePercent"], data["updateProject"]["invoiceDueDays"]) == (
        60,
        14,
    )
    row = await Project.get(id=project_id)
    assert (row.advance_percent, row.invoice_due_days) == (60, 14)
    assert (await _timeline(gql, owner, client))[0]["changes"] == [
        {"field": "advancePercent", "before": 0, "after": 60},
        {"field": "invoiceDueDays", "before": 30, "after": 14},
    ]
    # and the owner may create a project with terms directly
    data = await gql.execute(
        CREATE_PROJECT,
        {"input": {"clientId": str(client.id), "name": "App", "advancePercent": 50}},
        token=owner.token,
    )
    assert data["createProject"]["advancePercent"] == 50


# --- update ----------------------------------------------------------------


async def test_update_changes_only_the_given_fields(gql: GraphQLClient, owner: Account) -> None:
    # given a project with a budget and a due date
    client = await create_client(owner, name="Acme", currency="USD")
    project = await _project(
        owner,
        client,
        name="Website",
        description="Old",
        budget="1000.00",
        hourly_rate="80.00",
        due_date=date(2026, 6, 1),
    )
    # when its budget and name change, its description is cleared and its due date resent
    data = await gql.execute(
        UPDATE_PROJECT,
        {
            "id": str(project.id),
            "input": {
                "name": "Website v2",
                "budget": "1500",
                "description": None,
                "dueDate": "2026-06-01",
            },
        },
        token=owner.token,
    )
    # then only those fields changed
    result = data["updateProject"]
    assert result == {
        "__typename": "Project",
        "id": str(project.id),
        "clientId": str(client.id),
        "name": "Website v2",
        "description": None,
        "status": "ACTIVE",
        "startDate": None,
        "dueDate": "2026-06-01",
        "currency": "USD",
        "budget": money("1500.00", "USD", 150_000),
        "hourlyRate": money("80.00", "USD", 8_000),
        "billable": True,
        "advancePercent": 0,
        "invoiceDueDays": 30,
        "archivedAt": None,
    }
    row = await Project.get(id=project.id)
    assert (row.name, row.description, row.budget_minor, row.hourly_rate_minor) == (
        "Website v2",
        None,
        150_000,
        8_000,
    )
    # and one "updated" event holds exactly what changed
    events = await _timeline(gql, owner, client)
    assert [e["verb"] for e in events] == ["updated", "created"]
    assert events[0] == {
        "entityId": str(project.id),
        "verb": "updated",
        "summary": "Project Website v2 updated",
        "actor": {"name": "Olive Owner"},
        "changes": [
            {"field": "budget", "before": "1000.00", "after": "1500.00"},
            {"field": "description", "before": "Old", "after": None},
            {"field": "name", "before": "Website", "after": "Website v2"},
        ],
    }
    # when the budget is cleared
    data = await gql.execute(
        UPDATE_PROJECT, {"id": str(project.id), "input": {"budget": None}}, token=owner.token
    )
    # then the project has none
    assert data["updateProject"]["budget"] is None
    assert (await Project.get(id=project.id)).budget_minor is None


async def test_update_without_changes_records_nothing(gql: GraphQLClient, owner: Account) -> None:
    # given a project
    client = await create_client(owner, name="Acme", currency="USD")
    project = await _project(owner, client, name="Website", budget="1000.00")
    before = await row_counts(Project)
    # when an update resends the values it has (the budget written differently)
    data = await gql.execute(
        UPDATE_PROJECT,
        {"id": str(project.id), "input": {"name": "Website", "budget": "1000", "status": "ACTIVE"}},
        token=owner.token,
    )
    # then it succeeds and nothing is recorded
    assert data["updateProject"]["budget"] == money("1000.00", "USD", 100_000)
    assert await row_counts(Project) == before


async def test_status_change_is_its_own_event(gql: GraphQLClient, owner: Account) -> None:
    # given an active project
    client = await create_client(owner, name="Acme")
    project = await _project(owner, client, name="Website")
    # when it is put on hold
    held = await gql.execute(
        UPDATE_PROJECT, {"id": str(project.id), "input": {"status": "ON_HOLD"}}, token=owner.token
    )
    # and then completed while being renamed
    done = await gql.execute(
        UPDATE_PROJECT,
        {"id": str(project.id), "input": {"status": "COMPLETED", "name": "Website (done)"}},
        token=owner.token,
    )
    # then each status change is a status_changed event, the rename an updated one
    assert (held["updateProject"]["status"], done["updateProject"]["status"]) == (
        "ON_HOLD",
        "COMPLETED",
    )
    assert (await Project.get(id=project.id)).status is ProjectStatus.COMPLETED
    events = [(e["verb"], e["summary"], e["changes"]) for e in await _timeline(gql, owner, client)]
    assert events[:3] == [
        (
            "updated",
            "Project Website (done) updated",
            [{"field": "name", "before": "Website", "after": "Website (done)"}],
        ),
        (
            "status_changed",
            "Project Website (done) moved from on hold to completed",
            [{"field": "status", "before": "on_hold", "after": "completed"}],
        ),
        (
            "status_changed",
            "Project Website moved from active to on hold",
            [{"field": "status", "before": "active", "after": "on_hold"}],
        ),
    ]
    assert [verb for verb, _, _ in events[3:]] == ["created"]


BAD_UPDATE_INPUT: list[tuple[dict[str, Any], str, str]] = [
    ({"name": None}, "name", "REQUIRED"),
    ({"status": None}, "status", "REQUIRED"),
    ({"billable": None}, "billable", "VALIDATION_ERROR"),
    ({"budget": "1.001"}, "budget", "VALIDATION_ERROR"),
    ({"hourlyRate": "abc"}, "hourlyRate", "VALIDATION_ERROR"),
    ({"dueDate": "2026-02-28"}, "dueDate", "INVALID_RANGE"),
    ({"startDate": "2026-07-01"}, "dueDate", "INVALID_RANGE"),
    ({"currency": "ABC"}, "currency", "INVALID_CURRENCY"),
    ({"currency": None}, "currency", "INVALID_CURRENCY"),
    ({"currency": "JPY"}, "budget", "VALIDATION_ERROR"),
    ({"currency": "JPY", "budget": "100000"}, "hourlyRate", "VALIDATION_ERROR"),
    ({"advancePercent": 101}, "advancePercent", "OUT_OF_RANGE"),
    ({"invoiceDueDays": 400}, "invoiceDueDays", "OUT_OF_RANGE"),
]


async def test_update_rejects_bad_input(gql: GraphQLClient, owner: Account) -> None:
    # given a USD project with cents in its amounts, running March to June
    client = await create_client(owner, name="Acme", currency="USD")
    project = await _project(
        owner,
        client,
        name="Website",
        budget="1000.50",
        hourly_rate="80.25",
        start_date=date(2026, 3, 1),
        due_date=date(2026, 6, 30),
    )
    before = await row_counts(Project)
    for values, field, code in BAD_UPDATE_INPUT:
        # when one bad change is sent
        data = await gql.execute(
            UPDATE_PROJECT, {"id": str(project.id), "input": values}, token=owner.token
        )
        # then it is a validation error naming the field
        result = data["updateProject"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
    # and nothing changed
    assert await row_counts(Project) == before
    row = await Project.get(id=project.id)
    assert (row.name, row.currency, row.budget_minor, row.hourly_rate_minor) == (
        "Website",
        "USD",
        100_050,
        8_025,
    )


async def test_currency_change_keeps_the_amounts_until_money_is_attached(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a USD project with a budget and a rate
    client = await create_client(owner, name="Acme", currency="USD")
    project = await _project(owner, client, name="Website", budget="1000.00", hourly_rate="80.00")
    # when its currency becomes EUR
    data = await gql.execute(
        UPDATE_PROJECT, {"id": str(project.id), "input": {"currency": "eur"}}, token=owner.token
    )
    # then its amounts keep their numbers in the new currency
    result = data["updateProject"]
    assert (result["currency"], result["budget"], result["hourlyRate"]) == (
        "EUR",
        money("1000.00", "EUR", 100_000),
        money("80.00", "EUR", 8_000),
    )
    # and the event records the currency, the only thing that changed as the API shows it
    assert (await _timeline(gql, owner, client))[0]["changes"] == [
        {"field": "currency", "before": "USD", "after": "EUR"}
    ]
    # when it becomes JPY with amounts given in yen
    data = await gql.execute(
        UPDATE_PROJECT,
        {
            "id": str(project.id),
            "input": {"currency": "JPY", "budget": "150000", "hourlyRate": "12000"},
        },
        token=owner.token,
    )
    assert (data["updateProject"]["budget"], data["updateProject"]["hourlyRate"]) == (
        money("150000", "JPY", 150_000),
        money("12000", "JPY", 12_000),
    )


async def test_currency_cannot_change_once_time_or_milestones_exist(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a project with a time entry and one with a milestone
    client = await create_client(owner, name="Acme", currency="USD")
    timed = await _project(owner, client, name="Timed", hourly_rate="80.00")
    await TimeEntry.create(
        agency_id=owner.agency_id,
        user_id=owner.user.id,
        project_id=timed.id,
        client_id=client.id,
        work_date=date(2026, 3, 2),
        minutes=60,
        hourly_rate_minor=8_000,
        currency="USD",
        is_running=False,
    )
    staged = await _project(owner, client, name="Staged")
    await Milestone.create(
        agency_id=owner.agency_id,
        project_id=staged.id,
        client_id=client.id,
        title="Design",
        amount_minor=50_000,
        currency="USD",
    )
    before = await row_counts(Project)
    for project in (timed, staged):
        # when its currency is changed
        data = await gql.execute(
            UPDATE_PROJECT,
            {"id": str(project.id), "input": {"currency": "EUR", "name": "Renamed"}},
            token=owner.token,
        )
        # then it is a conflict and nothing changed
        assert data["updateProject"] == {
            "__typename": "ConflictError",
            "code": "CONFLICT",
            "message": "The currency of a project with milestones or time entries cannot change",
        }
        row = await Project.get(id=project.id)
        assert (row.currency, row.name) == ("USD", project.name)
    assert await row_counts(Project) == before
    # but other fields, and the same currency resent, still may change
    data = await gql.execute(
        UPDATE_PROJECT,
        {"id": str(timed.id), "input": {"currency": "usd", "name": "Timed v2"}},
        token=owner.token,
    )
    assert (data["updateProject"]["currency"], data["updateProject"]["name"]) == (
        "USD",
        "Timed v2",
    )


# --- archive ---------------------------------------------------------------


async def test_archive_hides_a_project_from_lists_only(gql: GraphQLClient, owner: Account) -> None:
    # given two projects
    client = await create_client(owner, name="Acme")
    old = await _project(owner, client, name="Old site")
    await _project(owner, client, name="New site")
    # when one is archived
    data = await gql.execute(ARCHIVE_PROJECT, {"id": str(old.id)}, token=owner.token)
    # then it is returned with the time it was archived
    row = await Project.get(id=old.id)
    assert row.archived_at is not None
    assert data["archiveProject"] == {
        "__typename": "Project",
        "id": str(old.id),
        "name": "Old site",
        "archivedAt": row.archived_at.isoformat(),
    }
    # and it leaves the list unless archived projects are asked for
    assert await _names(gql, owner) == ["New site"]
    assert await _names(gql, owner, filter={"includeArchived": True}) == ["New site", "Old site"]
    # and it can still be read by id
    found = await gql.execute(PROJECT, {"id": str(old.id)}, token=owner.token)
    assert found["project"]["archivedAt"] == row.archived_at.isoformat()
    # and the timeline records it
    event = (await _timeline(gql, owner, client))[0]
    assert event == {
        "entityId": str(old.id),
        "verb": "archived",
        "summary": "Project Old site archived",
        "actor": {"name": "Olive Owner"},
        "changes": [{"field": "archivedAt", "before": None, "after": row.archived_at.isoformat()}],
    }
    # and archiving it again changes and records nothing
    before = await row_counts(Project)
    again = await gql.execute(ARCHIVE_PROJECT, {"id": str(old.id)}, token=owner.token)
    assert again["archiveProject"] == data["archiveProject"]
    assert await row_counts(Project) == before


async def test_only_owners_and_admins_archive(gql: GraphQLClient, owner: Account) -> None:
    # given a project, a member, an admin and the client's lead
    client = await create_client(owner, name="Acme")
    project = await _project(owner, client, name="Website")
    member = await create_user(owner, role=Role.MEMBER)
    admin = await create_user(owner, role=Role.ADMIN)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    before = await row_counts(Project)
    # when the member and the lead try to archive it
    for account in (member, lead):
        data = await gql.execute(ARCHIVE_PROJECT, {"id": str(project.id)}, token=account.token)
        # then they are refused and nothing changed
        assert data["archiveProject"] == DENIED
    assert await row_counts(Project) == before
    assert (await Project.get(id=project.id)).archived_at is None
    # when the admin does
    data = await gql.execute(ARCHIVE_PROJECT, {"id": str(project.id)}, token=admin.token)
    # then it is archived
    assert data["archiveProject"]["archivedAt"] is not None


async def test_missing_projects_are_not_found(gql: GraphQLClient, owner: Account) -> None:
    # given the id of no project, and a malformed one
    missing = str(uuid.uuid4())
    before = await row_counts(Project)
    # then updating or archiving the first finds nothing, and reading it gives null
    not_found = {"__typename": "NotFoundError", "code": "NOT_FOUND", "message": "Project not found"}
    updated = await gql.execute(
        UPDATE_PROJECT, {"id": missing, "input": {"name": "X"}}, token=owner.token
    )
    assert updated["updateProject"] == not_found
    archived = await gql.execute(ARCHIVE_PROJECT, {"id": missing}, token=owner.token)
    assert archived["archiveProject"] == not_found
    assert await gql.execute(PROJECT, {"id": missing}, token=owner.token) == {"project": None}
    # and the malformed one is null to read and an invalid id to change
    assert await gql.execute(PROJECT, {"id": "not-an-id"}, token=owner.token) == {"project": None}
    malformed = await gql.execute(ARCHIVE_PROJECT, {"id": "not-an-id"}, token=owner.token)
    assert malformed["archiveProject"] == {
        "__typename": "ValidationError",
        "code": "INVALID_ID",
        "message": "id is not a valid id",
        "field": "id",
    }
    # and nothing was written
    assert await row_counts(Project) == before


# --- lists -----------------------------------------------------------------


async def test_projects_filters(gql: GraphQLClient, owner: Account, rival: Account) -> None:
    # given projects of two clients in several states, one archived, one of a deleted
    # client, and one of another agency
    acme = await create_client(owner, name="Acme")
    blue = await create_client(owner, name="Blue")
    gone = await create_client(owner, name="Gone")
    await _project(owner, acme, name="Acme website", description="Marketing site")
    await _project(owner, acme, name="Acme app", status=ProjectStatus.ON_HOLD)
    archived = await _project(owner, acme, name="Acme 2024 site")
    await _project(owner, blue, name="Blue brand", description="New WEBSITE copy")
    await _project(owner, blue, name="100% audit", status=ProjectStatus.COMPLETED)
    await _project(owner, gone, name="Gone website")
    await _project(rival, await create_client(rival, name="Rivalco"), name="Rival website")
    async with transaction():
        await project_service.archive_project(owner.actor, archived.id)
        await client_service.delete_client(owner.actor, gone.id)
    # then by default the agency's live, unarchived projects come sorted by name
    assert await _names(gql, owner) == ["100% audit", "Acme app", "Acme website", "Blue brand"]
    # and each filter narrows them
    assert await _names(gql, owner, filter={"clientId": str(acme.id)}) == [
        "Acme app",
        "Acme website",
    ]
    assert await _names(gql, owner, filter={"status": "ON_HOLD"}) == ["Acme app"]
    assert await _names(gql, owner, filter={"status": "ACTIVE"}) == ["Acme website", "Blue brand"]
    # search matches name or description, case-insensitively and literally
    assert await _names(gql, owner, filter={"search": " website "}) == [
        "Acme website",
        "Blue brand",
    ]
    assert await _names(gql, owner, filter={"search": "%"}) == ["100% audit"]
    assert await _names(gql, owner, filter={"search": "site", "includeArchived": True}) == [
        "Acme 2024 site",
        "Acme website",
        "Blue brand",
    ]
    assert await _names(
        gql, owner, filter={"clientId": str(acme.id), "status": "ACTIVE", "includeArchived": True}
    ) == ["Acme 2024 site", "Acme website"]
    assert await _names(gql, owner, filter={"clientId": str(uuid.uuid4())}) == []
    # and a malformed client id names the filter field
    body = await gql.execute(
        PROJECTS,
        {"first": 10, "filter": {"clientId": "nope"}},
        token=owner.token,
        expect_errors=True,
    )
    assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
        ("filter.clientId is not a valid id", {"code": "INVALID_ID", "field": "filter.clientId"})
    ]


async def test_projects_order_by(gql: GraphQLClient, owner: Account) -> None:
    # given projects created in an order that is neither by name nor by due date,
    # two of them without a due date
    client = await create_client(owner, name="Acme")
    ids: dict[str, uuid.UUID] = {}
    for name, due in [
        ("Charlie", date(2026, 5, 1)),
        ("Alpha", None),
        ("Delta", date(2026, 3, 1)),
        ("Bravo", date(2026, 4, 1)),
        ("Echo", None),
    ]:
        ids[name] = (await _project(owner, client, name=name, due_date=due)).id
    # (projects without a due date come last either way, among themselves by id)
    undated = sorted(["Alpha", "Echo"], key=lambda name: ids[name])
    orderings: list[tuple[dict[str, str] | None, list[str]]] = [
        (None, ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]),
        ({"field": "NAME", "direction": "DESC"}, ["Echo", "Delta", "Charlie", "Bravo", "Alpha"]),
        ({"field": "CREATED_AT"}, ["Charlie", "Alpha", "Delta", "Bravo", "Echo"]),
        (
            {"field": "CREATED_AT", "direction": "DESC"},
            ["Echo", "Bravo", "Delta", "Alpha", "Charlie"],
        ),
        ({"field": "DUE_DATE"}, ["Delta", "Bravo", "Charlie", *undated]),
        (
            {"field": "DUE_DATE", "direction": "DESC"},
            ["Charlie", "Bravo", "Delta", *reversed(undated)],
        ),
    ]
    for order_by, expected in orderings:
        # when they are listed in that order
        # then that is the order
        assert await _names(gql, owner, orderBy=order_by) == expected, order_by
        # and walking it two at a time gives the same list, nothing twice, nothing missed
        walked: list[str] = []
        totals: set[int] = set()
        after = None
        for _ in range(10):
            data = await gql.execute(
                PROJECTS, {"first": 2, "after": after, "orderBy": order_by}, token=owner.token
            )
            page = data["projects"]
            walked += [edge["node"]["name"] for edge in page["edges"]]
            totals.add(page["totalCount"])
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert walked == expected, order_by
        assert totals == {5}


async def test_due_date_pages_end_exactly_at_the_dated_projects(
    gql: GraphQLClient, owner: Account
) -> None:
    # given two projects with a due date and one without
    client = await create_client(owner, name="Acme")
    await _project(owner, client, name="A", due_date=date(2026, 1, 1))
    await _project(owner, client, name="B", due_date=date(2026, 2, 1))
    await _project(owner, client, name="C")
    order_by = {"field": "DUE_DATE"}
    # when the first page holds exactly the dated ones
    first = await gql.execute(PROJECTS, {"first": 2, "orderBy": order_by}, token=owner.token)
    # then it says more follow, and the next page is the undated one
    assert [e["node"]["name"] for e in first["projects"]["edges"]] == ["A", "B"]
    assert first["projects"]["pageInfo"]["hasNextPage"] is True
    after = first["projects"]["pageInfo"]["endCursor"]
    rest = await gql.execute(
        PROJECTS, {"first": 2, "after": after, "orderBy": order_by}, token=owner.token
    )
    assert [e["node"]["name"] for e in rest["projects"]["edges"]] == ["C"]
    assert rest["projects"]["pageInfo"]["hasNextPage"] is False
    # and a cursor of another ordering, or none of ours, is a validation error on `after`
    by_name = await gql.execute(PROJECTS, {"first": 1}, token=owner.token)
    for cursor in (by_name["projects"]["pageInfo"]["endCursor"], "garbage"):
        body = await gql.execute(
            PROJECTS,
            {"first": 2, "after": cursor, "orderBy": order_by},
            token=owner.token,
            expect_errors=True,
        )
        assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
            ("Invalid cursor", {"code": "INVALID_CURSOR", "field": "after"})
        ]


async def test_first_out_of_range_is_a_validation_error(gql: GraphQLClient, owner: Account) -> None:
    for order_by in (None, {"field": "DUE_DATE"}):
        for first in (0, 101):
            body = await gql.execute(
                PROJECTS,
                {"first": first, "orderBy": order_by},
                token=owner.token,
                expect_errors=True,
            )
            assert [(e["path"], e["extensions"]) for e in body["errors"]] == [
                (["projects"], {"code": "OUT_OF_RANGE", "field": "first"})
            ]


# --- client users ------------------------------------------------------------


async def test_client_user_reads_their_clients_projects_and_changes_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given projects of two clients and the lead of the first
    acme = await create_client(owner, name="Acme")
    blue = await create_client(owner, name="Blue")
    mine = await _project(owner, acme, name="Acme website")
    theirs = await _project(owner, blue, name="Blue website")
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=acme)
    before = await row_counts(Project)
    # then the lead lists and reads their client's project only
    assert await _names(gql, lead) == ["Acme website"]
    assert await _names(gql, lead, filter={"clientId": str(blue.id)}) == []
    found = await gql.execute(PROJECT, {"id": str(mine.id)}, token=lead.token)
    assert (found["project"]["name"], found["project"]["client"]) == (
        "Acme website",
        {"id": str(acme.id), "name": "Acme"},
    )
    assert await gql.execute(PROJECT, {"id": str(theirs.id)}, token=lead.token) == {"project": None}
    # and cannot create, update or archive projects
    created = await gql.execute(
        CREATE_PROJECT, {"input": {"clientId": str(acme.id), "name": "Mine"}}, token=lead.token
    )
    assert created["createProject"] == DENIED
    updated = await gql.execute(
        UPDATE_PROJECT, {"id": str(mine.id), "input": {"name": "Mine"}}, token=lead.token
    )
    assert updated["updateProject"] == DENIED
    other = await gql.execute(
        UPDATE_PROJECT, {"id": str(theirs.id), "input": {"name": "Mine"}}, token=lead.token
    )
    assert other["updateProject"]["code"] == "NOT_FOUND"
    # and nothing was written
    assert await row_counts(Project) == before
    assert (await Project.get(id=mine.id)).name == "Acme website"


# --- statistics --------------------------------------------------------------


async def _entry(
    project: Project, account: Account, minutes: int, rate: int | None, *, billable: bool = True
) -> None:
    await TimeEntry.create(
        agency_id=project.agency_id,
        user_id=account.user.id,
        project_id=project.id,
        client_id=project.client_id,
        work_date=date(2026, 3, 2),
        minutes=minutes,
        is_running=False,
        billable=billable,
        hourly_rate_minor=rate,
        currency=project.currency,
    )


async def _milestone(project: Project, amount: int, status: MilestoneStatus, paid: int = 0) -> None:
    await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title=f"{status.value}",
        amount_minor=amount,
        currency=project.currency,
        status=status,
        amount_paid_minor=paid,
        payment_status=MilestonePaymentStatus.PAID if paid else MilestonePaymentStatus.UNPAID,
    )


async def _task(project: Project, status: TaskStatus) -> None:
    await Task.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title="Task",
        status=status,
    )


async def test_project_statistics(gql: GraphQLClient, owner: Account) -> None:
    # given an INR project with a 50,000.00 budget, billed at 1,500.00 an hour
    client = await create_client(owner, name="Acme", currency="INR")
    project = await _project(owner, client, budget="50000.00", hourly_rate="1500.00")
    # with 25h 40m billable (one entry of 40 minutes at another rate) and 1h 30m not
    await _entry(project, owner, 1_500, 150_000)  # 37,500.00
    await _entry(project, owner, 40, 99_999)  # 666.66
    await _entry(project, owner, 90, 150_000, billable=False)
    # and seven tasks, three completed
    for status in [TaskStatus.COMPLETED] * 3 + [TaskStatus.TODO] * 3 + [TaskStatus.BLOCKED]:
        await _task(project, status)
    # and milestones: 20,000.00 paid, 15,000.00 approved, 10,000.00 submitted, 5,000.00 pending
    await _milestone(project, 2_000_000, MilestoneStatus.PAID, paid=2_000_000)
    await _milestone(project, 1_500_000, MilestoneStatus.APPROVED)
    await _milestone(project, 1_000_000, MilestoneStatus.SUBMITTED)
    await _milestone(project, 500_000, MilestoneStatus.PENDING)
    # when its statistics are read
    data = await gql.execute(PROJECT_STATISTICS, {"id": str(project.id)}, token=owner.token)
    # then every figure is exact, money in the project's currency
    assert data["project"]["statistics"] == {
        "hoursLogged": {"billable": "25.67", "nonBillable": "1.50", "total": "27.17"},
        "billableAmount": money("38166.66", "INR", 3_816_666),
        "budget": money("50000.00", "INR", 5_000_000),
        "budgetUsed": money("38166.66", "INR", 3_816_666),
        "budgetUsedPercent": "76.3",
        "taskCompletionPercent": "42.9",
        "milestoneTotals": {
            "paid": money("20000.00", "INR", 2_000_000),
            "approvedUnpaid": money("15000.00", "INR", 1_500_000),
            "pending": money("15000.00", "INR", 1_500_000),
        },
    }


async def test_statistics_of_a_new_project(gql: GraphQLClient, owner: Account) -> None:
    # given a yen project without a budget, time, tasks or milestones
    client = await create_client(owner, name="Acme", currency="JPY")
    project = await _project(owner, client)
    # then its statistics are zero, with no percentages
    data = await gql.execute(PROJECT_STATISTICS, {"id": str(project.id)}, token=owner.token)
    zero = money("0", "JPY", 0)
    assert data["project"]["statistics"] == {
        "hoursLogged": {"billable": "0.00", "nonBillable": "0.00", "total": "0.00"},
        "billableAmount": zero,
        "budget": None,
        "budgetUsed": zero,
        "budgetUsedPercent": None,
        "taskCompletionPercent": None,
        "milestoneTotals": {"paid": zero, "approvedUnpaid": zero, "pending": zero},
    }


async def test_statistics_of_a_project_list_take_a_fixed_number_of_queries(
    gql: GraphQLClient, owner: Account
) -> None:
    # given three projects with time, tasks and milestones
    client = await create_client(owner, name="Acme", currency="USD")

    async def add_projects(count: int) -> None:
        for _ in range(count):
            project = await _project(owner, client, budget="100.00")
            await _entry(project, owner, 60, 4_000)
            await _task(project, TaskStatus.COMPLETED)
            await _milestone(project, 5_000, MilestoneStatus.PENDING)

    await add_projects(3)
    # when the projects are listed with their client and statistics
    with count_queries() as small:
        few = await gql.execute(PROJECTS_WITH_STATISTICS, token=owner.token)
    # and again with 30 more projects
    await add_projects(30)
    with count_queries() as large:
        many = await gql.execute(PROJECTS_WITH_STATISTICS, token=owner.token)
    # then every project has its figures
    assert few["projects"]["totalCount"] == 3
    assert many["projects"]["totalCount"] == 33
    for data in (few, many):
        for edge in data["projects"]["edges"]:
            stats = edge["node"]["statistics"]
            assert edge["node"]["client"] == {"name": "Acme"}
            assert stats["billableAmount"] == money("40.00", "USD", 4_000)
            assert stats["budgetUsedPercent"] == "40.0"
            assert stats["taskCompletionPercent"] == "100.0"
            assert stats["milestoneTotals"]["pending"] == money("50.00", "USD", 5_000)
    # and the number of SQL statements did not grow with the list
    assert small.count == large.count, (small.queries, large.queries)
    # (token lookup, count, page, clients, and four for the statistics)
    assert small.count <= 8, small.queries


NOTIFY_FIELDS = f"""
  __typename
  ... on Project {{ id notifyMilestoneMembers }}
  {ERROR_FIELDS}
"""
CREATE_NOTIFYING = f"""
mutation CreateProject($input: CreateProjectInput!) {{
  createProject(input: $input) {{ {NOTIFY_FIELDS} }}
}}
"""
UPDATE_NOTIFYING = f"""
mutation UpdateProject($id: ID!, $input: UpdateProjectInput!) {{
  updateProject(id: $id, input: $input) {{ {NOTIFY_FIELDS} }}
}}
"""
NOTIFY_DENIED = {
    "__typename": "PermissionDeniedError",
    "code": "PERMISSION_DENIED",
    "message": "Only an owner or admin may set who hears of payments",
}


async def test_who_hears_of_payments_is_set_by_owners_and_admins_only(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a member and an admin of the agency, and a client
    member = await create_user(owner, role=Role.MEMBER)
    admin = await create_user(owner, role=Role.ADMIN)
    client = await create_client(owner, name="Acme")
    before = await row_counts(Project)
    # when the member creates a project that tells members of its payments
    data = await gql.execute(
        CREATE_NOTIFYING,
        {"input": {"clientId": str(client.id), "name": "Website", "notifyMilestoneMembers": True}},
        token=member.token,
    )
    # then it is refused, and nothing is written
    assert data["createProject"] == NOTIFY_DENIED
    assert await row_counts(Project) == before
    # when the member creates one with the default spelled out
    data = await gql.execute(
        CREATE_NOTIFYING,
        {"input": {"clientId": str(client.id), "name": "Website", "notifyMilestoneMembers": False}},
        token=member.token,
    )
    # then it is created, telling only the managers
    project_id = data["createProject"]["id"]
    assert data["createProject"] == {
        "__typename": "Project",
        "id": project_id,
        "notifyMilestoneMembers": False,
    }
    # and the member cannot turn it on, nor send null, but may resend the value in force
    for value in (True, None):
        data = await gql.execute(
            UPDATE_NOTIFYING,
            {"id": project_id, "input": {"notifyMilestoneMembers": value}},
            token=member.token,
        )
        assert data["updateProject"] == NOTIFY_DENIED, value
    data = await gql.execute(
        UPDATE_NOTIFYING,
        {"id": project_id, "input": {"notifyMilestoneMembers": False}},
        token=member.token,
    )
    assert data["updateProject"]["notifyMilestoneMembers"] is False
    assert (await Project.get(id=project_id)).notify_milestone_members is False
    # when the admin sends null
    data = await gql.execute(
        UPDATE_NOTIFYING,
        {"id": project_id, "input": {"notifyMilestoneMembers": None}},
        token=admin.token,
    )
    # then it is a typed validation error, and nothing changes
    assert data["updateProject"] == {
        "__typename": "ValidationError",
        "code": "REQUIRED",
        "message": "notifyMilestoneMembers must be true or false",
        "field": "notifyMilestoneMembers",
    }
    # when the admin turns it on
    data = await gql.execute(
        UPDATE_NOTIFYING,
        {"id": project_id, "input": {"notifyMilestoneMembers": True}},
        token=admin.token,
    )
    # then it is on, stored, and recorded on the timeline
    assert data["updateProject"]["notifyMilestoneMembers"] is True
    assert (await Project.get(id=project_id)).notify_milestone_members is True
    assert (await _timeline(gql, owner, client))[0]["changes"] == [
        {"field": "notifyMilestoneMembers", "before": False, "after": True}
    ]
    # and the owner may create a project with it on
    data = await gql.execute(
        CREATE_NOTIFYING,
        {"input": {"clientId": str(client.id), "name": "App", "notifyMilestoneMembers": True}},
        token=owner.token,
    )
    assert data["createProject"]["notifyMilestoneMembers"] is True
