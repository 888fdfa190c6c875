"""Time entry types: logged time, timers and summaries."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.core.money import Money as MoneyValue
from settle.models import project as models
from settle.schema.common import Money
from settle.schema.context import Info
from settle.schema.task import Task
from settle.services import time_entry as time_entry_service
from settle.services.project import entry_amount_minor

if TYPE_CHECKING:
    from settle.schema.auth import User


@strawberry.type
class TimeEntry:
    id: strawberry.ID
    project_id: strawberry.ID
    task_id: strawberry.ID | None
    description: str
    work_date: date
    started_at: datetime | None
    ended_at: datetime | None
    minutes: int | None = strawberry.field(
        description="Rounded to the quarter hour; null while the timer runs."
    )
    hours: str | None = strawberry.field(
        description='minutes / 60 as a decimal string, e.g. "1.25"; null while running.'
    )
    is_running: bool
    billable: bool
    hourly_rate: Money | None = strawberry.field(
        description="The project's rate when the time was logged."
    )
    amount: Money | None = strawberry.field(
        description="Billable amount (minutes x rate, rounded half up); null if not billable."
    )
    invoiced: bool = strawberry.field(description="Billed on an invoice: it can no longer change.")
    created_at: datetime
    updated_at: datetime
    _user_id: strawberry.Private[uuid.UUID]
    _task_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, entry: models.TimeEntry) -> TimeEntry:
        rate = entry.hourly_rate_minor
        billed = entry.billable and rate is not None and entry.minutes is not None
        return cls(
            id=strawberry.ID(str(entry.id)),
            project_id=strawberry.ID(str(entry.project_id)),
            task_id=strawberry.ID(str(entry.task_id)) if entry.task_id else None,
            description=entry.description,
            work_date=entry.work_date,
            started_at=entry.started_at,
            ended_at=entry.ended_at,
            minutes=entry.minutes,
            hours=(
                None if entry.minutes is None else time_entry_service.format_hours(entry.minutes)
            ),
            is_running=entry.is_running,
            billable=entry.billable,
            hourly_rate=None if rate is None else Money.of(rate, entry.currency),
            amount=(
                Money.from_value(
                    MoneyValue(entry_amount_minor(entry.minutes or 0, rate or 0), entry.currency)
                )
                if billed
                else None
            ),
            invoiced=entry.invoice_line_id is not None,
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            _user_id=entry.user_id,
            _task_id=entry.task_id,
        )

    @strawberry.field(description="Who logged the time.")
    async def user(self, info: Info) -> Annotated[User, strawberry.lazy("settle.schema.auth")]:
        from settle.schema.auth import User

        user = await info.context.loaders.user.load(self._user_id)
        assert user is not None, "a time entry's user is of its agency"
        return User.from_model(user)

    @strawberry.field
    async def task(self, info: Info) -> Task | None:
        if self._task_id is None:
            return None
        task = await info.context.loaders.task.load(self._task_id)
        return Task.from_model(task) if task else None


def _hours_fields(
    total: time_entry_service.TimeTotal, currency: str
) -> tuple[int, str, int, str, Money]:
    return (
        total.minutes,
        time_entry_service.format_hours(total.minutes),
        total.billable_minutes,
        time_entry_service.format_hours(total.billable_minutes),
        Money.of(total.billable_amount_minor, currency),
    )


@strawberry.interface(description="Stopped time totalled: minutes, hours and billable amount.")
class TimeTotals:
    minutes: int
    hours: str = strawberry.field(description='minutes / 60, e.g. "12.75".')
    billable_minutes: int
    billable_hours: str
    billable_amount: Money = strawberry.field(
        description="Billable time at the rates it was logged at, each entry rounded half up."
    )


@strawberry.type
class UserTimeTotal(TimeTotals):
    _user_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_value(cls, total: time_entry_service.TimeTotal, currency: str) -> UserTimeTotal:
        assert total.key is not None
        minutes, hours, billable_minutes, billable_hours, amount = _hours_fields(total, currency)
        return cls(
            minutes=minutes,
            hours=hours,
            billable_minutes=billable_minutes,
            billable_hours=billable_hours,
            billable_amount=amount,
            _user_id=total.key,
        )

    @strawberry.field
    async def user(self, info: Info) -> Annotated[User, strawberry.lazy("settle.schema.auth")]:
        from settle.schema.auth import User

        user = await info.context.loaders.user.load(self._user_id)
        assert user is not None, "a time entry's user is of its agency"
        return User.from_model(user)


@strawberry.type
class TaskTimeTotal(TimeTotals):
    _task_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_value(cls, total: time_entry_service.TimeTotal, currency: str) -> TaskTimeTotal:
        minutes, hours, billable_minutes, billable_hours, amount = _hours_fields(total, currency)
        return cls(
            minutes=minutes,
            hours=hours,
            billable_minutes=billable_minutes,
            billable_hours=billable_hours,
            billable_amount=amount,
            _task_id=total.key,
        )

    @strawberry.field(description="The task; null for time logged without one.")
    async def task(self, info: Info) -> Task | None:
        if self._task_id is None:
            return None
        task = await info.context.loaders.task.load(self._task_id)
        return Task.from_model(task) if task else None


@strawberry.type(description="A project's stopped time in a date range (work dates, inclusive).")
class TimeSummary(TimeTotals):
    project_id: strawberry.ID
    from_: date | None = strawberry.field(name="from")
    to: date | None
    by_user: list[UserTimeTotal] = strawberry.field(description="Most time first.")
    by_task: list[TaskTimeTotal] = strawberry.field(
        description="Most time first; time without a task has a null task."
    )

    @classmethod
    def from_value(cls, summary: time_entry_service.TimeSummary) -> TimeSummary:
        minutes, hours, billable_minutes, billable_hours, amount = _hours_fields(
            summary.total, summary.currency
        )
        return cls(
            minutes=minutes,
            hours=hours,
            billable_minutes=billable_minutes,
            billable_hours=billable_hours,
            billable_amount=amount,
            project_id=strawberry.ID(str(summary.project_id)),
            from_=summary.date_from,
            to=summary.date_to,
            by_user=[UserTimeTotal.from_value(row, summary.currency) for row in summary.by_user],
            by_task=[TaskTimeTotal.from_value(row, summary.currency) for row in summary.by_task],
        )


@strawberry.input(description="Either hours, or startedAt and endedAt (with a time zone offset).")
class LogTimeInput:
    project_id: strawberry.ID
    task_id: strawberry.ID | None = None
    description: str | None = None
    work_date: date | None = strawberry.field(
        default=None, description="Defaults to the start's date (UTC), or today."
    )
    started_at: datetime | None = None
    ended_at: datetime | None = None
    hours: str | None = strawberry.field(
        default=None, description='Decimal hours above 0 and at most 24, e.g. "1.5".'
    )
    billable: bool | None = strawberry.field(
        default=None, description="Defaults to the project's billable flag."
    )


@strawberry.input(description="Fields to change; time is rounded to the quarter hour again.")
class UpdateTimeEntryInput:
    task_id: strawberry.ID | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    work_date: date | None = strawberry.UNSET
    started_at: datetime | None = strawberry.UNSET
    ended_at: datetime | None = strawberry.UNSET
    hours: str | None = strawberry.UNSET
    billable: bool | None = strawberry.UNSET


@strawberry.input
class TimeEntryFilter:
    project_id: strawberry.ID | None = None
    user_id: strawberry.ID | None = None
    task_id: strawberry.ID | None = None
    from_: date | None = strawberry.field(
        default=None, name="from", description="First work date, inclusive."
    )
    to: date | None = strawberry.field(default=None, description="Last work date, inclusive.")
    billable: bool | None = None
    invoiced: bool | None = None
