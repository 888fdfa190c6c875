"""Tasks through the API: create, edit, status, delete, reorder and lists, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from settle.core import clock
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.project import Project, Task, TaskPriority, TaskStatus, TimeEntry
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient, count_queries

ERROR_FIELDS = """
    ... on Error { __typename code message }
    ... on ValidationError { field }
"""

TASK_FIELDS = """
  id projectId title description status priority dueDate estimatedHours position completedAt
  assignee { name }
"""

CREATE_TASK = f"""
mutation CreateTask($input: CreateTaskInput!) {{
  createTask(input: $input) {{
    __typename
    ... on Task {{ {TASK_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

UPDATE_TASK = f"""
mutation UpdateTask($id: ID!, $input: UpdateTaskInput!) {{
  updateTask(id: $id, input: $input) {{
    __typename
    ... on Task {{ {TASK_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

SET_TASK_STATUS = f"""
mutation SetTaskStatus($id: ID!, $status: TaskStatus!) {{
  setTaskStatus(id: $id, status: $status) {{
    __typename
    ... on Task {{ id status completedAt }}
    {ERROR_FIELDS}
  }}
}}
"""

DELETE_TASK = f"""
mutation DeleteTask($id: ID!) {{
  deleteTask(id: $id) {{
    __typename
    ... on Task {{ id title }}
    {ERROR_FIELDS}
  }}
}}
"""

REORDER_TASKS = f"""
mutation ReorderTasks($projectId: ID!, $taskIds: [ID!]!) {{
  reorderTasks(projectId: $projectId, taskIds: $taskIds) {{
    __typename
    ... on ReorderedTasks {{ projectId tasks {{ id title position }} }}
    {ERROR_FIELDS}
  }}
}}
"""

TASKS = """
query Tasks($first: Int!, $after: String, $filter: TaskFilter) {
  tasks(first: $first, after: $after, filter: $filter) {
    totalCount
    edges { cursor node { title position } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

TASK = """
query Task($id: ID!) {
  task(id: $id) { id title assignee { name } }
}
"""

TIMELINE = """
query Timeline($filter: TimelineFilter) {
  timeline(first: 20, filter: $filter) {
    edges {
      node { entityType entityId verb summary actor { name } changes { field before after } }
    }
  }
}
"""

PROJECTS_WITH_TASKS = """
query ProjectsWithTasks {
  projects(first: 100) {
    edges { node { id tasks(first: 2) {
      totalCount
      edges { cursor node { id title assignee { name } } }
      pageInfo { hasNextPage endCursor }
    } } }
  }
}
"""

PROJECT_TASKS_AFTER = """
query ProjectTasks($id: ID!, $after: String) {
  project(id: $id) {
    tasks(first: 2, after: $after) {
      totalCount
      edges { node { title } }
      pageInfo { hasNextPage }
    }
  }
}
"""

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


async def make_project(
    account: Account, client: Client | None = None, name: str = "Website", **values: Any
) -> Project:
    """A project made directly (the project API is tested on its own)."""
    client = client or await create_client(account, name=f"Client of {name}")
    return await Project.create(
        agency_id=account.agency_id,
        client_id=client.id,
        name=name,
        currency=client.currency,
        hourly_rate_minor=values.pop("hourly_rate_minor", 10_000),
        **values,
    )


async def make_tasks(project: Project, *titles: str) -> list[Task]:
    """Tasks made directly, in list order."""
    return [
        await Task.create(
            agency_id=project.agency_id,
            project_id=project.id,
            client_id=project.client_id,
            title=title,
            position=position,
        )
        for position, title in enumerate(titles)
    ]


async def _positions(project: Project) -> list[tuple[str, int]]:
    rows = await Task.filter(project_id=project.id).order_by("position", "id")
    return [(row.title, row.position) for row in rows]


async def _task_rows() -> list[dict[str, Any]]:
    return await Task.all().order_by("id").values()


def _set_clock(at: datetime) -> None:
    clock.set_clock(lambda: at)


# --- create ----------------------------------------------------------------


async def test_create_task_goes_to_the_end_and_is_on_the_timeline(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a project with two tasks and a member of the agency
    project = await make_project(owner)
    await make_tasks(project, "Design", "Build")
    member = await create_user(owner, role=Role.MEMBER, name="Max Member")
    _set_clock(NOW)
    try:
        # when a completed, assigned task is created with every field
        data = await gql.execute(
            CREATE_TASK,
            {
                "input": {
                    "projectId": str(project.id),
                    "title": "  Launch ",
                    "description": "Go live",
                    "status": "COMPLETED",
                    "priority": "URGENT",
                    "assigneeId": str(member.user.id),
                    "dueDate": "2026-04-01",
                    "estimatedHours": "2.5",
                }
            },
            token=owner.token,
        )
    finally:
        clock.set_clock(None)
    # then it comes back third in the list, completed now
    created = data["createTask"]
    assert created == {
        "__typename": "Task",
        "id": created["id"],
        "projectId": str(project.id),
        "title": "Launch",
        "description": "Go live",
        "status": "COMPLETED",
        "priority": "URGENT",
        "dueDate": "2026-04-01",
        "estimatedHours": "2.50",
        "position": 2,
        "completedAt": "2026-03-02T09:30:00+00:00",
        "assignee": {"name": "Max Member"},
    }
    # and it is stored under the project's client
    row = await Task.get(id=created["id"])
    assert (row.agency_id, row.client_id, row.assignee_id, row.estimated_hours) == (
        owner.agency_id,
        project.client_id,
        member.user.id,
        Decimal("2.50"),
    )
    # and the timeline says who added it, with what
    timeline = await gql.execute(TIMELINE, {"filter": {"entityTypes": ["task"]}}, token=owner.token)
    assert [edge["node"] for edge in timeline["timeline"]["edges"]] == [
        {
            "entityType": "task",
            "entityId": created["id"],
            "verb": "created",
            "summary": "Task Launch added to Website",
            "actor": {"name": "Olive Owner"},
            "changes": [
                {"field": "assigneeId", "before": None, "after": str(member.user.id)},
                {"field": "completedAt", "before": None, "after": "2026-03-02T09:30:00+00:00"},
                {"field": "description", "before": None, "after": "Go live"},
                {"field": "dueDate", "before": None, "after": "2026-04-01"},
                {"field": "estimatedHours", "before": None, "after": "2.50"},
                {"field": "priority", "before": None, "after": "urgent"},
                {"field": "status", "before": None, "after": "completed"},
                {"field": "title", "before": None, "after": "Launch"},
            ],
        }
    ]


async def test_create_task_defaults(gql: GraphQLClient, owner: Account) -> None:
    # given a project without tasks
    project = await make_project(owner)
    # when a task is created with a title only, by a member
    member = await create_user(owner, role=Role.MEMBER)
    data = await gql.execute(
        CREATE_TASK,
        {"input": {"projectId": str(project.id), "title": "Design"}},
        token=member.token,
    )
    # then it is the first, to do, of medium priority, unassigned
    created = data["createTask"]
    assert {key: created[key] for key in ("status", "priority", "position", "assignee")} == {
        "status": "TODO",
        "priority": "MEDIUM",
        "position": 0,
        "assignee": None,
    }
    assert (created["completedAt"], created["estimatedHours"], created["dueDate"]) == (
        None,
        None,
        None,
    )


BAD_TASK_INPUT: list[tuple[dict[str, Any], str, str]] = [
    ({"title": ""}, "title", "REQUIRED"),
    ({"title": "x" * 201}, "title", "TOO_LONG"),
    ({"description": "d" * 10_001}, "description", "TOO_LONG"),
    ({"estimatedHours": "abc"}, "estimatedHours", "INVALID_DECIMAL"),
    ({"estimatedHours": "NaN"}, "estimatedHours", "INVALID_DECIMAL"),
    ({"estimatedHours": "0"}, "estimatedHours", "OUT_OF_RANGE"),
    ({"estimatedHours": "-1"}, "estimatedHours", "OUT_OF_RANGE"),
    ({"estimatedHours": "100000"}, "estimatedHours", "OUT_OF_RANGE"),
    ({"estimatedHours": "1.234"}, "estimatedHours", "TOO_PRECISE"),
    ({"assigneeId": "not-an-id"}, "assigneeId", "INVALID_ID"),
    ({"assigneeId": str(uuid.uuid4())}, "assigneeId", "NOT_FOUND"),
    ({"projectId": "nope"}, "projectId", "INVALID_ID"),
]


async def test_create_task_rejects_bad_input_and_writes_nothing(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given a project, a client user of its client, and another agency's owner
    project = await make_project(owner)
    client = await Client.get(id=project.client_id)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    cases = [
        *BAD_TASK_INPUT,
        # another agency's user is as unknown as one that does not exist
        ({"assigneeId": str(rival.user.id)}, "assigneeId", "NOT_FOUND"),
        ({"assigneeId": str(lead.user.id)}, "assigneeId", "NOT_A_MEMBER"),
    ]
    before = await row_counts(Task)
    for values, field, code in cases:
        # when a task is created with one bad field
        data = await gql.execute(
            CREATE_TASK,
            {"input": {"projectId": str(project.id), "title": "Design", **values}},
            token=owner.token,
        )
        # then the error names it
        result = data["createTask"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
    # and the foreign user's message is the unknown one's
    foreign = await gql.execute(
        CREATE_TASK,
        {"input": {"projectId": str(project.id), "title": "x", "assigneeId": str(rival.user.id)}},
        token=owner.token,
    )
    assert foreign["createTask"]["message"] == "Assignee not found"
    # and nothing was written
    assert await row_counts(Task) == before


async def test_create_task_on_unknown_or_archived_project(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given an archived project of the owner and a live project of a rival agency
    archived = await make_project(owner, archived_at=NOW)
    foreign = await make_project(rival)
    before = await row_counts(Task)
    # when tasks are created on them
    results = [
        (
            await gql.execute(
                CREATE_TASK,
                {"input": {"projectId": str(project.id), "title": "Sneak"}},
                token=owner.token,
            )
        )["createTask"]
        for project in (archived, foreign)
    ]
    # then the archived one says so and the foreign one does not exist
    assert [(r["__typename"], r["code"]) for r in results] == [
        ("ConflictError", "PROJECT_ARCHIVED"),
        ("NotFoundError", "NOT_FOUND"),
    ]
    assert results[1]["message"] == "Project not found"
    assert await row_counts(Task) == before


# --- update and status -----------------------------------------------------


async def test_update_task_records_exactly_what_changed(gql: GraphQLClient, owner: Account) -> None:
    # given a task with an estimate
    project = await make_project(owner)
    [task] = await make_tasks(project, "Design")
    await Task.filter(id=task.id).update(estimated_hours=Decimal("3.00"), description="Old")
    # when its title, estimate and due date change (the description is sent unchanged)
    data = await gql.execute(
        UPDATE_TASK,
        {
            "id": str(task.id),
            "input": {
                "title": "Design v2",
                "description": "Old",
                "estimatedHours": "4.25",
                "dueDate": "2026-05-01",
                "priority": "HIGH",
            },
        },
        token=owner.token,
    )
    # then the task has the new values
    assert data["updateTask"] == {
        "__typename": "Task",
        "id": str(task.id),
        "projectId": str(project.id),
        "title": "Design v2",
        "description": "Old",
        "status": "TODO",
        "priority": "HIGH",
        "dueDate": "2026-05-01",
        "estimatedHours": "4.25",
        "position": 0,
        "completedAt": None,
        "assignee": None,
    }
    row = await Task.get(id=task.id)
    assert (row.title, row.estimated_hours, row.due_date, row.priority) == (
        "Design v2",
        Decimal("4.25"),
        date(2026, 5, 1),
        TaskPriority.HIGH,
    )
    # and the event holds only what changed
    event = await ActivityEvent.get(entity_id=task.id, verb="updated")
    assert (event.summary, event.client_id, event.actor_id) == (
        "Task Design v2 updated",
        project.client_id,
        owner.user.id,
    )
    assert event.changes == {
        "due_date": {"before": None, "after": "2026-05-01"},
        "estimated_hours": {"before": "3.00", "after": "4.25"},
        "priority": {"before": "medium", "after": "high"},
        "title": {"before": "Design", "after": "Design v2"},
    }


async def test_assigning_and_unassigning(gql: GraphQLClient, owner: Account) -> None:
    # given a task and a member
    project = await make_project(owner)
    [task] = await make_tasks(project, "Design")
    member = await create_user(owner, role=Role.MEMBER, name="Max Member")
    # when it is assigned, assigned again to the same member, and unassigned
    assigned = await gql.execute(
        UPDATE_TASK,
        {"id": str(task.id), "input": {"assigneeId": str(member.user.id)}},
        token=owner.token,
    )
    again = await gql.execute(
        UPDATE_TASK,
        {"id": str(task.id), "input": {"assigneeId": str(member.user.id)}},
        token=owner.token,
    )
    cleared = await gql.execute(
        UPDATE_TASK, {"id": str(task.id), "input": {"assigneeId": None}}, token=owner.token
    )
    # then the task follows, and two events say so (the repeat changed nothing)
    assert [r["updateTask"]["assignee"] for r in (assigned, again, cleared)] == [
        {"name": "Max Member"},
        {"name": "Max Member"},
        None,
    ]
    events = await ActivityEvent.filter(entity_id=task.id).order_by("created_at", "id")
    assert [(e.verb, e.changes) for e in events] == [
        ("assigned", {"assignee_id": {"before": None, "after": str(member.user.id)}}),
        ("unassigned", {"assignee_id": {"before": str(member.user.id), "after": None}}),
    ]
    assert (await Task.get(id=task.id)).assignee_id is None


BAD_TASK_UPDATES: list[tuple[dict[str, Any], str, str]] = [
    ({"title": ""}, "title", "REQUIRED"),
    ({"title": None}, "title", "REQUIRED"),
    ({"priority": None}, "priority", "REQUIRED"),
    ({"estimatedHours": "1.001"}, "estimatedHours", "TOO_PRECISE"),
    # a valid change beside a bad one is not half-applied
    ({"title": "Renamed", "assigneeId": str(uuid.uuid4())}, "assigneeId", "NOT_FOUND"),
]


async def test_update_task_rejects_bad_input_and_changes_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a task
    project = await make_project(owner)
    [task] = await make_tasks(project, "Design")
    rows, before = await _task_rows(), await row_counts(Task)
    for values, field, code in BAD_TASK_UPDATES:
        # when it is updated with a bad field
        data = await gql.execute(
            UPDATE_TASK, {"id": str(task.id), "input": values}, token=owner.token
        )
        # then the error names it
        result = data["updateTask"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
    # and nothing changed
    assert await _task_rows() == rows
    assert await row_counts(Task) == before


async def test_set_task_status_stamps_and_clears_completed_at(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a task to do
    project = await make_project(owner)
    [task] = await make_tasks(project, "Design")
    done_at = datetime(2026, 3, 3, 17, 0, tzinfo=UTC)
    results = []
    try:
        # when it is started, completed (twice) and reopened
        for status, at in (
            ("IN_PROGRESS", NOW),
            ("COMPLETED", done_at),
            ("COMPLETED", done_at + timedelta(hours=1)),
            ("BLOCKED", done_at + timedelta(hours=2)),
        ):
            _set_clock(at)
            data = await gql.execute(
                SET_TASK_STATUS, {"id": str(task.id), "status": status}, token=owner.token
            )
            results.append(data["setTaskStatus"])
    finally:
        clock.set_clock(None)
    # then completedAt is set on completion, kept by the repeat, cleared on reopening
    assert [(r["status"], r["completedAt"]) for r in results] == [
        ("IN_PROGRESS", None),
        ("COMPLETED", "2026-03-03T17:00:00+00:00"),
        ("COMPLETED", "2026-03-03T17:00:00+00:00"),
        ("BLOCKED", None),
    ]
    row = await Task.get(id=task.id)
    assert (row.status, row.completed_at) == (TaskStatus.BLOCKED, None)
    # and each real move is a status_changed event with before and after
    events = await ActivityEvent.filter(entity_id=task.id).order_by("created_at", "id")
    assert [(e.verb, e.summary, e.changes) for e in events] == [
        (
            "status_changed",
            "Task Design moved from todo to in progress",
            {"status": {"before": "todo", "after": "in_progress"}},
        ),
        (
            "status_changed",
            "Task Design moved from in progress to completed",
            {
                "completed_at": {"before": None, "after": "2026-03-03T17:00:00+00:00"},
                "status": {"before": "in_progress", "after": "completed"},
            },
        ),
        (
            "status_changed",
            "Task Design moved from completed to blocked",
            {
                "completed_at": {"before": "2026-03-03T17:00:00+00:00", "after": None},
                "status": {"before": "completed", "after": "blocked"},
            },
        ),
    ]


# --- delete ----------------------------------------------------------------


async def test_delete_task_closes_the_gap_and_keeps_its_time(
    gql: GraphQLClient, owner: Account
) -> None:
    # given four tasks, the second with time logged against it
    project = await make_project(owner)
    tasks = await make_tasks(project, "A", "B", "C", "D")
    entry = await TimeEntry.create(
        agency_id=owner.agency_id,
        user_id=owner.user.id,
        project_id=project.id,
        client_id=project.client_id,
        task_id=tasks[1].id,
        work_date=date(2026, 3, 2),
        minutes=60,
        currency="USD",
    )
    # when the second task is deleted
    data = await gql.execute(DELETE_TASK, {"id": str(tasks[1].id)}, token=owner.token)
    # then it is gone, the others moved up, and the time is kept without a task
    assert data["deleteTask"] == {"__typename": "Task", "id": str(tasks[1].id), "title": "B"}
    assert await _positions(project) == [("A", 0), ("C", 1), ("D", 2)]
    assert (await TimeEntry.get(id=entry.id)).task_id is None
    # and the event keeps what the task was
    event = await ActivityEvent.get(entity_id=tasks[1].id)
    assert (event.verb, event.summary, event.changes) == (
        "deleted",
        "Task B deleted",
        {
            "priority": {"before": "medium", "after": None},
            "status": {"before": "todo", "after": None},
            "title": {"before": "B", "after": None},
        },
    )
    # and a task added now goes to the end, after D
    created = await gql.execute(
        CREATE_TASK, {"input": {"projectId": str(project.id), "title": "E"}}, token=owner.token
    )
    assert created["createTask"]["position"] == 3


async def test_task_with_billed_time_cannot_be_deleted(gql: GraphQLClient, owner: Account) -> None:
    # given a task whose time has been billed
    project = await make_project(owner)
    [task] = await make_tasks(project, "Design")
    await TimeEntry.create(
        agency_id=owner.agency_id,
        user_id=owner.user.id,
        project_id=project.id,
        client_id=project.client_id,
        task_id=task.id,
        work_date=date(2026, 3, 2),
        minutes=60,
        currency="USD",
        invoice_line_id=uuid.uuid4(),
    )
    rows, before = await _task_rows(), await row_counts(Task)
    # when it is deleted
    data = await gql.execute(DELETE_TASK, {"id": str(task.id)}, token=owner.token)
    # then that is a conflict and nothing changed
    assert data["deleteTask"] == {
        "__typename": "ConflictError",
        "code": "TASK_HAS_BILLED_TIME",
        "message": "A task with billed time cannot be deleted",
    }
    assert await _task_rows() == rows
    assert await row_counts(Task) == before


# --- reorder ---------------------------------------------------------------


async def test_reorder_tasks_rewrites_positions_at_once(gql: GraphQLClient, owner: Account) -> None:
    # given four tasks A B C D
    project = await make_project(owner)
    a, b, c, d = await make_tasks(project, "A", "B", "C", "D")
    # when they are put in the order D A C B
    order = [d, a, c, b]
    data = await gql.execute(
        REORDER_TASKS,
        {"projectId": str(project.id), "taskIds": [str(t.id) for t in order]},
        token=owner.token,
    )
    # then the answer and the database hold that order, positions 0..3
    assert data["reorderTasks"] == {
        "__typename": "ReorderedTasks",
        "projectId": str(project.id),
        "tasks": [{"id": str(t.id), "title": t.title, "position": i} for i, t in enumerate(order)],
    }
    assert await _positions(project) == [("D", 0), ("A", 1), ("C", 2), ("B", 3)]
    # and the project's timeline records the order before and after
    event = await ActivityEvent.get(entity_id=project.id, verb="tasks_reordered")
    assert (event.entity_type, event.summary, event.changes) == (
        "project",
        "Tasks of Website reordered",
        {
            "task_ids": {
                "before": [str(t.id) for t in (a, b, c, d)],
                "after": [str(t.id) for t in order],
            }
        },
    )
    # and sending the same order again changes and records nothing
    before = await row_counts(Task)
    again = await gql.execute(
        REORDER_TASKS,
        {"projectId": str(project.id), "taskIds": [str(t.id) for t in order]},
        token=owner.token,
    )
    assert again == data
    assert await row_counts(Task) == before


async def test_reorder_rejects_a_list_that_is_not_exactly_the_projects_tasks(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a project with three tasks, and a task of another project
    project = await make_project(owner)
    a, b, c = await make_tasks(project, "A", "B", "C")
    [other] = await make_tasks(await make_project(owner, name="Other"), "X")
    rows, before = await _task_rows(), await row_counts(Task)
    lists = {
        "missing": [c, a],
        "extra": [c, a, b, other],
        "duplicate": [c, a, b, b],
        "duplicate instead of one": [c, a, a],
        "foreign instead of one": [c, a, other],
        "empty": [],
    }
    for name, tasks in lists.items():
        # when the project is reordered with such a list
        data = await gql.execute(
            REORDER_TASKS,
            {"projectId": str(project.id), "taskIds": [str(t.id) for t in tasks]},
            token=owner.token,
        )
        # then it is a validation error on taskIds
        assert data["reorderTasks"] == {
            "__typename": "ValidationError",
            "code": "TASK_LIST_MISMATCH",
            "message": "taskIds must list every task of the project exactly once",
            "field": "taskIds",
        }, name
    # and a malformed id is one too
    malformed = await gql.execute(
        REORDER_TASKS, {"projectId": str(project.id), "taskIds": ["nope"]}, token=owner.token
    )
    assert (malformed["reorderTasks"]["field"], malformed["reorderTasks"]["code"]) == (
        "taskIds",
        "INVALID_ID",
    )
    # and nothing changed anywhere
    assert await _task_rows() == rows
    assert await row_counts(Task) == before


# --- lists -----------------------------------------------------------------


async def test_tasks_filtered_in_order_and_paginated(gql: GraphQLClient, owner: Account) -> None:
    # given two projects' tasks with statuses, priorities and an assignee
    member = await create_user(owner, role=Role.MEMBER)
    web = await make_project(owner, name="Web")
    app = await make_project(owner, name="App")
    w0, w1, w2, w3 = await make_tasks(web, "W0", "W1", "W2", "W3")
    await make_tasks(app, "A0")
    await Task.filter(id__in=[w1.id, w3.id]).update(status=TaskStatus.BLOCKED)
    await Task.filter(id=w2.id).update(priority=TaskPriority.URGENT, assignee_id=member.user.id)

    async def titles(flt: dict[str, Any]) -> list[str]:
        data = await gql.execute(TASKS, {"first": 100, "filter": flt}, token=owner.token)
        return [edge["node"]["title"] for edge in data["tasks"]["edges"]]

    # when the tasks are listed by each filter, then each holds the matching tasks in order
    assert await titles({"projectId": str(web.id)}) == ["W0", "W1", "W2", "W3"]
    assert await titles({"projectId": str(web.id), "status": "BLOCKED"}) == ["W1", "W3"]
    assert await titles({"priority": "URGENT"}) == ["W2"]
    assert await titles({"assigneeId": str(member.user.id)}) == ["W2"]
    assert await titles({"projectId": str(app.id), "status": "BLOCKED"}) == []
    # and pages of two follow each other without gaps
    first = await gql.execute(
        TASKS, {"first": 2, "filter": {"projectId": str(web.id)}}, token=owner.token
    )
    second = await gql.execute(
        TASKS,
        {
            "first": 2,
            "after": first["tasks"]["pageInfo"]["endCursor"],
            "filter": {"projectId": str(web.id)},
        },
        token=owner.token,
    )
    assert [
        [(e["node"]["title"], e["node"]["position"]) for e in page["tasks"]["edges"]]
        for page in (first, second)
    ] == [[("W0", 0), ("W1", 1)], [("W2", 2), ("W3", 3)]]
    assert [page["tasks"]["totalCount"] for page in (first, second)] == [4, 4]
    assert [page["tasks"]["pageInfo"]["hasNextPage"] for page in (first, second)] == [True, False]
    # and a malformed filter id is an error naming it
    body = await gql.execute(
        TASKS, {"first": 5, "filter": {"projectId": "x"}}, token=owner.token, expect_errors=True
    )
    assert [e["extensions"] for e in body["errors"]] == [
        {"code": "INVALID_ID", "field": "filter.projectId"}
    ]
    assert w0.position == 0


async def test_client_users_read_their_clients_tasks_and_change_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given two clients' projects with tasks, and a lead of the first client
    mine = await make_project(owner, name="Mine")
    theirs = await make_project(owner, name="Theirs")
    [task] = await make_tasks(mine, "Visible")
    [hidden] = await make_tasks(theirs, "Hidden")
    client = await Client.get(id=mine.client_id)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    rows, before = await _task_rows(), await row_counts(Task)
    # when the lead lists and looks up tasks
    listed = await gql.execute(TASKS, {"first": 100}, token=lead.token)
    seen = await gql.execute(TASK, {"id": str(task.id)}, token=lead.token)
    unseen = await gql.execute(TASK, {"id": str(hidden.id)}, token=lead.token)
    # then only their client's task is there
    assert [e["node"]["title"] for e in listed["tasks"]["edges"]] == ["Visible"]
    assert seen["task"] == {"id": str(task.id), "title": "Visible", "assignee": None}
    assert unseen["task"] is None
    # when the lead tries to change their own client's tasks
    attempts = [
        await gql.execute(
            CREATE_TASK, {"input": {"projectId": str(mine.id), "title": "Mine"}}, token=lead.token
        ),
        await gql.execute(
            UPDATE_TASK, {"id": str(task.id), "input": {"title": "Edited"}}, token=lead.token
        ),
        await gql.execute(
            SET_TASK_STATUS, {"id": str(task.id), "status": "COMPLETED"}, token=lead.token
        ),
        await gql.execute(DELETE_TASK, {"id": str(task.id)}, token=lead.token),
        await gql.execute(
            REORDER_TASKS, {"projectId": str(mine.id), "taskIds": [str(task.id)]}, token=lead.token
        ),
    ]
    # then each is refused and nothing changed
    assert [next(iter(a.values()))["code"] for a in attempts] == ["PERMISSION_DENIED"] * 5
    assert await _task_rows() == rows
    assert await row_counts(Task) == before


async def test_archived_project_tasks_are_read_only(gql: GraphQLClient, owner: Account) -> None:
    # given a task of a project that was then archived
    project = await make_project(owner)
    [task] = await make_tasks(project, "Design")
    await Project.filter(id=project.id).update(archived_at=NOW)
    rows = await _task_rows()
    # when it is edited, moved, reordered or deleted
    attempts = [
        await gql.execute(
            UPDATE_TASK, {"id": str(task.id), "input": {"title": "x"}}, token=owner.token
        ),
        await gql.execute(
            SET_TASK_STATUS, {"id": str(task.id), "status": "COMPLETED"}, token=owner.token
        ),
        await gql.execute(
            REORDER_TASKS,
            {"projectId": str(project.id), "taskIds": [str(task.id)]},
            token=owner.token,
        ),
        await gql.execute(DELETE_TASK, {"id": str(task.id)}, token=owner.token),
    ]
    # then each says the project is archived, and the task is still readable and unchanged
    assert [next(iter(a.values()))["code"] for a in attempts] == ["PROJECT_ARCHIVED"] * 4
    assert await _task_rows() == rows
    listed = await gql.execute(
        TASKS, {"first": 5, "filter": {"projectId": str(project.id)}}, token=owner.token
    )
    assert listed["tasks"]["totalCount"] == 1


async def test_project_tasks_take_a_fixed_number_of_queries(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given two projects with three assigned tasks each (and a rival's project)
    member = await create_user(owner, role=Role.MEMBER, name="Max Member")

    async def project_with_tasks(name: str) -> list[Task]:
        tasks = await make_tasks(await make_project(owner, name=name), "T1", "T2", "T3")
        await Task.filter(id__in=[t.id for t in tasks]).update(assignee_id=member.user.id)
        return tasks

    first_tasks = [await project_with_tasks(name) for name in ("P1", "P2")]
    await make_tasks(await make_project(rival), "Rival")
    # when the projects are listed with their first two tasks
    with count_queries() as small:
        data = await gql.execute(PROJECTS_WITH_TASKS, token=owner.token)
    # then each project has exactly its own first two tasks, and a cursor to go on
    by_project = {e["node"]["id"]: e["node"]["tasks"] for e in data["projects"]["edges"]}
    for tasks in first_tasks:
        connection = by_project[str(tasks[0].project_id)]
        assert connection["totalCount"] == 3
        assert [e["node"] for e in connection["edges"]] == [
            {"id": str(t.id), "title": t.title, "assignee": {"name": "Max Member"}}
            for t in tasks[:2]
        ]
        assert connection["pageInfo"]["hasNextPage"] is True
        # and the next page, by cursor, holds the third
        after = connection["pageInfo"]["endCursor"]
        rest = await gql.execute(
            PROJECT_TASKS_AFTER,
            {"id": str(tasks[0].project_id), "after": after},
            token=owner.token,
        )
        assert rest["project"]["tasks"] == {
            "totalCount": 3,
            "edges": [{"node": {"title": "T3"}}],
            "pageInfo": {"hasNextPage": False},
        }
    # when there are five times as many projects
    for i in range(8):
        await project_with_tasks(f"More {i}")
    with count_queries() as large:
        data = await gql.execute(PROJECTS_WITH_TASKS, token=owner.token)
    # then the request runs as many SQL statements
    assert len(data["projects"]["edges"]) == 10
    assert large.count == small.count
