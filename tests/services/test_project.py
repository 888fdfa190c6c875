"""The project service: budget alerts (raced for real), statistics in a fixed number of queries."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import pytest

from settle.core.outbox import transaction
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.models.project import Project, Task, TaskStatus, TimeEntry
from settle.services import project as project_service
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import count_queries


async def _project(account: Account, **values: Any) -> Project:
    client = await create_client(account, name="Acme", currency="USD")
    async with transaction():
        return await project_service.create_project(
            account.actor, client.id, {"name": "Website", **values}
        )


async def _entry(
    project: Project,
    account: Account,
    minutes: int,
    *,
    rate_minor: int | None = 10_000,
    billable: bool = True,
    running: bool = False,
) -> TimeEntry:
    """A time entry written straight to the table, as the time service would store it."""
    return await TimeEntry.create(
        agency_id=project.agency_id,
        user_id=account.user.id,
        project_id=project.id,
        client_id=project.client_id,
        work_date=date(2026, 3, 2),
        minutes=None if running else minutes,
        is_running=running,
        billable=billable,
        hourly_rate_minor=rate_minor,
        currency=project.currency,
    )


async def _log(project: Project, account: Account, minutes: int, **kw: Any) -> None:
    """Log time and check the budget, in one transaction, as logTime does."""
    async with transaction():
        await _entry(project, account, minutes, **kw)
        await project_service.record_budget_alerts(account.actor, project.id)


async def _alerts(project: Project) -> list[tuple[str, str, dict[str, Any]]]:
    events = await ActivityEvent.filter(entity_id=project.id, verb__startswith="budget_").order_by(
        "created_at", "id"
    )
    return [(e.verb, e.summary, e.changes) for e in events]


# --- budget alerts ----------------------------------------------------------


def test_entry_amount_rounds_each_entry_half_up() -> None:
    # 15 minutes at 0.01/h is 0.0025: nothing; 30 minutes at 0.01/h is half a cent: one cent
    assert project_service.entry_amount_minor(15, 1) == 0
    assert project_service.entry_amount_minor(30, 1) == 1
    assert project_service.entry_amount_minor(45, 1) == 1
    # 1 h 40 min at 123.45/h is 205.75
    assert project_service.entry_amount_minor(100, 12_345) == 20_575


async def test_budget_alerts_record_80_then_100_exactly_once_each(
    db: Backend, owner: Account
) -> None:
    # given a project with a 1,000.00 budget, time billed at 100.00/h
    project = await _project(owner, budget="1000.00", hourly_rate="100.00")
    # when time is logged up to 79.9% of the budget (and non-billable time on top)
    await _log(project, owner, 420)  # 700.00
    await _log(project, owner, 59)  # 98.33 -> 798.33
    await _log(project, owner, 600, billable=False)
    await _log(project, owner, 15, running=True)
    # then nothing is announced
    assert await _alerts(project) == []
    # when an entry takes it to 80%
    await _log(project, owner, 1)  # 1.67 -> 800.00
    # and more time stays under 100%
    await _log(project, owner, 60)  # 900.00
    # then 80% is announced once
    assert await _alerts(project) == [
        (
            "budget_80",
            "Website has used 80% of its budget (800.00 of 1000.00 USD)",
            {"budgetUsedPercent": {"before": None, "after": 80}},
        )
    ]
    # when the budget is exceeded, and then exceeded further
    await _log(project, owner, 75)  # 1025.00
    await _log(project, owner, 120)
    # then 100% is announced once, after 80%
    assert [verb for verb, _, _ in await _alerts(project)] == ["budget_80", "budget_100"]
    assert (await _alerts(project))[1][1] == (
        "Website has used 100% of its budget (1025.00 of 1000.00 USD)"
    )
    assert (await Project.get(id=project.id)).budget_alert_level == 100


async def test_one_entry_past_both_thresholds_announces_100_only(
    db: Backend, owner: Account
) -> None:
    # given a project with a 100.00 budget
    project = await _project(owner, budget="100.00", hourly_rate="100.00")
    # when a single entry uses 150% of it
    await _log(project, owner, 90)
    await _log(project, owner, 15)
    # then one event says 100%
    assert [verb for verb, _, _ in await _alerts(project)] == ["budget_100"]


async def test_no_alerts_without_a_budget_or_for_a_non_billable_project(
    db: Backend, owner: Account
) -> None:
    # given a project without a budget and a non-billable one with a budget
    open_ended = await _project(owner, hourly_rate="100.00")
    internal = await _project(owner, budget="10.00", hourly_rate="100.00", billable=False)
    # when far more than any budget is logged on each
    await _log(open_ended, owner, 600)
    await _log(internal, owner, 600)
    # then neither announces anything
    assert await _alerts(open_ended) == []
    assert await _alerts(internal) == []


async def test_budget_changes_rearm_and_fire_alerts(db: Backend, owner: Account) -> None:
    # given a project at 90% of its 1,000.00 budget, 80% announced
    project = await _project(owner, budget="1000.00", hourly_rate="100.00")
    await _log(project, owner, 540)
    assert [verb for verb, _, _ in await _alerts(project)] == ["budget_80"]
    # when the budget is doubled (now 45% used)
    async with transaction():
        await project_service.update_project(owner.actor, project.id, {"budget": "2000.00"})
    # then nothing is announced, and crossing 80% of the new budget is announced again
    assert (await Project.get(id=project.id)).budget_alert_level == 0
    await _log(project, owner, 420)  # 1600.00 of 2000.00
    assert [verb for verb, _, _ in await _alerts(project)] == ["budget_80", "budget_80"]
    # when the budget is cut below what has been spent
    async with transaction():
        await project_service.update_project(owner.actor, project.id, {"budget": "1500.00"})
    # then 100% is announced at once, naming the new budget
    alerts = await _alerts(project)
    assert [verb for verb, _, _ in alerts] == ["budget_80", "budget_80", "budget_100"]
    assert alerts[-1][1] == "Website has used 100% of its budget (1600.00 of 1500.00 USD)"


async def test_concurrent_entries_crossing_a_threshold_announce_it_once(
    db: Backend, owner: Account
) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite runs one transaction at a time; the race needs PostgreSQL")
    # given a project at 75% of its 1,000.00 budget
    project = await _project(owner, budget="1000.00", hourly_rate="100.00")
    await _log(project, owner, 450)
    member = await create_user(owner, role=Role.MEMBER)
    both_logged = asyncio.Barrier(2)

    async def log(account: Account) -> None:
        async with transaction():
            # each entry alone takes the project to 80%
            await _entry(project, account, 30)
            # both entries exist (uncommitted) before either checks the budget
            await both_logged.wait()
            await project_service.record_budget_alerts(account.actor, project.id)

    # when two users log time at once, each transaction checking the budget
    await asyncio.wait_for(asyncio.gather(log(owner), log(member)), timeout=20)
    # then both entries are stored, and 80% is announced exactly once
    assert await TimeEntry.filter(project_id=project.id).count() == 3
    assert [verb for verb, _, _ in await _alerts(project)] == ["budget_80"]
    assert (await Project.get(id=project.id)).budget_alert_level == 80


# --- statistics ---------------------------------------------------------------


def test_hours_and_percent_round_half_up() -> None:
    assert project_service.hours(0) == "0.00"
    assert project_service.hours(100) == "1.67"
    assert project_service.hours(3) == "0.05"
    assert project_service.hours(1_500) == "25.00"
    assert project_service.percent(1, 3) == "33.3"
    assert project_service.percent(2, 3) == "66.7"
    assert project_service.percent(1, 8) == "12.5"
    assert project_service.percent(1, 16) == "6.3"
    assert project_service.percent(5, 4) == "125.0"
    assert project_service.percent(0, 7) == "0.0"


async def _milestone(
    project: Project,
    amount_minor: int,
    status: MilestoneStatus,
    *,
    paid_minor: int = 0,
) -> Milestone:
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title=f"{status.value} {amount_minor}",
        amount_minor=amount_minor,
        currency=project.currency,
        status=status,
        amount_paid_minor=paid_minor,
        payment_status=(
            MilestonePaymentStatus.PAID
            if paid_minor and paid_minor == amount_minor
            else MilestonePaymentStatus.UNPAID
        ),
    )


async def _task(project: Project, status: TaskStatus) -> Task:
    return await Task.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title=f"Task {uuid.uuid4().hex[:6]}",
        status=status,
    )


async def test_statistics_sum_time_tasks_and_milestones(db: Backend, owner: Account) -> None:
    # given a project with time at two rates, tasks and milestones in every state
    project = await _project(owner, budget="1000.00", hourly_rate="100.00")
    for minutes in (60, 60, 45):
        await _entry(project, owner, minutes)  # 100.00 + 100.00 + 75.00
    await _entry(project, owner, 20, rate_minor=12_345)  # 41.15
    await _entry(project, owner, 30, billable=False)
    await _entry(project, owner, 15, rate_minor=None)  # billable time without a rate: no money
    await _entry(project, owner, 0, running=True)
    for status in (TaskStatus.COMPLETED, TaskStatus.COMPLETED, TaskStatus.TODO):
        await _task(project, status)
    await _milestone(project, 40_000, MilestoneStatus.PAID, paid_minor=40_000)
    await _milestone(project, 25_000, MilestoneStatus.APPROVED, paid_minor=5_000)
    await _milestone(project, 10_000, MilestoneStatus.APPROVED)
    await _milestone(project, 1_000, MilestoneStatus.PENDING)
    await _milestone(project, 2_000, MilestoneStatus.IN_PROGRESS)
    await _milestone(project, 4_000, MilestoneStatus.SUBMITTED)
    await _milestone(project, 8_000, MilestoneStatus.CANCELLED)
    await _milestone(project, 16_000, MilestoneStatus.REJECTED)
    # when its statistics are computed
    stats = (await project_service.project_statistics(owner.actor, [project.id]))[project.id]
    # then every figure is exact
    assert stats == project_service.ProjectStatistics(
        currency="USD",
        budget_minor=100_000,
        billable_minutes=200,
        non_billable_minutes=30,
        billable_amount_minor=31_615,
        tasks_total=3,
        tasks_completed=2,
        milestones_paid_minor=45_000,
        milestones_approved_unpaid_minor=30_000,
        milestones_pending_minor=7_000,
    )
    assert (stats.budget_used_percent, stats.task_completion_percent) == ("31.6", "66.7")
    # and the amount is the same the budget alerts use
    assert stats.billable_amount_minor == await project_service.billable_amount_minor(project.id)


async def test_statistics_of_an_empty_project(db: Backend, owner: Account) -> None:
    # given a project without budget, time, tasks or milestones
    project = await _project(owner, currency="JPY")
    # then its statistics are zeros in its currency, and no percentages
    stats = (await project_service.project_statistics(owner.actor, [project.id]))[project.id]
    assert stats == project_service.ProjectStatistics(currency="JPY")
    assert (stats.budget_used_percent, stats.task_completion_percent) == (None, None)


async def test_statistics_take_a_fixed_number_of_queries(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given two projects, and then twenty more, each with time, tasks and milestones
    async def project_with_rows(name: str) -> Project:
        project = await _project(owner, name=name, budget="500.00", hourly_rate="50.00")
        for minutes in (15, 30, 45, 60, 60):
            await _entry(project, owner, minutes, rate_minor=5_000)
        await _task(project, TaskStatus.COMPLETED)
        await _task(project, TaskStatus.BLOCKED)
        await _milestone(project, 10_000, MilestoneStatus.APPROVED)
        return project

    few = [await project_with_rows(f"P{i}") for i in range(2)]
    with count_queries() as small:
        small_stats = await project_service.project_statistics(owner.actor, [p.id for p in few])
    many = few + [await project_with_rows(f"Q{i}") for i in range(20)]
    with count_queries() as large:
        large_stats = await project_service.project_statistics(owner.actor, [p.id for p in many])
    # then each project has its own figures
    expected = project_service.ProjectStatistics(
        currency="USD",
        budget_minor=50_000,
        billable_minutes=210,
        billable_amount_minor=17_500,
        tasks_total=2,
        tasks_completed=1,
        milestones_approved_unpaid_minor=10_000,
    )
    assert small_stats == {p.id: expected for p in few}
    assert large_stats == {p.id: expected for p in many}
    # and the query count did not grow: projects, time, tasks, milestones
    assert small.count == large.count == 4, large.queries
    # and another agency gets nothing for the same ids
    assert await project_service.project_statistics(rival.actor, [p.id for p in many]) == {}


async def test_client_user_gets_statistics_of_their_client_only(
    db: Backend, owner: Account
) -> None:
    # given projects of two clients and a viewer of the first client
    mine = await _project(owner, budget="100.00")
    other = await _project(owner, budget="100.00")
    client = await Client.get(id=mine.client_id)
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    # when the viewer asks for both
    found = await project_service.project_statistics(viewer.actor, [mine.id, other.id])
    # then only their client's project is there
    assert list(found) == [mine.id]
