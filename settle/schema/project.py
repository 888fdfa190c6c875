"""Project types: projects, their payment terms and statistics."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.core.errors import NotFoundError
from settle.core.pagination import DEFAULT_PAGE_SIZE
from settle.models import project as models
from settle.schema.client import Client
from settle.schema.common import Connection, Money, SortDirection
from settle.schema.context import Info
from settle.services import project as project_service

if TYPE_CHECKING:
    from settle.schema.deliverable import Deliverable
    from settle.schema.milestone import Milestone
    from settle.schema.task import Task
    from settle.schema.time_entry import TimeEntry

AMOUNT_DESCRIPTION = 'Decimal amount in the project\'s currency, e.g. "12500.00"; null for none.'


@strawberry.enum
class ProjectStatus(Enum):
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@strawberry.type(description="Hours as decimal strings with two places (minutes / 60).")
class ProjectHours:
    billable: str
    non_billable: str
    total: str


@strawberry.type
class ProjectMilestoneTotals:
    paid: Money = strawberry.field(description="Amount paid on the project's milestones.")
    approved_unpaid: Money = strawberry.field(
        description="What approved milestones still owe (their amount less any part paid)."
    )
    pending: Money = strawberry.field(
        description="Milestones pending, in progress or submitted: not yet approved."
    )


@strawberry.type
class ProjectStatistics:
    hours_logged: ProjectHours = strawberry.field(description="Stopped timers and logged time.")
    billable_amount: Money = strawberry.field(
        description="Billable time at the rates it was logged at, each entry rounded half up."
    )
    budget: Money | None
    budget_used: Money = strawberry.field(description="The billable amount, against the budget.")
    budget_used_percent: str | None = strawberry.field(
        description='Budget used as a percentage, one decimal place ("82.5"); null without budget.'
    )
    task_completion_percent: str | None = strawberry.field(
        description="Completed tasks as a percentage of all, one decimal place; null without tasks."
    )
    milestone_totals: ProjectMilestoneTotals

    @classmethod
    def from_value(cls, stats: project_service.ProjectStatistics) -> ProjectStatistics:
        def money(minor: int) -> Money:
            return Money.from_value(stats.money(minor))

        billable = money(stats.billable_amount_minor)
        return cls(
            hours_logged=ProjectHours(
                billable=project_service.hours(stats.billable_minutes),
                non_billable=project_service.hours(stats.non_billable_minutes),
                total=project_service.hours(stats.total_minutes),
            ),
            billable_amount=billable,
            budget=None if stats.budget_minor is None else money(stats.budget_minor),
            budget_used=billable,
            budget_used_percent=stats.budget_used_percent,
            task_completion_percent=stats.task_completion_percent,
            milestone_totals=ProjectMilestoneTotals(
                paid=money(stats.milestones_paid_minor),
                approved_unpaid=money(stats.milestones_approved_unpaid_minor),
                pending=money(stats.milestones_pending_minor),
            ),
        )


def _money(minor: int | None, currency: str) -> Money | None:
    return None if minor is None else Money.of(minor, currency)


@strawberry.type
class Project:
    id: strawberry.ID
    client_id: strawberry.ID
    name: str
    description: str | None
    status: ProjectStatus
    start_date: date | None
    due_date: date | None
    currency: str = strawberry.field(description="ISO 4217 code of every amount of the project.")
    budget: Money | None
    hourly_rate: Money | None
    billable: bool
    advance_percent: int = strawberry.field(
        description="Payment terms: whole percent of the total paid in advance (0-100)."
    )
    invoice_due_days: int = strawberry.field(
        description="Payment terms: days an invoice is due after it is sent."
    )
    notify_milestone_members: bool = strawberry.field(
        description="Payment received, payment failed and invoice upload reminders go to the "
        "member who submitted each paid milestone as well as to the owners and admins."
    )
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, project: models.Project) -> Project:
        return cls(
            id=strawberry.ID(str(project.id)),
            client_id=strawberry.ID(str(project.client_id)),
            name=project.name,
            description=project.description,
            status=ProjectStatus(project.status.value),
            start_date=project.start_date,
            due_date=project.due_date,
            currency=project.currency,
            budget=_money(project.budget_minor, project.currency),
            hourly_rate=_money(project.hourly_rate_minor, project.currency),
            billable=project.billable,
            advance_percent=project.advance_percent,
            invoice_due_days=project.invoice_due_days,
            notify_milestone_members=project.notify_milestone_members,
            archived_at=project.archived_at,
            created_at=project.created_at,
            updated_at=project.updated_at,
        )

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(str(self.id))

    @strawberry.field
    async def client(self, info: Info) -> Client | None:
        row = await info.context.loaders.client.load(uuid.UUID(str(self.client_id)))
        return Client.from_model(row) if row else None

    @strawberry.field(description="The project's tasks in their order.")
    async def tasks(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Annotated[Task, strawberry.lazy("settle.schema.task")]]:
        from settle.resolvers.task import project_tasks

        return await project_tasks(info, self.uuid, first=first, after=after)

    @strawberry.field(description="Time logged on the project, newest work date first.")
    async def time_entries(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Annotated[TimeEntry, strawberry.lazy("settle.schema.time_entry")]]:
        from settle.resolvers.time_entry import project_time_entries

        return await project_time_entries(info, self.uuid, first=first, after=after)

    @strawberry.field(description="The payment stages of the project, in their order.")
    async def milestones(
        self, info: Info
    ) -> list[Annotated[Milestone, strawberry.lazy("settle.schema.milestone")]]:
        from settle.resolvers.milestone import project_milestones

        return await project_milestones(info, self.uuid)

    @strawberry.field(description="Files delivered for the project.")
    async def deliverables(
        self, info: Info
    ) -> list[Annotated[Deliverable, strawberry.lazy("settle.schema.deliverable")]]:
        from settle.resolvers.deliverable import project_deliverables

        return await project_deliverables(info, self.uuid)

    @strawberry.field(description="Time, money and progress; batched across a list of projects.")
    async def statistics(self, info: Info) -> ProjectStatistics:
        stats = await info.context.loaders.project_statistics.load(self.uuid)
        if stats is None:
            raise NotFoundError("Project", self.uuid)
        return ProjectStatistics.from_value(stats)


@strawberry.input
class CreateProjectInput:
    client_id: strawberry.ID
    name: str
    description: str | None = None
    status: ProjectStatus = ProjectStatus.ACTIVE
    start_date: date | None = None
    due_date: date | None = None
    budget: str | None = strawberry.field(default=None, description=AMOUNT_DESCRIPTION)
    hourly_rate: str | None = strawberry.field(default=None, description=AMOUNT_DESCRIPTION)
    billable: bool = True
    currency: str | None = strawberry.field(
        default=None, description="ISO 4217 code; the client's currency when omitted."
    )
    advance_percent: int = strawberry.field(
        default=project_service.DEFAULT_ADVANCE_PERCENT,
        description="0-100; only an owner or admin may set another value than the default.",
    )
    invoice_due_days: int = strawberry.field(
        default=project_service.DEFAULT_INVOICE_DUE_DAYS,
        description="0-365; only an owner or admin may set another value than the default.",
    )
    notify_milestone_members: bool = strawberry.field(
        default=project_service.DEFAULT_NOTIFY_MILESTONE_MEMBERS,
        description="Only an owner or admin may set another value than the default.",
    )


@strawberry.input
class UpdateProjectInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    status: ProjectStatus | None = strawberry.UNSET
    start_date: date | None = strawberry.UNSET
    due_date: date | None = strawberry.UNSET
    budget: str | None = strawberry.field(default=strawberry.UNSET, description=AMOUNT_DESCRIPTION)
    hourly_rate: str | None = strawberry.field(
        default=strawberry.UNSET, description=AMOUNT_DESCRIPTION
    )
    billable: bool | None = strawberry.UNSET
    currency: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Only while the project has no milestones and no time entries.",
    )
    advance_percent: int | None = strawberry.field(
        default=strawberry.UNSET, description="Owner or admin only."
    )
    invoice_due_days: int | None = strawberry.field(
        default=strawberry.UNSET, description="Owner or admin only."
    )
    notify_milestone_members: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Owner or admin only."
    )


@strawberry.input
class ProjectFilter:
    client_id: strawberry.ID | None = None
    status: ProjectStatus | None = None
    search: str | None = strawberry.field(default=None, description="Matches name or description.")
    include_archived: bool = False


@strawberry.enum
class ProjectOrderField(Enum):
    NAME = "name"
    CREATED_AT = "created_at"
    DUE_DATE = "due_date"


@strawberry.input
class ProjectOrder:
    field: ProjectOrderField = strawberry.field(
        default=ProjectOrderField.NAME,
        description="DUE_DATE puts projects without a due date last, in either direction.",
    )
    direction: SortDirection = SortDirection.ASC
