"""Tasks: a project's to-do list, in the order its team sets.

Positions run 0..n-1 within a project: a new task goes to the end, a deleted
task's successors move up, and ``reorder_tasks`` rewrites the whole order at once.
Members, admins and owners change tasks; client users read their client's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from tortoise.expressions import F
from tortoise.models import Model
from tortoise.queryset import QuerySet

from settle.core import clock, validation
from settle.core.db import get_visible, lock_rows
from settle.core.errors import ConflictError, NotFoundError, ValidationError
from settle.core.pagination import Ordering, Page, paginate, paginate_each
from settle.core.tenancy import MEMBERS, Actor, scoped
from settle.models.agency import User
from settle.models.project import Project, Task, TaskPriority, TaskStatus, TimeEntry
from settle.services import activity

M = TypeVar("M", bound=Model)

TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 10_000
# The column holds 7 digits, 2 after the point.
MAX_ESTIMATED_HOURS = Decimal("99999.99")
_CENTS = Decimal("0.01")

TASK_ORDERING = Ordering("position")
TASK_FIELDS = (
    "title",
    "description",
    "status",
    "priority",
    "assignee_id",
    "due_date",
    "estimated_hours",
)


class ProjectArchivedError(ConflictError):
    code = "PROJECT_ARCHIVED"

    def __init__(self) -> None:
        super().__init__("The project is archived: its tasks and time can no longer change")


class TaskHasBilledTimeError(ConflictError):
    code = "TASK_HAS_BILLED_TIME"

    def __init__(self) -> None:
        super().__init__("A task with billed time cannot be deleted")


@dataclass(frozen=True, slots=True)
class TaskFilter:
    project_id: uuid.UUID | None = None
    status: TaskStatus | None = None
    assignee_id: uuid.UUID | None = None
    priority: TaskPriority | None = None


# --- projects --------------------------------------------------------------


async def live_project(actor: Actor, project_id: uuid.UUID, *, lock: bool = False) -> Project:
    """A project the actor may see that still takes work; locked until commit if asked."""
    qs = scoped(Project, actor).filter(id=project_id)
    project = await (lock_rows(qs) if lock else qs).first()
    if project is None:
        raise NotFoundError("Project", project_id)
    if project.archived_at is not None:
        raise ProjectArchivedError()
    return project


# --- input -----------------------------------------------------------------


def _estimated_hours(value: Any) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ValidationError(
            "estimatedHours", "estimatedHours must be a decimal number", code="INVALID_DECIMAL"
        )
    if number <= 0 or number > MAX_ESTIMATED_HOURS:
        raise ValidationError(
            "estimatedHours",
            f"estimatedHours must be greater than 0 and at most {MAX_ESTIMATED_HOURS}",
            code="OUT_OF_RANGE",
        )
    if number != number.quantize(_CENTS):
        raise ValidationError(
            "estimatedHours", "estimatedHours has at most 2 decimal places", code="TOO_PRECISE"
        )
    return number.quantize(_CENTS)


def _choice(field: str, value: Any, enum: type[TaskStatus] | type[TaskPriority]) -> Any:
    if value is None:
        raise ValidationError(field, f"{field} must not be empty", code="REQUIRED")
    try:
        return enum(value)
    except ValueError:
        raise ValidationError(field, f"Unknown {field} {value!r}", code="INVALID_CHOICE") from None


def clean_task_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Validate the task fields present in ``values`` (the assignee is checked apart)."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key == "title":
            cleaned[key] = validation.required_text("title", value, max_length=TITLE_MAX_LENGTH)
        elif key == "description":
            cleaned[key] = validation.optional_text(
                "description", value, max_length=DESCRIPTION_MAX_LENGTH
            )
        elif key == "status":
            cleaned[key] = _choice("status", value, TaskStatus)
        elif key == "priority":
            cleaned[key] = _choice("priority", value, TaskPriority)
        elif key == "assignee_id":
            if value is not None and not isinstance(value, uuid.UUID):
                raise ValidationError(
                    "assigneeId", "assigneeId is not a valid id", code="INVALID_ID"
                )
            cleaned[key] = value
        elif key == "due_date":
            if value is not None and not isinstance(value, date):
                raise ValidationError("dueDate", "dueDate must be a date")
            cleaned[key] = value
        elif key == "estimated_hours":
            cleaned[key] = _estimated_hours(value)
        else:
            raise ValidationError(key, f"Unknown field {key}")
    return cleaned


async def _check_assignee(actor: Actor, user_id: uuid.UUID | None) -> None:
    """An assignee is an active member of the actor's agency, never a client user."""
    if user_id is None:
        return
    user = await User.filter(id=user_id, agency_id=actor.agency_id).first()
    # Another agency's user is as unknown as one that does not exist.
    if user is None:
        raise ValidationError("assigneeId", "Assignee not found", code="NOT_FOUND")
    if user.role.is_client:
        raise ValidationError(
            "assigneeId", "Tasks can only be assigned to agency members", code="NOT_A_MEMBER"
        )
    if not user.is_active:
        raise ValidationError("assigneeId", "The assignee is deactivated", code="INACTIVE_USER")


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    """Values as the timeline shows them: hours with two places, as the API does."""
    return {
        key: f"{value:.2f}" if key == "estimated_hours" and value is not None else value
        for key, value in values.items()
    }


