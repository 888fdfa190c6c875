"""Task types: a project's to-do list."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.models import project as models
from settle.schema.context import Info

if TYPE_CHECKING:
    from settle.schema.auth import User


@strawberry.enum
class TaskStatus(Enum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    COMPLETED = "completed"


@strawberry.enum
class TaskPriority(Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


@strawberry.type
class Task:
    id: strawberry.ID
    project_id: strawberry.ID
    title: str
    description: str | None
    status: TaskStatus
    priority: TaskPriority
    due_date: date | None
    estimated_hours: str | None = strawberry.field(
        description='Decimal hours with two places, e.g. "2.50"; null for no estimate.'
    )
    position: int = strawberry.field(description="Place in the project's list, from 0.")
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    _assignee_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, task: models.Task) -> Task:
        return cls(
            id=strawberry.ID(str(task.id)),
            project_id=strawberry.ID(str(task.project_id)),
            title=task.title,
            description=task.description,
            status=TaskStatus(task.status.value),
            priority=TaskPriority(task.priority.value),
            due_date=task.due_date,
            estimated_hours=(
                None if task.estimated_hours is None else f"{task.estimated_hours:.2f}"
            ),
            position=task.position,
            completed_at=task.completed_at,
            created_at=task.created_at,
            updated_at=task.updated_at,
            _assignee_id=task.assignee_id,
        )

    @strawberry.field(description="The agency member the task is assigned to.")
    async def assignee(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("settle.schema.auth")] | None:
        from settle.schema.auth import User

        if self._assignee_id is None:
            return None
        user = await info.context.loaders.user.load(self._assignee_id)
        return User.from_model(user) if user else None


@strawberry.type
class ReorderedTasks:
    project_id: strawberry.ID
    tasks: list[Task] = strawberry.field(description="Every task of the project, in its new order.")


@strawberry.input
class CreateTaskInput:
    project_id: strawberry.ID
    title: str
    description: str | None = None
    status: TaskStatus = TaskStatus.TODO
    priority: TaskPriority = TaskPriority.MEDIUM
    assignee_id: strawberry.ID | None = strawberry.field(
        default=None, description="An agency member (owner, admin or member)."
    )
    due_date: date | None = None
    estimated_hours: str | None = strawberry.field(
        default=None, description='Decimal hours above 0, at most two places, e.g. "2.5".'
    )


@strawberry.input(description="Fields to change; the status changes through setTaskStatus.")
class UpdateTaskInput:
    title: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    priority: TaskPriority | None = strawberry.UNSET
    assignee_id: strawberry.ID | None = strawberry.UNSET
    due_date: date | None = strawberry.UNSET
    estimated_hours: str | None = strawberry.UNSET


@strawberry.input
class TaskFilter:
    project_id: strawberry.ID | None = None
    status: TaskStatus | None = None
    assignee_id: strawberry.ID | None = None
    priority: TaskPriority | None = None
