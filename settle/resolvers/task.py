"""Task resolvers: parse input, call the task service, map the result."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import strawberry
from strawberry.types.unset import UnsetType

from settle.models import project as models
from settle.resolvers.common import (
    find_one,
    mutate,
    parse_id,
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
from settle.schema.task import (
    CreateTaskInput,
    ReorderedTasks,
    Task,
    TaskFilter,
    TaskStatus,
    UpdateTaskInput,
)
from settle.services import task as task_service

_Errors = ValidationError | NotFoundError | PermissionDeniedError | ConflictError
TaskResult = Annotated[Task | _Errors, strawberry.union("TaskResult")]
ReorderTasksResult = Annotated[ReorderedTasks | _Errors, strawberry.union("ReorderTasksResult")]


def _model_enum(value: Any, enum: type[models.TaskStatus] | type[models.TaskPriority]) -> Any:
    """The model's enum for a schema enum (UNSET and null pass through)."""
    if value is None or isinstance(value, UnsetType):
        return value
    return enum(value.value)


def _optional_id(value: Any, field: str) -> Any:
    """A UUID for a given id; UNSET and null pass through."""
    if value is None or isinstance(value, UnsetType):
        return value
    return parse_id(value, field)


async def tasks(
    info: Info, first: int = 20, after: str | None = None, filter: TaskFilter | None = None
) -> Connection[Task]:
    """Tasks the actor may see, in their project's order (a client user sees their client's)."""
    actor = require_actor(info)
    flt = filter or TaskFilter()
    with public_errors():
        page = await task_service.list_tasks(
            actor,
            task_service.TaskFilter(
                project_id=_optional_id(flt.project_id, "filter.projectId"),
                status=_model_enum(flt.status, models.TaskStatus),
                assignee_id=_optional_id(flt.assignee_id, "filter.assigneeId"),
                priority=_model_enum(flt.priority, models.TaskPriority),
            ),
            first=first,
            after=after,
        )
    return Connection.from_page(page, Task.from_model)


async def task(info: Info, id: strawberry.ID) -> Task | None:
    actor = require_actor(info)
    return await find_one(id, lambda row_id: task_service.get_task(actor, row_id), Task.from_model)


async def project_tasks(
    info: Info, project_id: uuid.UUID, *, first: int, after: str | None
) -> Connection[Task]:
    """Project.tasks: the projects of a list get their pages through one loader."""
    require_actor(info)
    loader = info.context.loaders.project_tasks(first=first, after=after)
    with public_errors():
        page = await loader.load(project_id)
    return Connection.from_page(page, Task.from_model)


def _values(input: CreateTaskInput | UpdateTaskInput) -> dict[str, Any]:
    return {
        "title": input.title,
        "description": input.description,
        "priority": _model_enum(input.priority, models.TaskPriority),
        "assignee_id": _optional_id(input.assignee_id, "assigneeId"),
        "due_date": input.due_date,
        "estimated_hours": input.estimated_hours,
    }


async def create_task(info: Info, input: CreateTaskInput) -> TaskResult:
    actor = require_actor(info)

    async def run() -> Task:
        values = {**_values(input), "status": _model_enum(input.status, models.TaskStatus)}
        return Task.from_model(
            await task_service.create_task(actor, parse_id(input.project_id, "projectId"), values)
        )

    return await mutate(run)  # type: ignore[return-value]


async def update_task(info: Info, id: strawberry.ID, input: UpdateTaskInput) -> TaskResult:
    actor = require_actor(info)

    async def run() -> Task:
        values = provided(_values(input))
        return Task.from_model(await task_service.update_task(actor, parse_id(id), values))

    return await mutate(run)  # type: ignore[return-value]


async def set_task_status(info: Info, id: strawberry.ID, status: TaskStatus) -> TaskResult:
    """Move a task to another status; completing it stamps completedAt, reopening clears it."""
    actor = require_actor(info)

    async def run() -> Task:
        return Task.from_model(
            await task_service.set_task_status(
                actor, parse_id(id), _model_enum(status, models.TaskStatus)
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def delete_task(info: Info, id: strawberry.ID) -> TaskResult:
    actor = require_actor(info)

    async def run() -> Task:
        return Task.from_model(await task_service.delete_task(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def reorder_tasks(
    info: Info, project_id: strawberry.ID, task_ids: list[strawberry.ID]
) -> ReorderTasksResult:
    """Put every task of a project in the given order, all at once, or change nothing."""
    actor = require_actor(info)

    async def run() -> ReorderedTasks:
        pid = parse_id(project_id, "projectId")
        ordered = await task_service.reorder_tasks(
            actor, pid, [parse_id(task_id, "taskIds") for task_id in task_ids]
        )
        return ReorderedTasks(
            project_id=strawberry.ID(str(pid)), tasks=[Task.from_model(t) for t in ordered]
        )

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class TaskQuery:
    tasks: Connection[Task] = strawberry.field(resolver=tasks)
    task: Task | None = strawberry.field(resolver=task)


@strawberry.type
class TaskMutation:
    create_task: TaskResult = strawberry.mutation(resolver=create_task)
    update_task: TaskResult = strawberry.mutation(resolver=update_task)
    set_task_status: TaskResult = strawberry.mutation(resolver=set_task_status)
    delete_task: TaskResult = strawberry.mutation(resolver=delete_task)
    reorder_tasks: ReorderTasksResult = strawberry.mutation(resolver=reorder_tasks)
