"""Time entry resolvers: parse input, call the time entry service, map the result."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

import strawberry
from strawberry.types.unset import UnsetType

from settle.core.errors import NotFoundError as DomainNotFoundError
from settle.resolvers.common import (
    find_one,
    mutate,
    parse_id,
    parse_optional_id,
    provided,
    public_errors,
    require_actor,
)
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.schema.time_entry import (
    LogTimeInput,
    TimeEntry,
    TimeEntryFilter,
    TimeSummary,
    UpdateTimeEntryInput,
)
from settle.services import time_entry as time_entry_service

_Errors = ValidationError | NotFoundError | PermissionDeniedError | ConflictError
TimeEntryResult = Annotated[TimeEntry | _Errors, strawberry.union("TimeEntryResult")]


def _optional_id(value: Any, field: str) -> Any:
    """A UUID for a given id; UNSET and null pass through."""
    if value is None or isinstance(value, UnsetType):
        return value
    return parse_id(value, field)


async def time_entries(
    info: Info,
    first: int = 20,
    after: str | None = None,
    filter: TimeEntryFilter | None = None,
) -> Connection[TimeEntry]:
    """Time entries the actor may see, newest work date first."""
    actor = require_actor(info)
    flt = filter or TimeEntryFilter()
    with public_errors():
        page = await time_entry_service.list_time_entries(
            actor,
            time_entry_service.TimeEntryFilter(
                project_id=_optional_id(flt.project_id, "filter.projectId"),
                user_id=_optional_id(flt.user_id, "filter.userId"),
                task_id=_optional_id(flt.task_id, "filter.taskId"),
                date_from=flt.from_,
                date_to=flt.to,
                billable=flt.billable,
                invoiced=flt.invoiced,
            ),
            first=first,
            after=after,
        )
    return Connection.from_page(page, TimeEntry.from_model)


async def time_entry(info: Info, id: strawberry.ID) -> TimeEntry | None:
    actor = require_actor(info)
    return await find_one(
        id, lambda row_id: time_entry_service.get_time_entry(actor, row_id), TimeEntry.from_model
    )


async def running_timer(info: Info) -> TimeEntry | None:
    """The current user's running timer, if any."""
    entry = await time_entry_service.running_timer(require_actor(info))
    return TimeEntry.from_model(entry) if entry else None


async def time_summary(
    info: Info,
    project_id: strawberry.ID,
    from_: Annotated[date | None, strawberry.argument(name="from")] = None,
    to: date | None = None,
) -> TimeSummary | None:
    """A project's stopped time totalled by user and by task; null for an unknown project."""
    actor = require_actor(info)
    pid = parse_optional_id(project_id)
    if pid is None:
        return None
    with public_errors():
        try:
            summary = await time_entry_service.time_summary(actor, pid, from_, to)
        except DomainNotFoundError:
            return None
    return TimeSummary.from_value(summary)


async def project_time_entries(
    info: Info, project_id: uuid.UUID, *, first: int, after: str | None
) -> Connection[TimeEntry]:
    """Project.timeEntries: the projects of a list get their pages through one loader."""
    require_actor(info)
    loader = info.context.loaders.project_time_entries(first=first, after=after)
    with public_errors():
        page = await loader.load(project_id)
    return Connection.from_page(page, TimeEntry.from_model)


def _time_values(input: LogTimeInput | UpdateTimeEntryInput) -> dict[str, Any]:
    return {
        "task_id": _optional_id(input.task_id, "taskId"),
        "description": input.description,
        "work_date": input.work_date,
        "started_at": input.started_at,
        "ended_at": input.ended_at,
        "hours": input.hours,
        "billable": input.billable,
    }


async def log_time(info: Info, input: LogTimeInput) -> TimeEntryResult:
    """Log time: hours, or a start and end; rounded to the nearest quarter hour (half up)."""
    actor = require_actor(info)

    async def run() -> TimeEntry:
        # Null means "not given" here: the project or the start supplies defaults.
        values = {key: value for key, value in _time_values(input).items() if value is not None}
        return TimeEntry.from_model(
            await time_entry_service.log_time(
                actor, parse_id(input.project_id, "projectId"), values
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def update_time_entry(
    info: Info, id: strawberry.ID, input: UpdateTimeEntryInput
) -> TimeEntryResult:
    """Change an entry not yet billed (its author, or an owner or admin)."""
    actor = require_actor(info)

    async def run() -> TimeEntry:
        values = provided(_time_values(input))
        return TimeEntry.from_model(
            await time_entry_service.update_time_entry(actor, parse_id(id), values)
        )

    return await mutate(run)  # type: ignore[return-value]


async def delete_time_entry(info: Info, id: strawberry.ID) -> TimeEntryResult:
    """Delete an entry not yet billed (its author, or an owner or admin)."""
    actor = require_actor(info)

    async def run() -> TimeEntry:
        return TimeEntry.from_model(await time_entry_service.delete_time_entry(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def start_timer(
    info: Info,
    project_id: strawberry.ID,
    task_id: strawberry.ID | None = None,
    description: str | None = None,
) -> TimeEntryResult:
    """Start your timer on a project; you can have one running at a time."""
    actor = require_actor(info)

    async def run() -> TimeEntry:
        return TimeEntry.from_model(
            await time_entry_service.start_timer(
                actor,
                parse_id(project_id, "projectId"),
                _optional_id(task_id, "taskId"),
                description,
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def stop_timer(info: Info) -> TimeEntryResult:
    """Stop your running timer; its time is rounded to the nearest quarter hour."""
    actor = require_actor(info)

    async def run() -> TimeEntry:
        return TimeEntry.from_model(await time_entry_service.stop_timer(actor))

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class TimeEntryQuery:
    time_entries: Connection[TimeEntry] = strawberry.field(resolver=time_entries)
    time_entry: TimeEntry | None = strawberry.field(resolver=time_entry)
    running_timer: TimeEntry | None = strawberry.field(resolver=running_timer)
    time_summary: TimeSummary | None = strawberry.field(resolver=time_summary)


@strawberry.type
class TimeEntryMutation:
    log_time: TimeEntryResult = strawberry.mutation(resolver=log_time)
    update_time_entry: TimeEntryResult = strawberry.mutation(resolver=update_time_entry)
    delete_time_entry: TimeEntryResult = strawberry.mutation(resolver=delete_time_entry)
    start_timer: TimeEntryResult = strawberry.mutation(resolver=start_timer)
    stop_timer: TimeEntryResult = strawberry.mutation(resolver=stop_timer)
