"""CSV export resolvers: parse input, call the export service, map the result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from settle.core.pagination import DEFAULT_PAGE_SIZE
from settle.models.export import ExportEntity as EntityValue
from settle.resolvers.common import find_one, mutate, parse_id, public_errors, require_actor
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.errors import NotFoundError, PermissionDeniedError, ValidationError
from settle.schema.export import CreateExportInput, Export, ExportFilterInput
from settle.services import export as export_service

ExportResult = Annotated[
    Export | ValidationError | NotFoundError | PermissionDeniedError,
    strawberry.union("ExportResult"),
]


async def exports(
    info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
) -> Connection[Export]:
    """The exports the caller may see, newest first."""
    actor = require_actor(info)
    with public_errors():
        page = await export_service.list_exports(actor, first=first, after=after)
    return Connection.from_page(page, lambda row: Export.from_model(row, actor))


async def export(info: Info, id: strawberry.ID) -> Export | None:
    actor = require_actor(info)
    return await find_one(
        id,
        lambda row_id: export_service.get_export(actor, row_id),
        lambda row: Export.from_model(row, actor),
    )


def _filter(flt: ExportFilterInput | None) -> export_service.ExportFilter:
    if flt is None:
        return export_service.ExportFilter()
    return export_service.ExportFilter(
        date_from=flt.from_,
        date_to=flt.to,
        client_id=None if flt.client_id is None else parse_id(flt.client_id, "filter.clientId"),
        project_id=(
            None if flt.project_id is None else parse_id(flt.project_id, "filter.projectId")
        ),
        status=flt.status,
    )


async def create_export(info: Info, input: CreateExportInput) -> ExportResult:
    actor = require_actor(info)

    async def run() -> Export:
        row = await export_service.create_export(
            actor, EntityValue(input.entity), input.fields, _filter(input.filter)
        )
        return Export.from_model(row, actor)

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class ExportQuery:
    exports: Connection[Export] = strawberry.field(
        resolver=exports,
        description="CSV exports the caller may see, newest first: every export of the agency "
        "for its members; a client user's, those of their own client.",
    )
    export: Export | None = strawberry.field(
        resolver=export,
        description="An export by id; null when it does not exist or is not yours to see.",
    )


@strawberry.type
class ExportMutation:
    create_export: ExportResult = strawberry.mutation(
        resolver=create_export,
        description="Queue a CSV export of one entity; a worker writes it (follow it with "
        "exportProgress) and Export.url then downloads it. Client users export only their own "
        "client's issued invoices and payments (PERMISSION_DENIED for anything else). "
        "UNKNOWN_FIELD, DUPLICATE_FIELD, NO_FIELDS, INVALID_FILTER, INVALID_RANGE or "
        "EXPORT_TOO_LARGE for a request that cannot be met; NOT_FOUND for a client or project "
        "the caller may not see.",
    )
