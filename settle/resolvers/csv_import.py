"""CSV import resolvers: parse input, call the import service, map the result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from settle.models import csv_import as models
from settle.resolvers.common import find_one, mutate, parse_id, public_errors, require_actor
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.csv_import import (
    Import,
    ImportColumnInput,
    ImportDuplicateAction,
    ImportEntity,
    ImportPreview,
    ImportRowError,
    ImportUpload,
)
from settle.schema.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.services import csv_import as csv_import_service

_Errors = ValidationError | NotFoundError | PermissionDeniedError | ConflictError
CreateImportResult = Annotated[ImportUpload | _Errors, strawberry.union("CreateImportResult")]
PreviewImportResult = Annotated[ImportPreview | _Errors, strawberry.union("PreviewImportResult")]
StartImportResult = Annotated[
    Import | _Errors | InvalidTransitionError, strawberry.union("StartImportResult")
]


@strawberry.input
class CreateImportInput:
    entity: ImportEntity
    filename: str
    size_bytes: int = strawberry.field(
        description="The file's exact size in bytes (at most SETTLE_IMPORT_MAX_BYTES)."
    )


def _choices(
    mapping: list[ImportColumnInput] | None,
) -> list[csv_import_service.ColumnChoice] | None:
    if mapping is None:
        return None
    return [csv_import_service.ColumnChoice(item.column, item.target) for item in mapping]


async def create_import(info: Info, input: CreateImportInput) -> CreateImportResult:
    actor = require_actor(info)

    async def run() -> ImportUpload:
        created = await csv_import_service.create_import(
            actor,
            models.ImportEntity(input.entity.value),
            filename=input.filename,
            size_bytes=input.size_bytes,
        )
        return ImportUpload(
            import_=Import.from_model(created.csv_import),
            upload_url=created.upload.url,
            expires_at=created.upload.expires_at,
        )

    return await mutate(run)  # type: ignore[return-value]


async def preview_import(
    info: Info, id: strawberry.ID, mapping: list[ImportColumnInput] | None = None
) -> PreviewImportResult:
    actor = require_actor(info)

    async def run() -> ImportPreview:
        value = await csv_import_service.preview(actor, parse_id(id), _choices(mapping))
        return ImportPreview.from_value(value)

    return await mutate(run)  # type: ignore[return-value]


async def start_import(
    info: Info,
    id: strawberry.ID,
    mapping: list[ImportColumnInput] | None = None,
    on_duplicate: ImportDuplicateAction = ImportDuplicateAction.SKIP,
) -> StartImportResult:
    actor = require_actor(info)

    async def run() -> Import:
        row = await csv_import_service.start(
            actor,
            parse_id(id),
            _choices(mapping),
            models.DuplicateAction(on_duplicate.value),
        )
        return Import.from_model(row)

    return await mutate(run)  # type: ignore[return-value]


async def import_(info: Info, id: strawberry.ID) -> Import | None:
    actor = require_actor(info)
    return await find_one(
        id, lambda row_id: csv_import_service.get_import(actor, row_id), Import.from_model
    )


async def imports(info: Info, first: int = 20, after: str | None = None) -> Connection[Import]:
    """The agency's imports, newest first (none for client users)."""
    actor = require_actor(info)
    with public_errors():
        page = await csv_import_service.list_imports(actor, first=first, after=after)
    return Connection.from_page(page, Import.from_model)


async def import_errors(
    info: Info, row: models.CsvImport, *, first: int, after: str | None
) -> Connection[ImportRowError]:
    """Import.errors: the imports of a list get their pages through one loader."""
    require_actor(info)
    loader = info.context.loaders.import_errors(first=first, after=after)
    with public_errors():
        page = await loader.load(row.id)
    return Connection.from_page(page, ImportRowError.from_model)


@strawberry.type
class CsvImportQuery:
    import_: Import | None = strawberry.field(
        name="import",
        resolver=import_,
        description="One import of the agency (null for client users and other agencies).",
    )
    imports: Connection[Import] = strawberry.field(resolver=imports)


@strawberry.type
class CsvImportMutation:
    create_import: CreateImportResult = strawberry.mutation(
        resolver=create_import,
        description="Start a CSV import of clients or contacts: returns the signed URL to PUT "
        "the file to (owners and admins; TOO_LARGE past SETTLE_IMPORT_MAX_BYTES).",
    )
    preview_import: PreviewImportResult = strawberry.mutation(
        resolver=preview_import,
        description="Read the uploaded file: its encoding, delimiter, header, a suggested "
        "mapping, and the first 20 rows validated with the API's rules (owners and admins).",
    )
    start_import: StartImportResult = strawberry.mutation(
        resolver=start_import,
        description="Import the uploaded file in the background with the mapping given (the "
        "suggested one when omitted); follow it with importProgress (owners and admins).",
    )