def _words(status: TaskStatus) -> str:
    return status.value.replace("_", " ")


async def _record(
    actor: Actor,
    task: Task,
    verb: str,
    summary: str,
    changes: activity.Changes | None = None,
) -> None:
    await activity.record(
        actor,
        agency_id=task.agency_id,
        client_id=task.client_id,
        entity_type="task",
        entity_id=task.id,
        verb=verb,
        summary=summary,
        changes=changes,
    )


# --- lookups and lists -----------------------------------------------------


def _tasks(actor: Actor) -> QuerySet[Task]:
    return scoped(Task, actor)


async def get_task(actor: Actor, task_id: uuid.UUID) -> Task:
    """A task the actor may see, or NotFoundError (also for other agencies' ids)."""
    return await get_visible(_tasks(actor), task_id, "Task")


async def _lock_task(actor: Actor, task_id: uuid.UUID) -> Task:
    return await get_visible(_tasks(actor), task_id, "Task", lock=True)


async def project_task(actor: Actor, project: Project, task_id: uuid.UUID | None) -> Task | None:
    """The task ``task_id`` of ``project``; ValidationError on ``taskId`` for any other."""
    if task_id is None:
        return None
    task = await _tasks(actor).filter(id=task_id, project_id=project.id).first()
    if task is None:
        raise ValidationError("taskId", "Task not found in this project", code="NOT_FOUND")
    return task


async def tasks_by_ids(actor: Actor, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Task]:
    """Batch lookup for loaders: the tasks among ``ids`` the actor may see."""
    rows = await _tasks(actor).filter(id__in=list(ids))
    return {row.id: row for row in rows}


async def list_tasks(
    actor: Actor, flt: TaskFilter, *, first: int | None, after: str | None
) -> Page[Task]:
    """Tasks the actor may see, filtered, in their projects' order."""
    qs = _tasks(actor)
    if flt.project_id is not None:
        qs = qs.filter(project_id=flt.project_id)
    if flt.status is not None:
        qs = qs.filter(status=flt.status)
    if flt.assignee_id is not None:
        qs = qs.filter(assignee_id=flt.assignee_id)
    if flt.priority is not None:
        qs = qs.filter(priority=flt.priority)
    return await paginate(qs, first=first, after=after, ordering=TASK_ORDERING)


async def tasks_of_projects(
    actor: Actor, project_ids: Sequence[uuid.UUID], *, first: int | None, after: str | None
) -> dict[uuid.UUID, Page[Task]]:
    """Each project's tasks in their order, a page of each, in a fixed number of queries."""
    return await paginate_each(
        _tasks(actor), "project_id", project_ids, first=first, after=after, ordering=TASK_ORDERING
    )


# --- changes ---------------------------------------------------------------


async def create_task(actor: Actor, project_id: uuid.UUID, values: dict[str, Any]) -> Task:
    """Add a task at the end of a project's list."""
    actor.require(*MEMBERS)
    # The lock serialises additions, so two tasks never take the same position.
    project = await live_project(actor, project_id, lock=True)
    data = clean_task_fields({"status": TaskStatus.TODO, "priority": TaskPriority.MEDIUM, **values})
    if "title" not in data:
        raise ValidationError("title", "title must not be empty", code="REQUIRED")
    await _check_assignee(actor, data.get("assignee_id"))
    last: list[Any] = (
        await Task.filter(project_id=project.id)
        .order_by("-position")
        .limit(1)
        .values_list("position", flat=True)
    )
    completed_at = clock.now() if data["status"] == TaskStatus.COMPLETED else None
    task = await Task.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        position=int(last[0]) + 1 if last else 0,
        completed_at=completed_at,
        **data,
    )
    await _record(
        actor,
        task,
        "created",
        f"Task {task.title} added to {project.name}",
        activity.snapshot(_shown({**data, "completed_at": completed_at})),
    )
    return task


