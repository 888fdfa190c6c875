"""Deliverable resolvers: parse input, call the deliverable service, map the result."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

import strawberry

from settle.resolvers.common import (
    find_one,
    mutate,
    parse_id,
    public_errors,
    query,
    require_actor,
)
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.deliverable import (
    CreateDeliverableUploadInput,
    Deliverable,
    DeliverableFilter,
    DeliverableUpload,
    DownloadUrl,
)
from settle.schema.errors import (
    AccessLockedError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.services import deliverable as deliverable_service

log = logging.getLogger(__name__)

_Errors = ValidationError | NotFoundError | PermissionDeniedError | ConflictError
DeliverableResult = Annotated[Deliverable | _Errors, strawberry.union("DeliverableResult")]
DeliverableUploadResult = Annotated[
    DeliverableUpload | _Errors, strawberry.union("DeliverableUploadResult")
]
DownloadUrlResult = Annotated[
    DownloadUrl | AccessLockedError | NotFoundError | ConflictError | ValidationError,
    strawberry.union("DownloadUrlResult"),
]


async def deliverables(
    info: Info,
    first: int = 20,
    after: str | None = None,
    filter: DeliverableFilter | None = None,
) -> Connection[Deliverable]:
    """Deliverables the caller may see, newest first; locked ones say why in `locked`."""
    actor = require_actor(info)
    flt = filter or DeliverableFilter()
    with public_errors():
        project_id = (
            None if flt.project_id is None else parse_id(flt.project_id, "filter.projectId")
        )
        page = await deliverable_service.list_deliverables(
            actor,
            deliverable_service.DeliverableFilter(project_id=project_id, kind=flt.kind),
            first=first,
            after=after,
        )
    return Connection.from_page(page, Deliverable.from_model)


async def deliverable(info: Info, id: strawberry.ID) -> Deliverable | None:
    actor = require_actor(info)
    return await find_one(
        id,
        lambda row_id: deliverable_service.get_deliverable(actor, row_id),
        Deliverable.from_model,
    )


async def project_deliverables(info: Info, project_id: uuid.UUID) -> list[Deliverable]:
    """Project.deliverables, newest first: one query for a whole list of projects."""
    require_actor(info)
    rows = await info.context.loaders.project_deliverables.load(project_id)
    return [Deliverable.from_model(row) for row in rows]


async def deliverable_download_url(info: Info, id: strawberry.ID) -> DownloadUrlResult:
    actor = require_actor(info)

    async def run() -> DownloadUrl:
        return DownloadUrl.from_value(await deliverable_service.download_url(actor, parse_id(id)))

    return await query(run)  # type: ignore[return-value]


async def create_deliverable_upload(
    info: Info, input: CreateDeliverableUploadInput
) -> DeliverableUploadResult:
    actor = require_actor(info)
    values = {
        "title": input.title,
        "kind": input.kind,
        "filename": input.filename,
        "content_type": input.content_type,
        "size_bytes": input.size_bytes,
    }

    async def run() -> DeliverableUpload:
        milestone_id = (
            None if input.milestone_id is None else parse_id(input.milestone_id, "milestoneId")
        )
        return DeliverableUpload.from_value(
            await deliverable_service.create_upload(
                actor, parse_id(input.project_id, "projectId"), values, milestone_id=milestone_id
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def delete_deliverable(info: Info, id: strawberry.ID) -> DeliverableResult:
    actor = require_actor(info)

    async def run() -> Deliverable:
        return Deliverable.from_model(
            await deliverable_service.delete_deliverable(actor, parse_id(id))
        )

    result = await mutate(run)
    if isinstance(result, Deliverable):
        # Only now is the deletion committed. A file that cannot be removed stays an
        # orphan of a deleted row (nothing can reach it any more): log it, do not fail.
        try:
            await deliverable_service.discard_file(result._row)
        except OSError:
            log.exception("deliverable.discard_failed", extra={"deliverable_id": result.id})
    return result  # type: ignore[return-value]


@strawberry.type
class DeliverableQuery:
    deliverables: Connection[Deliverable] = strawberry.field(resolver=deliverables)
    deliverable: Deliverable | None = strawberry.field(resolver=deliverable)
    deliverable_download_url: DownloadUrlResult = strawberry.field(
        resolver=deliverable_download_url,
        description="A signed link to the file, valid for SETTLE_DOWNLOAD_URL_TTL_SECONDS "
        "(15 minutes); AccessLockedError says why a client user cannot have it yet.",
    )


@strawberry.type
class DeliverableMutation:
    create_deliverable_upload: DeliverableUploadResult = strawberry.mutation(
        resolver=create_deliverable_upload,
        description="Declare a file of a project and get the signed URL to PUT it to (members).",
    )
    delete_deliverable: DeliverableResult = strawberry.mutation(
        resolver=delete_deliverable,
        description="Delete a deliverable and its file (owners and admins).",
    )
