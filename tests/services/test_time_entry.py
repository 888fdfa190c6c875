"""The time entry service: the rounding rule, and timers and budgets under concurrent requests."""

from __future__ import annotations

import asyncio
from datetime import date
from fractions import Fraction
from typing import Any

import pytest
from tortoise.exceptions import IntegrityError

from settle.core.errors import AppError
from settle.core.outbox import transaction
from settle.models.activity import ActivityEvent
from settle.models.project import Project, TimeEntry
from settle.services import time_entry as time_entry_service
from settle.services.time_entry import TimerRunningError, format_hours, round_to_quarter
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client


async def make_project(account: Account, **values: Any) -> Project:
    client = await create_client(account, name="Acme")
    return await Project.create(
        agency_id=account.agency_id,
        client_id=client.id,
        name="Website",
        currency=client.currency,
        **values,
    )


# (minutes as a fraction, rounded minutes)
QUARTERS: list[tuple[Fraction, int]] = [
    (Fraction(0), 0),
    (Fraction(7), 0),
    (Fraction(449, 60), 0),  # 7m29s
    (Fraction(15, 2), 15),  # 7m30s: half way rounds up
    (Fraction(15), 15),
    (Fraction(22), 15),
    (Fraction(45, 2), 30),  # 22m30s
    (Fraction(6749, 300), 15),  # 22m29.8s
    (Fraction(67), 60),
    (Fraction(135, 2), 75),  # 1h07m30s
    (Fraction(1439), 1440),
]


@pytest.mark.parametrize(("minutes", "rounded"), QUARTERS)
def test_round_to_quarter_is_nearest_with_halves_up(minutes: Fraction, rounded: int) -> None:
    # given a duration; when it is rounded; then it is the nearest quarter hour, halves up
    assert round_to_quarter(minutes) == rounded


def test_hours_are_shown_with_two_places() -> None:
    # given minutes; when they are shown as hours; then with two places, half up
    assert [format_hours(m) for m in (0, 15, 20, 45, 90, 100, 1440)] == [
        "0.00",
        "0.25",
        "0.33",
        "0.75",
        "1.50",
        "1.67",
        "24.00",
    ]


async def _start(account: Account, project: Project) -> str:
    try:
        async with transaction():
            await time_entry_service.start_timer(account.actor, project.id, None, None)
    except AppError as exc:
        return exc.code
    return "started"


async def test_concurrent_starts_leave_exactly_one_running_timer(
    db: Backend, owner: Account
) -> None:
    # given a project and a user without a timer
    # (on PostgreSQL the five transactions really run at once: the losers that got past
    # the check are stopped by the partial unique index, and answer TIMER_RUNNING too)
    project = await make_project(owner)
    # when five timers are started at once
    results = await asyncio.gather(*(_start(owner, project) for _ in range(5)))
    # then one started and four were told a timer runs
    assert sorted(results) == ["TIMER_RUNNING"] * 4 + ["started"]
    # and the database holds exactly one entry, running, with one event
    assert await TimeEntry.filter(user_id=owner.user.id).count() == 1
    assert await TimeEntry.filter(user_id=owner.user.id, is_running=True).count() == 1
    assert await ActivityEvent.filter(verb="timer_started").count() == 1


async def test_partial_unique_index_allows_one_running_entry_per_user(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given a running entry of the owner
    project = await make_project(owner)

    async def insert(account: Account, *, running: bool) -> TimeEntry:
        async with transaction():
            return await TimeEntry.create(
                agency_id=project.agency_id,
                project_id=project.id,
                client_id=project.client_id,
                user_id=account.user.id,
                work_date=date(2026, 3, 2),
                is_running=running,
                currency="USD",
            )

    await insert(owner, running=True)
    # when a second running entry of the owner is written past the service
    with pytest.raises(IntegrityError):
        await insert(owner, running=True)
    # then it was refused, while stopped entries, and another user's timer, are fine
    await insert(owner, running=False)
    await insert(rival, running=True)
    assert await TimeEntry.filter(user_id=owner.user.id, is_running=True).count() == 1


async def test_timer_running_error_has_its_code() -> None:
    # given the error; then its code is stable
    assert (TimerRunningError.code, TimerRunningError().message) == (
        "TIMER_RUNNING",
        "You already have a running timer: stop it first",
    )


async def _log(account: Account, project: Project, hours: str) -> None:
    async with transaction():
        await time_entry_service.log_time(account.actor, project.id, {"hours": hours})


async def test_concurrent_logs_announce_each_budget_threshold_at_most_once(
    db: Backend, owner: Account
) -> None:
    # given a project with a budget of USD 1,000.00 at USD 100.00 an hour
    project = await make_project(owner, budget_minor=100_000, hourly_rate_minor=10_000)
    # when eight requests log 1.25 hours each at once (10 hours: the whole budget)
    await asyncio.gather(*(_log(owner, project, "1.25") for _ in range(8)))
    # then all the time is there, and 100% was announced exactly once (80% at most once:
    # a request may see the spend jump past both thresholds)
    assert (
        sum(await TimeEntry.filter(project_id=project.id).values_list("minutes", flat=True)) == 600
    )
    verbs = list(await ActivityEvent.filter(entity_id=project.id).values_list("verb", flat=True))
    assert verbs.count("budget_100") == 1
    assert verbs.count("budget_80") <= 1
    assert (await Project.get(id=project.id)).budget_alert_level == 100