async def update_task(actor: Actor, task_id: uuid.UUID, values: dict[str, Any]) -> Task:
    """Change the given fields of a task (its status has its own mutation)."""
    task = await _lock_task(actor, task_id)
    actor.require(*MEMBERS)
    await live_project(actor, task.project_id)
    data = clean_task_fields(values)
    if "assignee_id" in data and data["assignee_id"] != task.assignee_id:
        await _check_assignee(actor, data["assignee_id"])
    before = {key: getattr(task, key) for key in data}
    changes = activity.diff(_shown(before), _shown(data))
    if not changes:
        return task
    task.update_from_dict(data)
    await task.save(update_fields=[*data.keys(), "updated_at"])
    if set(changes) == {"assignee_id"}:
        verb = "assigned" if task.assignee_id else "unassigned"
    else:
        verb = "updated"
    await _record(actor, task, verb, f"Task {task.title} {verb}", changes)
    return task


async def set_task_status(actor: Actor, task_id: uuid.UUID, status: Any) -> Task:
    """Move a task to ``status``; completing it stamps completed_at, reopening clears it."""
    task = await _lock_task(actor, task_id)
    actor.require(*MEMBERS)
    await live_project(actor, task.project_id)
    new = _choice("status", status, TaskStatus)
    if new == task.status:
        return task
    before = {"status": task.status, "completed_at": task.completed_at}
    previous = task.status
    task.status = new
    if new == TaskStatus.COMPLETED:
        task.completed_at = clock.now()
    elif previous == TaskStatus.COMPLETED:
        task.completed_at = None
    await task.save(update_fields=["status", "completed_at", "updated_at"])
    await _record(
        actor,
        task,
        "status_changed",
        f"Task {task.title} moved from {_words(previous)} to {_words(new)}",
        activity.diff(before, {"status": task.status, "completed_at": task.completed_at}),
    )
    return task


async def delete_task(actor: Actor, task_id: uuid.UUID) -> Task:
    """Delete a task; the tasks after it move up, and its time stays logged without a task."""
    task = await get_task(actor, task_id)
    actor.require(*MEMBERS)
    await live_project(actor, task.project_id, lock=True)
    # Under the project lock: the position read now is the one to close the gap at.
    locked = await Task.filter(id=task.id).first()
    if locked is None:
        raise NotFoundError("Task", task_id)
    # Billed entries are frozen: losing their task would change what was invoiced.
    if await TimeEntry.filter(task_id=task.id, invoice_line_id__isnull=False).exists():
        raise TaskHasBilledTimeError()
    await locked.delete()
    await Task.filter(project_id=locked.project_id, position__gt=locked.position).update(
        position=F("position") - 1
    )
    before = {key: getattr(locked, key) for key in TASK_FIELDS}
    await _record(
        actor,
        locked,
        "deleted",
        f"Task {locked.title} deleted",
        activity.diff(_shown(before), {}),
    )
    return locked


async def reorder_tasks(
    actor: Actor, project_id: uuid.UUID, task_ids: Sequence[uuid.UUID]
) -> list[Task]:
    """Put a project's tasks in the given order (positions 0..n-1), all at once.

    ``task_ids`` must name every task of the project exactly once: a list with a
    task missing, repeated, or not of this project changes nothing.
    """
    actor.require(*MEMBERS)
    project = await live_project(actor, project_id, lock=True)
    tasks = await Task.filter(project_id=project.id).order_by("position", "id")
    by_id = {task.id: task for task in tasks}
    wanted = list(task_ids)
    if len(wanted) != len(set(wanted)) or set(wanted) != set(by_id):
        raise ValidationError(
            "taskIds",
            "taskIds must list every task of the project exactly once",
            code="TASK_LIST_MISMATCH",
        )
    now = clock.now()
    moved: list[Task] = []
    for position, task_id in enumerate(wanted):
        task = by_id[task_id]
        if task.position != position:
            task.position = position
            task.updated_at = now
            moved.append(task)
    if moved:
        await Task.bulk_update(moved, fields=["position", "updated_at"])
    before = [str(task.id) for task in tasks]
    after = [str(task_id) for task_id in wanted]
    if before != after:
        await activity.record(
            actor,
            agency_id=project.agency_id,
            client_id=project.client_id,
            entity_type="project",
            entity_id=project.id,
            verb="tasks_reordered",
            summary=f"Tasks of {project.name} reordered",
            changes={"task_ids": {"before": before, "after": after}},
        )
    return [by_id[task_id] for task_id in wanted]
