"""CSV import types: the import, its preview, its row errors and its progress."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry

from settle.core.pagination import DEFAULT_PAGE_SIZE
from settle.models import csv_import as models
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.deliverable import DownloadUrl
from settle.services import csv_import as service


@strawberry.enum(description="What a CSV file holds.")
class ImportEntity(Enum):
    CLIENTS = "clients"
    CONTACTS = "contacts"


@strawberry.enum
class ImportStatus(Enum):
    AWAITING_UPLOAD = "awaiting_upload"
    UPLOADED = "uploaded"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@strawberry.enum(description="What to do with a row that matches an existing client or contact.")
class ImportDuplicateAction(Enum):
    SKIP = "skip"
    UPDATE = "update"


@strawberry.enum
class ImportEncoding(Enum):
    UTF8 = "utf-8"
    UTF8_BOM = "utf-8-sig"
    WINDOWS_1252 = "cp1252"


@strawberry.type(description="An error of one row: `field` is the file's column, if any.")
class ImportRowError:
    row: int = strawberry.field(description="The row in the file; the header is row 1.")
    field: str | None
    code: str
    message: str

    @classmethod
    def from_model(cls, error: models.CsvImportError) -> ImportRowError:
        return cls(row=error.row, field=error.field, code=error.code, message=error.message)

    @classmethod
    def from_value(cls, row: int, error: service.FieldError) -> ImportRowError:
        return cls(row=row, field=error.field, code=error.code, message=error.message)


@strawberry.type(description="A column of the file and the field it fills (null: not imported).")
class ImportColumn:
    column: str
    target: str | None


@strawberry.input(description="Fill `target` (a field name such as `name`) from `column`.")
class ImportColumnInput:
    column: str
    target: str | None = strawberry.field(
        default=None, description="null or empty: the column is not imported."
    )


def columns(header: list[str], mapping: dict[str, str]) -> list[ImportColumn]:
    """Every column of the header with the target it fills (a column fills at most one)."""
    by_column = {column: target for target, column in mapping.items()}
    return [ImportColumn(column=column, target=by_column.get(column)) for column in header]


@strawberry.type
class Import:
    id: strawberry.ID
    entity: ImportEntity
    status: ImportStatus
    filename: str
    size_bytes: int
    on_duplicate: ImportDuplicateAction
    processed: int = strawberry.field(description="Data rows handled so far.")
    total: int | None = strawberry.field(description="Data rows in the file, once read.")
    created: int
    updated: int
    skipped: int
    failed: int
    failure_code: str | None = strawberry.field(
        description="Why the whole file failed (UNPARSEABLE_FILE, TOO_MANY_ROWS, ...)."
    )
    failure_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    _model: strawberry.Private[models.CsvImport]

    @classmethod
    def from_model(cls, row: models.CsvImport) -> Import:
        return cls(
            id=strawberry.ID(str(row.id)),
            entity=ImportEntity(row.entity.value),
            status=ImportStatus(row.status.value),
            filename=row.filename,
            size_bytes=row.size_bytes,
            on_duplicate=ImportDuplicateAction(row.on_duplicate.value),
            processed=row.rows_done,
            total=row.total_rows,
            created=row.created_count,
            updated=row.updated_count,
            skipped=row.skipped_count,
            failed=row.failed_count,
            failure_code=row.failure_code,
            failure_message=row.failure_message,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            _model=row,
        )

    @strawberry.field(description="The column each field is read from, as started.")
    def mapping(self) -> list[ImportColumn]:
        return columns(list(self._model.header or []), dict(self._model.mapping or {}))

    @strawberry.field(description="Errors of refused rows, by row.")
    async def errors(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[ImportRowError]:
        from settle.resolvers.csv_import import import_errors

        return await import_errors(info, self._model, first=first, after=after)

    @strawberry.field(
        description="A signed link to the refused rows as CSV (their cells and an `error` "
        "column); null while no row was refused."
    )
    def failed_rows_url(self, info: Info) -> DownloadUrl | None:
        from settle.resolvers.common import require_actor

        signed = service.failed_rows_url(require_actor(info), self._model)
        return None if signed is None else DownloadUrl(url=signed.url, expires_at=signed.expires_at)


@strawberry.type(
    description="Where to send the file: PUT its bytes to `uploadUrl` before `expiresAt`."
)
class ImportUpload:
    import_: Import = strawberry.field(name="import")
    upload_url: str
    expires_at: datetime


@strawberry.type(description="A data row of the preview: its cells and what is wrong with it.")
class ImportPreviewRow:
    row: int
    cells: list[str]
    errors: list[ImportRowError]


@strawberry.type
class ImportPreview:
    import_: Import = strawberry.field(name="import")
    encoding: ImportEncoding
    delimiter: str
    header: list[str]
    suggested_mapping: list[ImportColumn]
    mapping: list[ImportColumn] = strawberry.field(
        description="The mapping the rows were validated with: the one given, else the "
        "suggested one."
    )
    rows: list[ImportPreviewRow] = strawberry.field(description="The first 20 data rows.")

    @classmethod
    def from_value(cls, value: service.Preview) -> ImportPreview:
        return cls(
            import_=Import.from_model(value.csv_import),
            encoding=ImportEncoding(value.encoding.value),
            delimiter=value.delimiter,
            header=value.header,
            suggested_mapping=columns(value.header, value.suggested_mapping),
            mapping=columns(value.header, value.mapping),
            rows=[
                ImportPreviewRow(
                    row=row.row,
                    cells=row.cells,
                    errors=[ImportRowError.from_value(row.row, error) for error in row.errors],
                )
                for row in value.rows
            ],
        )


@strawberry.type(description="An import's progress, pushed as its batches commit.")
class ImportProgress:
    import_id: strawberry.ID
    status: ImportStatus
    processed: int
    total: int | None
    created: int
    updated: int
    skipped: int
    failed: int

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ImportProgress:
        return cls(
            import_id=strawberry.ID(message["importId"]),
            status=ImportStatus(message["status"]),
            processed=message["processed"],
            total=message["total"],
            created=message["created"],
            updated=message["updated"],
            skipped=message["skipped"],
            failed=message["failed"],
        )
