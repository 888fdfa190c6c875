"""Time entries through the API: logging, editing, timers, lists and summaries, on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import strawberry

from settle.core import clock
from settle.core.settings import Settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.project import Project, Task, TimeEntry
from settle.resolvers.time_entry import project_time_entries
from settle.schema.common import Connection
from settle.schema.context import Context, Info
from settle.schema.time_entry import TimeEntry as TimeEntryType
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient, count_queries

ERROR_FIELDS = """
    ... on Error { __typename code message }
    ... on ValidationError { field }
"""

ENTRY_FIELDS = """
  id projectId taskId description workDate startedAt endedAt minutes hours isRunning billable
  hourlyRate { amount currency }
  amount { amount currency minorUnits }
  invoiced
  user { name }
  task { title }
"""

LOG_TIME = f"""
mutation LogTime($input: LogTimeInput!) {{
  logTime(input: $input) {{
    __typename
    ... on TimeEntry {{ {ENTRY_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

UPDATE_TIME_ENTRY = f"""
mutation UpdateTimeEntry($id: ID!, $input: UpdateTimeEntryInput!) {{
  updateTimeEntry(id: $id, input: $input) {{
    __typename
    ... on TimeEntry {{ id minutes hours startedAt endedAt workDate billable description }}
    {ERROR_FIELDS}
  }}
}}
"""

DELETE_TIME_ENTRY = f"""
mutation DeleteTimeEntry($id: ID!) {{
  deleteTimeEntry(id: $id) {{
    __typename
    ... on TimeEntry {{ id }}
    {ERROR_FIELDS}
  }}
}}
"""

START_TIMER = f"""
mutation StartTimer($projectId: ID!, $taskId: ID, $description: String) {{
  startTimer(projectId: $projectId, taskId: $taskId, description: $description) {{
    __typename
    ... on TimeEntry {{ id startedAt endedAt minutes hours isRunning workDate description }}
    {ERROR_FIELDS}
  }}
}}
"""

STOP_TIMER = f"""
mutation StopTimer {{
  stopTimer {{
    __typename
    ... on TimeEntry {{ id startedAt endedAt minutes hours isRunning amount {{ amount }} }}
    {ERROR_FIELDS}
  }}
}}
"""

RUNNING_TIMER = """
query RunningTimer { runningTimer { id isRunning task { title } } }
"""

TIME_ENTRIES = """
query TimeEntries($first: Int!, $after: String, $filter: TimeEntryFilter) {
  timeEntries(first: $first, after: $after, filter: $filter) {
    totalCount
    edges { node { description workDate } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

TIME_SUMMARY = """
query TimeSummary($projectId: ID!, $from: Date, $to: Date) {
  timeSummary(projectId: $projectId, from: $from, to: $to) {
    projectId from to minutes hours billableMinutes billableHours
    billableAmount { amount currency minorUnits }
    byUser {
      user { name } minutes hours billableMinutes billableHours billableAmount { amount }
    }
    byTask { task { title } minutes hours billableMinutes billableAmount { amount } }
  }
}
"""

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def at() -> Iterator[Any]:
    """Set the clock: ``at(datetime)``; the wall clock is back after the test."""
    yield lambda moment: clock.set_clock(lambda: moment)
    clock.set_clock(None)


async def make_project(
    account: Account, client: Client | None = None, name: str = "Website", **values: Any
) -> Project:
    """A project made directly (the project API is tested on its own): USD 100.00 an hour."""
    client = client or await create_client(account, name=f"Client of {name}")
    values.setdefault("hourly_rate_minor", 10_000)
    return await Project.create(
        agency_id=account.agency_id,
        client_id=client.id,
        name=name,
        currency=client.currency,
        **values,
    )


async def make_task(project: Project, title: str, position: int = 0) -> Task:
    return await Task.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title=title,
        position=position,
    )


async def make_entry(
    project: Project, account: Account, work_date: date, minutes: int, **values: Any
) -> TimeEntry:
    """A stopped entry made directly, at the project's rate unless given."""
    values.setdefault("hourly_rate_minor", project.hourly_rate_minor)
    return await TimeEntry.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        user_id=account.user.id,
        work_date=work_date,
        minutes=minutes,
        currency=project.currency,
        **values,
    )


async def _entry_rows() -> list[dict[str, Any]]:
    return await TimeEntry.all().order_by("id").values()


# --- logging -----------------------------------------------------------------


async def test_log_hours_rounds_and_copies_the_projects_rate(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a billable project at USD 100.00 an hour with a task
    project = await make_project(owner)
    task = await make_task(project, "Design")
    # when 1.125 hours (67.5 minutes, exactly between two quarters) are logged on the task
    data = await gql.execute(
        LOG_TIME,
        {
            "input": {
                "projectId": str(project.id),
                "taskId": str(task.id),
                "description": " Wireframes ",
                "workDate": "2026-03-02",
                "hours": "1.125",
            }
        },
        token=owner.token,
    )
    # then it is rounded up to 1.25 hours, billable at the project's rate
    entry = data["logTime"]
    assert entry == {
        "__typename": "TimeEntry",
        "id": entry["id"],
        "projectId": str(project.id),
        "taskId": str(task.id),
        "description": "Wireframes",
        "workDate": "2026-03-02",
        "startedAt": None,
        "endedAt": None,
        "minutes": 75,
        "hours": "1.25",
        "isRunning": False,
        "billable": True,
        "hourlyRate": {"amount": "100.00", "currency": "USD"},
        "amount": {"amount": "125.00", "currency": "USD", "minorUnits": 12500},
        "invoiced": False,
        "user": {"name": "Olive Owner"},
        "task": {"title": "Design"},
    }
    row = await TimeEntry.get(id=entry["id"])
    assert (row.user_id, row.client_id, row.hourly_rate_minor, row.currency, row.minutes) == (
        owner.user.id,
        project.client_id,
        10_000,
        "USD",
        75,
    )
    # and the timeline records it with the rate it was logged at
    event = await ActivityEvent.get(entity_id=row.id)
    assert (event.entity_type, event.verb, event.summary, event.client_id) == (
        "time_entry",
        "created",
        "Olive Owner logged 1.25 h on Website",
        project.client_id,
    )
    assert event.changes == {
        "billable": {"before": None, "after": True},
        "currency": {"before": None, "after": "USD"},
        "description": {"before": None, "after": "Wireframes"},
        "hourly_rate_minor": {"before": None, "after": 10_000},
        "minutes": {"before": None, "after": 75},
        "task_id": {"before": None, "after": str(task.id)},
        "work_date": {"before": None, "after": "2026-03-02"},
    }
    # and a later rate change does not re-price it
    await Project.filter(id=project.id).update(hourly_rate_minor=20_000)
    listed = await gql.execute(
        """query { timeEntries(first: 5) { edges { node { amount { amount } } } } }""",
        token=owner.token,
    )
    assert listed["timeEntries"]["edges"] == [{"node": {"amount": {"amount": "125.00"}}}]


async def test_log_start_and_end(gql: GraphQLClient, owner: Account, at: Any) -> None:
    # given a non-billable project
    project = await make_project(owner, billable=False)
    at(T0)
    # when time is logged from 01:00 to 01:52:30 India time (19:30-20:22:30 UTC the day before)
    data = await gql.execute(
        LOG_TIME,
        {
            "input": {
                "projectId": str(project.id),
                "startedAt": "2026-03-02T01:00:00+05:30",
                "endedAt": "2026-03-02T01:52:30+05:30",
            }
        },
        token=owner.token,
    )
    # then 52.5 minutes round up to 60, on the start's UTC date, not billable as the project
    entry = data["logTime"]
    assert {
        key: entry[key]
        for key in ("startedAt", "endedAt", "minutes", "hours", "workDate", "billable", "amount")
    } == {
        "startedAt": "2026-03-01T19:30:00+00:00",
        "endedAt": "2026-03-01T20:22:30+00:00",
        "minutes": 60,
        "hours": "1.00",
        "workDate": "2026-03-01",
        "billable": False,
        "amount": None,
    }
    # and an entry by hours without a work date is dated today
    today = await gql.execute(
        LOG_TIME,
        {"input": {"projectId": str(project.id), "hours": "2", "billable": True}},
        token=owner.token,
    )
    assert (today["logTime"]["workDate"], today["logTime"]["billable"]) == ("2026-03-02", True)
    assert today["logTime"]["amount"]["amount"] == "200.00"


ROUNDING: list[tuple[str, int | None]] = [
    ("0.125", 15),  # 7m30s: half way rounds up
    ("0.1249", None),  # 7m29.6s rounds to 0: rejected
    ("0.25", 15),
    ("0.3749", 15),  # 22m29.6s
    ("0.375", 30),  # 22m30s
    ("1.1166", 60),  # 1h06m59.8s
    ("23.99", 1440),
    ("24", 1440),
]


async def test_hours_round_to_the_nearest_quarter_half_up(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a project
    project = await make_project(owner)
    for hours, minutes in ROUNDING:
        # when hours are logged
        data = await gql.execute(
            LOG_TIME,
            {"input": {"projectId": str(project.id), "hours": hours, "workDate": "2026-03-02"}},
            token=owner.token,
        )
        # then they are rounded by the one rule, or rejected when they round to nothing
        result = data["logTime"]
        if minutes is None:
            assert result == {
                "__typename": "ValidationError",
                "code": "TOO_SHORT",
                "message": "Time is logged in quarter hours and this rounds to 0 minutes: "
                "log at least 7.5 minutes",
                "field": "hours",
            }
        else:
            assert (result["__typename"], result["minutes"]) == ("TimeEntry", minutes), hours


START = "2026-03-02T09:00:00+00:00"

BAD_LOG_INPUT: list[tuple[dict[str, Any], str, str]] = [
    ({}, "hours", "REQUIRED"),
    ({"hours": "0"}, "hours", "OUT_OF_RANGE"),
    ({"hours": "-1"}, "hours", "OUT_OF_RANGE"),
    ({"hours": "24.01"}, "hours", "OUT_OF_RANGE"),
    ({"hours": "1e400"}, "hours", "OUT_OF_RANGE"),
    ({"hours": "abc"}, "hours", "INVALID_DECIMAL"),
    ({"hours": "Infinity"}, "hours", "INVALID_DECIMAL"),
    ({"hours": "0.1"}, "hours", "TOO_SHORT"),
    ({"hours": "1", "startedAt": START}, "hours", "CONFLICTING"),
    ({"startedAt": START}, "endedAt", "REQUIRED"),
    ({"endedAt": START}, "startedAt", "REQUIRED"),
    ({"startedAt": START, "endedAt": START}, "endedAt", "INVALID_RANGE"),
    ({"startedAt": START, "endedAt": "2026-03-02T08:00:00+00:00"}, "endedAt", "INVALID_RANGE"),
    ({"startedAt": START, "endedAt": "2026-03-03T09:00:01+00:00"}, "endedAt", "OUT_OF_RANGE"),
    ({"startedAt": START, "endedAt": "2026-03-02T09:07:29+00:00"}, "endedAt", "TOO_SHORT"),
    (
        {"startedAt": "2026-03-02T09:00:00", "endedAt": "2026-03-02T10:00:00"},
        "startedAt",
        "INVALID_DATETIME",
    ),
    ({"hours": "1", "description": "d" * 1001}, "description", "TOO_LONG"),
    ({"hours": "1", "taskId": "nope"}, "taskId", "INVALID_ID"),
    ({"hours": "1", "taskId": str(uuid.uuid4())}, "taskId", "NOT_FOUND"),
    ({"hours": "1", "projectId": "nope"}, "projectId", "INVALID_ID"),
]


async def test_log_time_rejects_bad_input_and_writes_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a project and a task of another project
    project = await make_project(owner)
    other_task = await make_task(await make_project(owner, name="Other"), "Elsewhere")
    cases = [
        *BAD_LOG_INPUT,
        ({"hours": "1", "taskId": str(other_task.id)}, "taskId", "NOT_FOUND"),
    ]
    before = await row_counts(TimeEntry)
    for values, field, code in cases:
        # when time is logged with one bad field
        data = await gql.execute(
            LOG_TIME, {"input": {"projectId": str(project.id), **values}}, token=owner.token
        )
        # then the error names it
        result = data["logTime"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
    # and nothing was written
    assert await row_counts(TimeEntry) == before


async def test_log_time_on_unknown_or_archived_project(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given an archived project and another agency's project
    archived = await make_project(owner, archived_at=T0)
    foreign = await make_project(rival)
    before = await row_counts(TimeEntry)
    # when time is logged on each
    results = [
        (
            await gql.execute(
                LOG_TIME, {"input": {"projectId": str(p.id), "hours": "1"}}, token=owner.token
            )
        )["logTime"]
        for p in (archived, foreign)
    ]
    # then the first is archived and the second does not exist
    assert [(r["__typename"], r["code"]) for r in results] == [
        ("ConflictError", "PROJECT_ARCHIVED"),
        ("NotFoundError", "NOT_FOUND"),
    ]
    assert await row_counts(TimeEntry) == before


async def test_logging_billable_time_announces_budget_thresholds(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a project with a budget of USD 1,000.00 at USD 100.00 an hour
    project = await make_project(owner, budget_minor=100_000)

    async def log(hours: str, billable: bool = True) -> None:
        data = await gql.execute(
            LOG_TIME,
            {"input": {"projectId": str(project.id), "hours": hours, "billable": billable}},
            token=owner.token,
        )
        assert data["logTime"]["__typename"] == "TimeEntry"

    async def alerts() -> list[str]:
        return list(
            await ActivityEvent.filter(entity_id=project.id)
            .order_by("created_at", "id")
            .values_list("verb", flat=True)
        )

    # when 7.75 billable hours and 5 non-billable hours are logged
    await log("7.75")
    await log("5", billable=False)
    # then nothing is announced
    assert await alerts() == []
    # when 0.25 more billable hours reach 80% (USD 800.00)
    await log("0.25")
    assert await alerts() == ["budget_80"]
    # when 1.75 more stay below 100%, and then 0.25 reach it
    await log("1.75")
    assert await alerts() == ["budget_80"]
    await log("0.25")
    # then each threshold was announced once
    assert await alerts() == ["budget_80", "budget_100"]


# --- editing -----------------------------------------------------------------


async def test_author_updates_an_entry_and_it_is_rounded_again(
    gql: GraphQLClient, owner: Account
) -> None:
    # given an entry of 1 hour logged by a member
    project = await make_project(owner)
    task = await make_task(project, "Design")
    member = await create_user(owner, role=Role.MEMBER, name="Max Member")
    entry = await make_entry(project, member, date(2026, 3, 2), 60, description="Old")
    # when the member changes it to a start and end, a task and a description
    data = await gql.execute(
        UPDATE_TIME_ENTRY,
        {
            "id": str(entry.id),
            "input": {
                "startedAt": "2026-03-02T10:00:00+00:00",
                "endedAt": "2026-03-02T11:38:00+00:00",
                "taskId": str(task.id),
                "description": "New",
            },
        },
        token=member.token,
    )
    # then 98 minutes round to 105
    assert data["updateTimeEntry"] == {
        "__typename": "TimeEntry",
        "id": str(entry.id),
        "minutes": 105,
        "hours": "1.75",
        "startedAt": "2026-03-02T10:00:00+00:00",
        "endedAt": "2026-03-02T11:38:00+00:00",
        "workDate": "2026-03-02",
        "billable": True,
        "description": "New",
    }
    # and the timeline holds exactly what changed
    event = await ActivityEvent.get(entity_id=entry.id, verb="updated")
    assert (event.summary, event.actor_id) == ("Time entry on Website updated", member.user.id)
    assert event.changes == {
        "description": {"before": "Old", "after": "New"},
        "ended_at": {"before": None, "after": "2026-03-02T11:38:00+00:00"},
        "minutes": {"before": 60, "after": 105},
        "started_at": {"before": None, "after": "2026-03-02T10:00:00+00:00"},
        "task_id": {"before": None, "after": str(task.id)},
    }
    # when only the end moves, the start is kept; when hours are given, start and end go
    moved = await gql.execute(
        UPDATE_TIME_ENTRY,
        {"id": str(entry.id), "input": {"endedAt": "2026-03-02T10:20:00+00:00"}},
        token=member.token,
    )
    assert (moved["updateTimeEntry"]["minutes"], moved["updateTimeEntry"]["startedAt"]) == (
        15,
        "2026-03-02T10:00:00+00:00",
    )
    by_hours = await gql.execute(
        UPDATE_TIME_ENTRY, {"id": str(entry.id), "input": {"hours": "3"}}, token=member.token
    )
    assert {
        key: by_hours["updateTimeEntry"][key] for key in ("minutes", "startedAt", "endedAt")
    } == {"minutes": 180, "startedAt": None, "endedAt": None}
    row = await TimeEntry.get(id=entry.id)
    assert (row.minutes, row.started_at, row.ended_at, row.task_id) == (180, None, None, task.id)


BAD_ENTRY_UPDATES: list[tuple[dict[str, Any], str, str]] = [
    ({"hours": None}, "hours", "REQUIRED"),
    ({"hours": "25"}, "hours", "OUT_OF_RANGE"),
    ({"endedAt": "2026-03-02T11:00:00+00:00"}, "startedAt", "REQUIRED"),
    ({"workDate": None}, "workDate", "REQUIRED"),
    ({"billable": None}, "billable", "VALIDATION_ERROR"),
    # a valid change beside a bad one is not half-applied
    ({"description": "Changed", "taskId": str(uuid.uuid4())}, "taskId", "NOT_FOUND"),
]


async def test_update_rejects_bad_input_and_changes_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given an entry logged by hours
    project = await make_project(owner)
    entry = await make_entry(project, owner, date(2026, 3, 2), 60)
    rows, before = await _entry_rows(), await row_counts(TimeEntry)
    for values, field, code in BAD_ENTRY_UPDATES:
        # when it is updated with a bad field
        data = await gql.execute(
            UPDATE_TIME_ENTRY, {"id": str(entry.id), "input": values}, token=owner.token
        )
        # then the error names it
        result = data["updateTimeEntry"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
    # and nothing changed
    assert await _entry_rows() == rows
    assert await row_counts(TimeEntry) == before


async def test_only_the_author_or_a_manager_changes_an_entry(
    gql: GraphQLClient, owner: Account
) -> None:
    # given two members, the first with an entry, and an admin
    project = await make_project(owner)
    author = await create_user(owner, role=Role.MEMBER, name="Ann Author")
    other = await create_user(owner, role=Role.MEMBER, name="Otto Other")
    admin = await create_user(owner, role=Role.ADMIN, name="Ada Admin")
    entry = await make_entry(project, author, date(2026, 3, 2), 60)
    rows, before = await _entry_rows(), await row_counts(TimeEntry)
    # when the other member edits and deletes it
    edit = await gql.execute(
        UPDATE_TIME_ENTRY, {"id": str(entry.id), "input": {"hours": "8"}}, token=other.token
    )
    delete = await gql.execute(DELETE_TIME_ENTRY, {"id": str(entry.id)}, token=other.token)
    # then both are refused and nothing changed
    denied = {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "Only its author or an owner or admin may change a time entry",
    }
    assert (edit["updateTimeEntry"], delete["deleteTimeEntry"]) == (denied, denied)
    assert await _entry_rows() == rows
    assert await row_counts(TimeEntry) == before
    # when the admin edits it, then the owner deletes it
    edited = await gql.execute(
        UPDATE_TIME_ENTRY, {"id": str(entry.id), "input": {"hours": "2"}}, token=admin.token
    )
    deleted = await gql.execute(DELETE_TIME_ENTRY, {"id": str(entry.id)}, token=owner.token)
    # then both succeed: the entry is gone, and its last state is on the timeline
    assert edited["updateTimeEntry"]["minutes"] == 120
    assert deleted["deleteTimeEntry"] == {"__typename": "TimeEntry", "id": str(entry.id)}
    assert await TimeEntry.filter(id=entry.id).count() == 0
    event = await ActivityEvent.get(entity_id=entry.id, verb="deleted")
    assert (event.summary, event.actor_id) == (
        "Olive Owner deleted a time entry of 2.00 h",
        owner.user.id,
    )
    assert event.changes == {
        "billable": {"before": True, "after": None},
        "description": {"before": "", "after": None},
        "minutes": {"before": 120, "after": None},
        "work_date": {"before": "2026-03-02", "after": None},
    }


async def test_a_billed_entry_cannot_change(gql: GraphQLClient, owner: Account) -> None:
    # given an entry already on an invoice line
    project = await make_project(owner)
    entry = await make_entry(project, owner, date(2026, 3, 2), 60, invoice_line_id=uuid.uuid4())
    rows, before = await _entry_rows(), await row_counts(TimeEntry)
    # when its owner edits or deletes it
    edit = await gql.execute(
        UPDATE_TIME_ENTRY, {"id": str(entry.id), "input": {"hours": "2"}}, token=owner.token
    )
    delete = await gql.execute(DELETE_TIME_ENTRY, {"id": str(entry.id)}, token=owner.token)
    # then both are conflicts with a stable code, and nothing changed
    billed = {
        "__typename": "ConflictError",
        "code": "TIME_ENTRY_BILLED",
        "message": "This time entry has been billed and can no longer change",
    }
    assert (edit["updateTimeEntry"], delete["deleteTimeEntry"]) == (billed, billed)
    assert await _entry_rows() == rows
    assert await row_counts(TimeEntry) == before


# --- timers --------------------------------------------------------------------


async def test_timer_start_and_stop(gql: GraphQLClient, owner: Account, at: Any) -> None:
    # given a project with a task
    project = await make_project(owner)
    task = await make_task(project, "Design")
    # when a timer is started on the task at 09:00
    at(T0)
    started = await gql.execute(
        START_TIMER,
        {"projectId": str(project.id), "taskId": str(task.id), "description": "Sketching"},
        token=owner.token,
    )
    # then it runs, without minutes, dated today
    timer = started["startTimer"]
    assert timer == {
        "__typename": "TimeEntry",
        "id": timer["id"],
        "startedAt": "2026-03-02T09:00:00+00:00",
        "endedAt": None,
        "minutes": None,
        "hours": None,
        "isRunning": True,
        "workDate": "2026-03-02",
        "description": "Sketching",
    }
    running = await gql.execute(RUNNING_TIMER, token=owner.token)
    assert running["runningTimer"] == {
        "id": timer["id"],
        "isRunning": True,
        "task": {"title": "Design"},
    }
    # and a second timer is refused while it runs
    before = await row_counts(TimeEntry)
    second = await gql.execute(START_TIMER, {"projectId": str(project.id)}, token=owner.token)
    assert second["startTimer"] == {
        "__typename": "ConflictError",
        "code": "TIMER_RUNNING",
        "message": "You already have a running timer: stop it first",
    }
    assert await row_counts(TimeEntry) == before
    # when it is stopped 52 minutes later
    at(T0 + timedelta(minutes=52))
    stopped = await gql.execute(STOP_TIMER, token=owner.token)
    # then 52 minutes are recorded as 45
    assert stopped["stopTimer"] == {
        "__typename": "TimeEntry",
        "id": timer["id"],
        "startedAt": "2026-03-02T09:00:00+00:00",
        "endedAt": "2026-03-02T09:52:00+00:00",
        "minutes": 45,
        "hours": "0.75",
        "isRunning": False,
        "amount": {"amount": "75.00"},
    }
    row = await TimeEntry.get(id=timer["id"])
    assert (row.is_running, row.minutes, row.hourly_rate_minor) == (False, 45, 10_000)
    assert (await gql.execute(RUNNING_TIMER, token=owner.token))["runningTimer"] is None
    events = await ActivityEvent.filter(entity_id=row.id).order_by("created_at", "id")
    assert [(e.verb, e.summary, e.changes) for e in events] == [
        (
            "timer_started",
            "Olive Owner started a timer on Website",
            {
                "description": {"before": None, "after": "Sketching"},
                "started_at": {"before": None, "after": "2026-03-02T09:00:00+00:00"},
                "task_id": {"before": None, "after": str(task.id)},
            },
        ),
        (
            "timer_stopped",
            "Olive Owner logged 0.75 h with a timer",
            {
                "ended_at": {"before": None, "after": "2026-03-02T09:52:00+00:00"},
                "is_running": {"before": True, "after": False},
                "minutes": {"before": None, "after": 45},
            },
        ),
    ]
    # and stopping again finds nothing to stop
    again = await gql.execute(STOP_TIMER, token=owner.token)
    assert again["stopTimer"] == {
        "__typename": "ConflictError",
        "code": "NO_RUNNING_TIMER",
        "message": "You have no running timer",
    }


async def test_a_timer_too_short_to_count_keeps_running(
    gql: GraphQLClient, owner: Account, at: Any
) -> None:
    # given a timer started at 09:00 on a project that is then archived
    project = await make_project(owner)
    at(T0)
    started = await gql.execute(START_TIMER, {"projectId": str(project.id)}, token=owner.token)
    await Project.filter(id=project.id).update(archived_at=T0)
    # when it is stopped after 7m29s
    at(T0 + timedelta(minutes=7, seconds=29))
    early = await gql.execute(STOP_TIMER, token=owner.token)
    # then it is refused and keeps running
    assert early["stopTimer"] == {
        "__typename": "ValidationError",
        "code": "TOO_SHORT",
        "message": "Time is logged in quarter hours and this rounds to 0 minutes: "
        "log at least 7.5 minutes",
        "field": None,
    }
    assert (await TimeEntry.get(id=started["startTimer"]["id"])).is_running is True
    # when it is stopped at 7m30s, then it counts a quarter hour (archived or not)
    at(T0 + timedelta(minutes=7, seconds=30))
    stopped = await gql.execute(STOP_TIMER, token=owner.token)
    assert (stopped["stopTimer"]["minutes"], stopped["stopTimer"]["isRunning"]) == (15, False)
    # and no new timer starts on the archived project
    refused = await gql.execute(START_TIMER, {"projectId": str(project.id)}, token=owner.token)
    assert refused["startTimer"]["code"] == "PROJECT_ARCHIVED"


async def test_a_timer_left_over_a_day_is_not_stopped(
    gql: GraphQLClient, owner: Account, at: Any
) -> None:
    # given a timer started at 09:00
    project = await make_project(owner)
    at(T0)
    started = await gql.execute(START_TIMER, {"projectId": str(project.id)}, token=owner.token)
    # when it is stopped a day and a second later
    at(T0 + timedelta(days=1, seconds=1))
    late = await gql.execute(STOP_TIMER, token=owner.token)
    # then no entry spans more than 24 hours: it is refused and keeps running
    assert late["stopTimer"] == {
        "__typename": "ValidationError",
        "code": "OUT_OF_RANGE",
        "message": "A time entry spans at most 24 hours",
        "field": None,
    }
    row = await TimeEntry.get(id=started["startTimer"]["id"])
    assert (row.is_running, row.minutes, row.ended_at) == (True, None, None)


async def test_a_running_timers_time_cannot_be_edited(
    gql: GraphQLClient, owner: Account, at: Any
) -> None:
    # given a running timer
    project = await make_project(owner)
    at(T0)
    started = await gql.execute(START_TIMER, {"projectId": str(project.id)}, token=owner.token)
    timer_id = started["startTimer"]["id"]
    # when its hours are edited, then that is refused; its description may change
    refused = await gql.execute(
        UPDATE_TIME_ENTRY, {"id": timer_id, "input": {"hours": "1"}}, token=owner.token
    )
    assert (refused["updateTimeEntry"]["field"], refused["updateTimeEntry"]["code"]) == (
        "hours",
        "TIMER_RUNNING",
    )
    renamed = await gql.execute(
        UPDATE_TIME_ENTRY, {"id": timer_id, "input": {"description": "Calls"}}, token=owner.token
    )
    assert renamed["updateTimeEntry"]["description"] == "Calls"
    # and deleting it discards the timer, so a new one can start
    await gql.execute(DELETE_TIME_ENTRY, {"id": timer_id}, token=owner.token)
    restarted = await gql.execute(START_TIMER, {"projectId": str(project.id)}, token=owner.token)
    assert restarted["startTimer"]["isRunning"] is True


# --- lists and summaries ---------------------------------------------------------


async def test_time_entries_filtered_newest_first(gql: GraphQLClient, owner: Account) -> None:
    # given entries of two users on two projects, one billed, one not billable
    member = await create_user(owner, role=Role.MEMBER)
    web = await make_project(owner, name="Web")
    app = await make_project(owner, name="App")
    task = await make_task(web, "Design")
    await make_entry(web, owner, date(2026, 3, 1), 60, description="web-1")
    await make_entry(web, owner, date(2026, 3, 3), 60, description="web-3", task_id=task.id)
    await make_entry(web, member, date(2026, 3, 2), 60, description="web-2", billable=False)
    await make_entry(
        app, owner, date(2026, 3, 4), 60, description="app-4", invoice_line_id=uuid.uuid4()
    )

    async def listed(flt: dict[str, Any]) -> list[str]:
        data = await gql.execute(TIME_ENTRIES, {"first": 100, "filter": flt}, token=owner.token)
        return [edge["node"]["description"] for edge in data["timeEntries"]["edges"]]

    # when they are listed by each filter, then each holds its entries, newest work date first
    assert await listed({}) == ["app-4", "web-3", "web-2", "web-1"]
    assert await listed({"projectId": str(web.id)}) == ["web-3", "web-2", "web-1"]
    assert await listed({"userId": str(member.user.id)}) == ["web-2"]
    assert await listed({"taskId": str(task.id)}) == ["web-3"]
    assert await listed({"from": "2026-03-02", "to": "2026-03-03"}) == ["web-3", "web-2"]
    assert await listed({"billable": False}) == ["web-2"]
    assert await listed({"invoiced": True}) == ["app-4"]
    assert await listed({"invoiced": False, "projectId": str(app.id)}) == []
    # and pages follow each other
    page = await gql.execute(TIME_ENTRIES, {"first": 3}, token=owner.token)
    rest = await gql.execute(
        TIME_ENTRIES,
        {"first": 3, "after": page["timeEntries"]["pageInfo"]["endCursor"]},
        token=owner.token,
    )
    assert [e["node"]["description"] for e in rest["timeEntries"]["edges"]] == ["web-1"]
    assert [p["timeEntries"]["totalCount"] for p in (page, rest)] == [4, 4]
    assert [p["timeEntries"]["pageInfo"]["hasNextPage"] for p in (page, rest)] == [True, False]
    # and a reversed range is an error naming it
    body = await gql.execute(
        TIME_ENTRIES,
        {"first": 5, "filter": {"from": "2026-03-03", "to": "2026-03-02"}},
        token=owner.token,
        expect_errors=True,
    )
    assert [e["extensions"] for e in body["errors"]] == [
        {"code": "INVALID_RANGE", "field": "filter.from"}
    ]


async def test_time_summary_by_user_and_task(gql: GraphQLClient, owner: Account) -> None:
    # given a project at USD 100.00 an hour with time of two users on two tasks and none
    member = await create_user(owner, role=Role.MEMBER, name="Max Member")
    project = await make_project(owner)
    design = await make_task(project, "Design", 0)
    build = await make_task(project, "Build", 1)
    # (an entry's amount is rounded on its own: 20 minutes at 33.33 is 11.11)
    await make_entry(project, owner, date(2026, 3, 2), 90, task_id=design.id)
    await make_entry(project, owner, date(2026, 3, 3), 15, task_id=build.id, billable=False)
    await make_entry(project, member, date(2026, 3, 3), 20, hourly_rate_minor=3333)
    await make_entry(project, member, date(2026, 3, 4), 60, task_id=design.id)
    await make_entry(project, member, date(2026, 3, 9), 600)  # outside the range
    await TimeEntry.create(  # a running timer counts for nothing yet
        agency_id=owner.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        user_id=owner.user.id,
        work_date=date(2026, 3, 3),
        started_at=T0,
        is_running=True,
        currency="USD",
    )
    # when the week of 2 to 8 March is summed
    data = await gql.execute(
        TIME_SUMMARY,
        {"projectId": str(project.id), "from": "2026-03-02", "to": "2026-03-08"},
        token=owner.token,
    )
    # then the totals are exact, by user and by task, most time first
    assert data["timeSummary"] == {
        "projectId": str(project.id),
        "from": "2026-03-02",
        "to": "2026-03-08",
        "minutes": 185,
        "hours": "3.08",
        "billableMinutes": 170,
        "billableHours": "2.83",
        "billableAmount": {"amount": "261.11", "currency": "USD", "minorUnits": 26111},
        "byUser": [
            {
                "user": {"name": "Olive Owner"},
                "minutes": 105,
                "hours": "1.75",
                "billableMinutes": 90,
                "billableHours": "1.50",
                "billableAmount": {"amount": "150.00"},
            },
            {
                "user": {"name": "Max Member"},
                "minutes": 80,
                "hours": "1.33",
                "billableMinutes": 80,
                "billableHours": "1.33",
                "billableAmount": {"amount": "111.11"},
            },
        ],
        "byTask": [
            {
                "task": {"title": "Design"},
                "minutes": 150,
                "hours": "2.50",
                "billableMinutes": 150,
                "billableAmount": {"amount": "250.00"},
            },
            {
                "task": None,
                "minutes": 20,
                "hours": "0.33",
                "billableMinutes": 20,
                "billableAmount": {"amount": "11.11"},
            },
            {
                "task": {"title": "Build"},
                "minutes": 15,
                "hours": "0.25",
                "billableMinutes": 0,
                "billableAmount": {"amount": "0.00"},
            },
        ],
    }
    # and without a range every stopped entry counts
    everything = await gql.execute(TIME_SUMMARY, {"projectId": str(project.id)}, token=owner.token)
    assert (everything["timeSummary"]["minutes"], everything["timeSummary"]["from"]) == (785, None)
    # and an unknown project is null, a reversed range an error
    unknown = await gql.execute(TIME_SUMMARY, {"projectId": str(uuid.uuid4())}, token=owner.token)
    assert unknown == {"timeSummary": None}
    body = await gql.execute(
        TIME_SUMMARY,
        {"projectId": str(project.id), "from": "2026-03-09", "to": "2026-03-08"},
        token=owner.token,
        expect_errors=True,
    )
    assert [e["extensions"] for e in body["errors"]] == [{"code": "INVALID_RANGE", "field": "from"}]


async def test_client_users_read_their_clients_time_only(
    gql: GraphQLClient, owner: Account
) -> None:
    # given time on two clients' projects, and a viewer of the first client
    mine = await make_project(owner, name="Mine")
    theirs = await make_project(owner, name="Theirs")
    await make_entry(mine, owner, date(2026, 3, 2), 60, description="visible")
    hidden = await make_entry(theirs, owner, date(2026, 3, 2), 60, description="hidden")
    viewer = await create_user(
        owner, role=Role.CLIENT_VIEWER, client=await Client.get(id=mine.client_id)
    )
    before = await row_counts(TimeEntry)
    # when the viewer lists time and sums both projects
    listed = await gql.execute(TIME_ENTRIES, {"first": 100}, token=viewer.token)
    own = await gql.execute(TIME_SUMMARY, {"projectId": str(mine.id)}, token=viewer.token)
    other = await gql.execute(TIME_SUMMARY, {"projectId": str(theirs.id)}, token=viewer.token)
    # then only their client's time is there
    assert [e["node"]["description"] for e in listed["timeEntries"]["edges"]] == ["visible"]
    assert own["timeSummary"]["minutes"] == 60
    assert other == {"timeSummary": None}
    # when the viewer logs time, starts a timer, or edits the other client's entry
    attempts = [
        (
            await gql.execute(
                LOG_TIME, {"input": {"projectId": str(mine.id), "hours": "1"}}, token=viewer.token
            )
        )["logTime"],
        (await gql.execute(START_TIMER, {"projectId": str(mine.id)}, token=viewer.token))[
            "startTimer"
        ],
        (await gql.execute(DELETE_TIME_ENTRY, {"id": str(hidden.id)}, token=viewer.token))[
            "deleteTimeEntry"
        ],
    ]
    # then the first two are refused and the third is not found; nothing changed
    assert [a["code"] for a in attempts] == ["PERMISSION_DENIED", "PERMISSION_DENIED", "NOT_FOUND"]
    assert await row_counts(TimeEntry) == before


# --- project time entries, batched ------------------------------------------------


@strawberry.type
class ProbeProject:
    """A stand-in for Project.timeEntries, so the batching is proven without the project API."""

    id: strawberry.ID

    @strawberry.field
    async def time_entries(
        self, info: Info, first: int = 2, after: str | None = None
    ) -> Connection[TimeEntryType]:
        return await project_time_entries(info, uuid.UUID(str(self.id)), first=first, after=after)


@strawberry.type
class ProbeQuery:
    @strawberry.field
    def projects(self, ids: list[strawberry.ID]) -> list[ProbeProject]:
        return [ProbeProject(id=i) for i in ids]


PROBE_SCHEMA = strawberry.Schema(query=ProbeQuery)

PROJECT_TIME_ENTRIES = """
query ProjectTimeEntries($ids: [ID!]!, $after: String) {
  projects(ids: $ids) {
    id
    timeEntries(first: 2, after: $after) {
      totalCount
      edges { node { description user { name } task { title } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


async def _probe(settings: Settings, account: Account, variables: dict[str, Any]) -> Any:
    context = Context(settings=settings, request=None, actor=account.actor)
    result = await PROBE_SCHEMA.execute(
        PROJECT_TIME_ENTRIES, variable_values=variables, context_value=context
    )
    assert result.errors is None, result.errors
    return result.data


async def test_project_time_entries_take_a_fixed_number_of_queries(
    settings: Settings, owner: Account, rival: Account
) -> None:
    # given projects with three entries each on a task, and a rival's project
    async def project_with_time(name: str) -> Project:
        project = await make_project(owner, name=name)
        task = await make_task(project, f"{name} task")
        for day in (1, 2, 3):
            await make_entry(
                project, owner, date(2026, 3, day), 60, description=f"{name}-{day}", task_id=task.id
            )
        return project

    projects = [await project_with_time(name) for name in ("P1", "P2")]
    foreign = await make_project(rival)
    await make_entry(foreign, rival, date(2026, 3, 5), 60, description="rival")
    ids = [str(p.id) for p in projects] + [str(foreign.id)]
    # when they are read with their newest two entries
    with count_queries() as small:
        data = await _probe(settings, owner, {"ids": ids})
    # then each holds its own newest two, and the rival's project holds nothing
    connections = {node["id"]: node["timeEntries"] for node in data["projects"]}
    for project in projects:
        connection = connections[str(project.id)]
        assert (connection["totalCount"], connection["pageInfo"]["hasNextPage"]) == (3, True)
        assert [e["node"] for e in connection["edges"]] == [
            {
                "description": f"{project.name}-{day}",
                "user": {"name": "Olive Owner"},
                "task": {"title": f"{project.name} task"},
            }
            for day in (3, 2)
        ]
        # and the next page goes on from the cursor
        rest = await _probe(
            settings,
            owner,
            {"ids": [str(project.id)], "after": connection["pageInfo"]["endCursor"]},
        )
        assert [e["node"]["description"] for e in rest["projects"][0]["timeEntries"]["edges"]] == [
            f"{project.name}-1"
        ]
    assert connections[str(foreign.id)] == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }
    # when five times as many projects are read
    projects += [await project_with_time(f"More {i}") for i in range(8)]
    with count_queries() as large:
        data = await _probe(settings, owner, {"ids": [str(p.id) for p in projects]})
    # then the same four statements run: the window query, the entries, their users and tasks
    assert len(data["projects"]) == 10
    assert large.count == small.count == 4, large.queries
