"""Delivery: projects, their tasks and the time logged against them."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields

from settle.models.base import TenantModel

if TYPE_CHECKING:
    from settle.models.agency import User
    from settle.models.client import Client


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    COMPLETED = "completed"


class TaskPriority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class Project(TenantModel):
    client: fields.ForeignKeyRelation[Client] = fields.ForeignKeyField(
        "settle.Client", related_name=False, on_delete=fields.RESTRICT, db_index=True
    )
    client_id: uuid.UUID
    name = fields.CharField(max_length=200)
    description = fields.TextField(null=True)
    status = fields.CharEnumField(ProjectStatus, max_length=20, default=ProjectStatus.ACTIVE)
    start_date: date | None = fields.DateField(null=True)
    due_date: date | None = fields.DateField(null=True)
    currency = fields.CharField(max_length=3)
    # Money in minor units of ``currency``; null means "not set".
    budget_minor: int | None = fields.BigIntField(null=True)
    hourly_rate_minor: int | None = fields.BigIntField(null=True)
    billable = fields.BooleanField(default=True)
    # Payment terms: whole percent of the total paid in advance, and invoice due days.
    advance_percent = fields.SmallIntField(default=0)
    invoice_due_days = fields.SmallIntField(default=30)
    # Who beside the owners and admins hears of the project's payments: when set,
    # the member who submitted each paid milestone's work is told too.
    notify_milestone_members = fields.BooleanField(default=False)
    # The highest budget threshold (80, 100) already announced on the timeline.
    budget_alert_level = fields.SmallIntField(default=0)
    archived_at = fields.DatetimeField(null=True)

    class Meta:
        table = "project"
        indexes = (("agency_id", "status"),)


class Task(TenantModel):
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "settle.Project", related_name="tasks", on_delete=fields.CASCADE, db_index=True
    )
    project_id: uuid.UUID
    # Copied from the project so client users' scope needs no join.
    client_id = fields.UUIDField(db_index=True)
    title = fields.CharField(max_length=200)
    description = fields.TextField(null=True)
    status = fields.CharEnumField(TaskStatus, max_length=20, default=TaskStatus.TODO)
    priority = fields.CharEnumField(TaskPriority, max_length=20, default=TaskPriority.MEDIUM)
    assignee: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    assignee_id: uuid.UUID | None
    due_date: date | None = fields.DateField(null=True)
    estimated_hours: Decimal | None = fields.DecimalField(max_digits=7, decimal_places=2, null=True)
    position = fields.IntField(default=0)
    completed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "task"
        indexes = (("project_id", "position"),)


class TimeEntry(TenantModel):
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, on_delete=fields.RESTRICT, db_index=True
    )
    user_id: uuid.UUID
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "settle.Project", related_name="time_entries", on_delete=fields.CASCADE, db_index=True
    )
    project_id: uuid.UUID
    client_id = fields.UUIDField(db_index=True)
    task: fields.ForeignKeyNullableRelation[Task] = fields.ForeignKeyField(
        "settle.Task", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    task_id: uuid.UUID | None
    description = fields.CharField(max_length=1000, default="")
    work_date: date = fields.DateField()
    started_at = fields.DatetimeField(null=True)
    ended_at = fields.DatetimeField(null=True)
    # Rounded to the quarter hour; null while a timer runs.
    minutes: int | None = fields.IntField(null=True)
    # A partial unique index (migration 0004) allows one running timer per user.
    is_running = fields.BooleanField(default=False)
    billable = fields.BooleanField(default=True)
    # The project's rate when the time was logged, so later rate changes bill nothing twice.
    hourly_rate_minor: int | None = fields.BigIntField(null=True)
    currency = fields.CharField(max_length=3)
    # Set by invoicing; a billed entry is frozen.
    invoice_line_id: uuid.UUID | None = fields.UUIDField(null=True, db_index=True)

    class Meta:
        table = "time_entry"
        indexes = (("project_id", "work_date"), ("user_id", "work_date"))
