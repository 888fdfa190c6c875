"""A project with everything below it loads in a fixed number of SQL statements."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from settle.models.deliverable import Deliverable, DeliverableKind, DeliverableStatus
from settle.models.milestone import Milestone, MilestoneKind
from settle.models.project import Project, Task, TimeEntry
from tests.fixtures.factories import Account, create_client
from tests.fixtures.graphql import GraphQLClient, count_queries

PROJECT_TREE = """
query ($id: ID!) {
  project(id: $id) {
    name
    tasks(first: 100) {
      totalCount
      edges { node { id title status assignee { name } } }
    }
    milestones { id title amount { amount currency } isOverdue }
    timeEntries(first: 100) {
      totalCount
      edges { node { id hours amount { amount } user { name } task { title } } }
    }
    deliverables { id title kind downloadCount accessExpiresAt }
    statistics {
      hoursLogged { billable nonBillable total }
      billableAmount { amount currency }
      taskCompletionPercent
      milestoneTotals { paid { amount } approvedUnpaid { amount } pending { amount } }
    }
  }
}
"""


async def _project_with(owner: Account, *, tasks: int, entries: int) -> Project:
    """A project with ``tasks`` tasks, ``entries`` time entries, two milestones and two files."""
    client = await create_client(owner, currency="USD")
    project = await Project.create(
        agency_id=owner.agency_id,
        client_id=client.id,
        name=f"Project with {tasks} tasks",
        currency="USD",
        hourly_rate_minor=10_000,
        budget_minor=100_000_000,
    )
    task_rows = [
        Task(
            agency_id=owner.agency_id,
            project_id=project.id,
            client_id=client.id,
            title=f"Task {n}",
            position=n,
            assignee_id=owner.user.id,
        )
        for n in range(tasks)
    ]
    await Task.bulk_create(task_rows, batch_size=500)
    start = date(2026, 1, 1)
    await TimeEntry.bulk_create(
        [
            TimeEntry(
                agency_id=owner.agency_id,
                user_id=owner.user.id,
                project_id=project.id,
                client_id=client.id,
                task_id=task_rows[n % tasks].id,
                work_date=start + timedelta(days=n % 300),
                minutes=15 * (1 + n % 8),
                billable=n % 5 != 0,
                hourly_rate_minor=10_000,
                currency="USD",
            )
            for n in range(entries)
        ],
        batch_size=500,
    )
    for position, kind in enumerate((MilestoneKind.ADVANCE, MilestoneKind.BALANCE)):
        await Milestone.create(
            agency_id=owner.agency_id,
            project_id=project.id,
            client_id=client.id,
            title=kind.value.title(),
            kind=kind,
            amount_minor=500_000,
            currency="USD",
            position=position,
        )
    for kind in (DeliverableKind.BETA, DeliverableKind.FINAL):
        deliverable_id = uuid.uuid4()
        await Deliverable.create(
            id=deliverable_id,
            agency_id=owner.agency_id,
            project_id=project.id,
            client_id=client.id,
            title=f"{kind.value} build",
            kind=kind,
            status=DeliverableStatus.READY,
            filename=f"{kind.value}.zip",
            content_type="application/zip",
            size_bytes=1024,
            storage_key=f"deliverables/{owner.agency_id}/{project.id}/{deliverable_id}",
        )
    return project


async def test_project_tree_costs_the_same_queries_whatever_its_size(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a small project and one with 500 tasks and 2,000 time entries
    small = await _project_with(owner, tasks=5, entries=20)
    large = await _project_with(owner, tasks=500, entries=2000)

    # when each is loaded with its tasks, milestones, time, files and statistics
    with count_queries() as small_count:
        small_data = await gql.execute(PROJECT_TREE, {"id": str(small.id)}, token=owner.token)
    with count_queries() as large_count:
        large_data = await gql.execute(PROJECT_TREE, {"id": str(large.id)}, token=owner.token)

    # then both pages are full and the number of SQL statements is the same
    tree = large_data["project"]
    assert tree["tasks"]["totalCount"] == 500
    assert len(tree["tasks"]["edges"]) == 100
    assert tree["timeEntries"]["totalCount"] == 2000
    assert len(tree["timeEntries"]["edges"]) == 100
    assert len(tree["milestones"]) == 2
    assert len(tree["deliverables"]) == 2
    assert small_data["project"]["tasks"]["totalCount"] == 5
    assert large_count.count == small_count.count, (small_count.queries, large_count.queries)
    assert large_count.count <= 16, large_count.queries
