"""Project resolvers: parse input, call the project service, map the result."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.types.unset import UnsetType

from settle.models.project import ProjectStatus as ProjectStatusModel
from settle.resolvers.common import (
    find_one,
    mutate,
    parse_id,
    provided,
    public_errors,
    require_actor,
)
from settle.schema.common import Connection, SortDirection
from settle.schema.context import Info
from settle.schema.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.schema.project import (
    CreateProjectInput,
    Project,
    ProjectFilter,
    ProjectOrder,
    ProjectOrderField,
    UpdateProjectInput,
)
from settle.services import project as project_service

_Errors = ValidationError | NotFoundError | PermissionDeniedError | ConflictError
ProjectResult = Annotated[Project | _Errors, strawberry.union("ProjectResult")]


def _status(value: Any) -> Any:
    """The model's status for a schema enum (UNSET and null pass through)."""
    if value is None or isinstance(value, UnsetType):
        return value
    return ProjectStatusModel(value.value)


async def projects(
    info: Info,
    first: int = 20,
    after: str | None = None,
    filter: ProjectFilter | None = None,
    order_by: ProjectOrder | None = None,
) -> Connection[Project]:
    """The agency's projects (a client user sees their client's); archived ones on request."""
    actor = require_actor(info)
    order = order_by or ProjectOrder()
    flt = filter or ProjectFilter()
    with public_errors():
        client_id = (
            parse_id(flt.client_id, "filter.clientId") if flt.client_id is not None else None
        )
        page = await project_service.list_projects(
            actor,
            project_service.ProjectFilter(
                client_id=client_id,
                status=_status(flt.status),
                search=flt.search,
                include_archived=flt.include_archived,
            ),
            first=first,
            after=after,
            order_by=project_service.ProjectOrderField(
                (order.field or ProjectOrderField.NAME).value
            ),
            descending=order.direction is SortDirection.DESC,
        )
    return Connection.from_page(page, Project.from_model)


async def project(info: Info, id: strawberry.ID) -> Project | None:
    """A project by id, archived or not; null when it does not exist or is not yours."""
    actor = require_actor(info)
    return await find_one(
        id, lambda row_id: project_service.get_project(actor, row_id), Project.from_model
    )


async def create_project(info: Info, input: CreateProjectInput) -> ProjectResult:
    actor = require_actor(info)
    values = {
        "name": input.name,
        "description": input.description,
        "status": _status(input.status),
        "start_date": input.start_date,
        "due_date": input.due_date,
        "budget": input.budget,
        "hourly_rate": input.hourly_rate,
        "billable": input.billable,
        "currency": input.currency,
        "advance_percent": input.advance_percent,
        "invoice_due_days": input.invoice_due_days,
        "notify_milestone_members": input.notify_milestone_members,
    }

    async def run() -> Project:
        return Project.from_model(
            await project_service.create_project(
                actor, parse_id(input.client_id, "clientId"), values
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def update_project(info: Info, id: strawberry.ID, input: UpdateProjectInput) -> ProjectResult:
    actor = require_actor(info)
    values = provided(
        {
            "name": input.name,
            "description": input.description,
            "status": _status(input.status),
            "start_date": input.start_date,
            "due_date": input.due_date,
            "budget": input.budget,
            "hourly_rate": input.hourly_rate,
            "billable": input.billable,
            "currency": input.currency,
            "advance_percent": input.advance_percent,
            "invoice_due_days": input.invoice_due_days,
            "notify_milestone_members": input.notify_milestone_members,
        }
    )

    async def run() -> Project:
        return Project.from_model(await project_service.update_project(actor, parse_id(id), values))

    return await mutate(run)  # type: ignore[return-value]


async def archive_project(info: Info, id: strawberry.ID) -> ProjectResult:
    actor = require_actor(info)

    async def run() -> Project:
        return Project.from_model(await project_service.archive_project(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class ProjectQuery:
    projects: Connection[Project] = strawberry.field(resolver=projects)
    project: Project | None = strawberry.field(resolver=project)


@strawberry.type
class ProjectMutation:
    create_project: ProjectResult = strawberry.mutation(resolver=create_project)
    update_project: ProjectResult = strawberry.mutation(resolver=update_project)
    archive_project: ProjectResult = strawberry.mutation(resolver=archive_project)
