"""The task service: orders that hold under concurrent requests, and the batched first page."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from settle.core.errors import ValidationError
from settle.core.outbox import transaction
from settle.core.pagination import Page
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.project import Project, Task
from settle.services import task as task_service
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import count_queries


async def make_project(account: Account, name: str = "Website", **values: Any) -> Project:
    client = await create_client(account, name=f"Client of {name}")
    return await Project.create(
        agency_id=account.agency_id,
        client_id=client.id,
        name=name,
        currency=client.currency,
        **values,
    )


async def _create(account: Account, project: Project, title: str) -> Task:
    async with transaction():
        return await task_service.create_task(account.actor, project.id, {"title": title})


async def _reorder(account: Account, project: Project, ids: list[uuid.UUID]) -> str:
    try:
        async with transaction():
            await task_service.reorder_tasks(account.actor, project.id, ids)
    except ValidationError as exc:
        return exc.code
    return "ok"


async def _positions(project: Project) -> list[int]:
    return list(
        await Task.filter(project_id=project.id)
        .order_by("position")
        .values_list("position", flat=True)
    )


async def test_concurrent_creates_take_distinct_positions(db: Backend, owner: Account) -> None:
    # given a project with one task
    # (on PostgreSQL the requests really run at once; the project lock serialises them)
    project = await make_project(owner)
    await _create(owner, project, "First")
    # when ten tasks are added at once, each in its own transaction
    created = await asyncio.gather(*(_create(owner, project, f"Task {i}") for i in range(10)))
    # then they took positions 1..10, one each, and the list is 0..10 without gaps
    assert sorted(task.position for task in created) == list(range(1, 11))
    assert await _positions(project) == list(range(11))


async def test_concurrent_reorders_and_creates_keep_positions_dense(
    db: Backend, owner: Account
) -> None:
    # given a project with six tasks
    project = await make_project(owner)
    tasks = [await _create(owner, project, f"Task {i}") for i in range(6)]
    ids = [task.id for task in tasks]
    rotations = [ids[i:] + ids[:i] for i in range(6)]
    # when six reorders and three creates race
    results = await asyncio.gather(
        *(_reorder(owner, project, order) for order in rotations),
        *(_create(owner, project, f"New {i}") for i in range(3)),
    )
    # then every reorder either applied or was refused for a list that had gone stale
    assert set(results[:6]) <= {"ok", "TASK_LIST_MISMATCH"}
    # and the project still holds nine tasks at positions 0..8
    assert await _positions(project) == list(range(9))


def _titles(pages: dict[uuid.UUID, Page[Task]]) -> dict[uuid.UUID, tuple[list[str], int, bool]]:
    return {
        pid: ([t.title for t in page.items], page.total_count, page.has_next_page)
        for pid, page in pages.items()
    }


async def test_tasks_of_projects_in_two_queries(db: Backend, owner: Account) -> None:
    # given two projects of different clients with three and one tasks, and an empty one
    web = await make_project(owner, name="Web")
    app = await make_project(owner, name="App")
    empty = await make_project(owner, name="Empty")
    web_tasks = [await _create(owner, web, f"W{i}") for i in range(3)]
    app_tasks = [await _create(owner, app, "A0")]
    async with transaction():
        # the order is the list's, not the creation's
        await task_service.reorder_tasks(owner.actor, web.id, [t.id for t in web_tasks[::-1]])
    unknown = uuid.uuid4()
    # when their first two tasks are loaded together
    with count_queries() as queries:
        found = await task_service.tasks_of_projects(
            owner.actor, [web.id, app.id, empty.id, unknown], first=2, after=None
        )
    # then each holds its own first two in order, with its count, in two statements
    assert _titles(found) == {
        web.id: (["W2", "W1"], 3, True),
        app.id: (["A0"], 1, False),
        empty.id: ([], 0, False),
        unknown: ([], 0, False),
    }
    assert queries.count == 2
    # and the next page of each, after the web project's cursor, takes three
    with count_queries() as queries:
        after = await task_service.tasks_of_projects(
            owner.actor, [web.id, app.id], first=2, after=found[web.id].end_cursor
        )
    assert _titles(after) == {web.id: (["W0"], 3, False), app.id: ([], 1, False)}
    assert queries.count == 3
    # and a viewer of the web client sees only the web project's tasks
    viewer = await create_user(
        owner, role=Role.CLIENT_VIEWER, client=await Client.get(id=web.client_id)
    )
    seen = await task_service.tasks_of_projects(viewer.actor, [web.id, app.id], first=5, after=None)
    assert _titles(seen) == {web.id: (["W2", "W1", "W0"], 3, False), app.id: ([], 0, False)}
    assert app_tasks[0].position == 0


async def test_tasks_of_projects_never_crosses_agencies(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given a project of the rival with a task
    project = await make_project(rival)
    await _create(rival, project, "Secret")
    # when the owner asks for its tasks
    found = await task_service.tasks_of_projects(owner.actor, [project.id], first=10, after=None)
    # then there are none
    assert _titles(found) == {project.id: ([], 0, False)}
