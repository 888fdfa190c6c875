"""CSV imports of clients and contacts: the file, its progress and the rows it refused."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from tortoise import fields

from settle.models.agency import User
from settle.models.base import TenantModel


class ImportEntity(StrEnum):
    CLIENTS = "clients"
    CONTACTS = "contacts"


class ImportStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"
    UPLOADED = "uploaded"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class DuplicateAction(StrEnum):
    SKIP = "skip"
    UPDATE = "update"


class CsvImport(TenantModel):
    """One CSV file imported by a user: the mapping, counters and the checkpoint of its job.

    ``rows_done`` is the checkpoint: the data rows handled by committed batches, written
    in the same transaction as the rows they created, so a job that starts again
    skips exactly those.
    """

    created_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    created_by_id: uuid.UUID | None
    entity = fields.CharEnumField(ImportEntity, max_length=20)
    status = fields.CharEnumField(ImportStatus, max_length=20, default=ImportStatus.AWAITING_UPLOAD)
    filename = fields.CharField(max_length=255)
    size_bytes = fields.IntField()
    storage_key = fields.CharField(max_length=500)
    uploaded_at = fields.DatetimeField(null=True)
    # What the file turned out to be (set by the first preview or start).
    encoding = fields.CharField(max_length=20, null=True)
    delimiter = fields.CharField(max_length=4, null=True)
    header: list[str] | None = fields.JSONField(null=True)
    # The column each target field is read from, as started ({"name": "Company", ...}).
    mapping: dict[str, Any] | None = fields.JSONField(null=True)
    on_duplicate = fields.CharEnumField(
        DuplicateAction, max_length=10, default=DuplicateAction.SKIP
    )
    total_rows = fields.IntField(null=True)
    rows_done = fields.IntField(default=0)
    created_count = fields.IntField(default=0)
    updated_count = fields.IntField(default=0)
    skipped_count = fields.IntField(default=0)
    failed_count = fields.IntField(default=0)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    # Why a whole file failed (UNPARSEABLE_FILE, TOO_MANY_ROWS, ...); rows have their own.
    failure_code = fields.CharField(max_length=40, null=True)
    failure_message = fields.CharField(max_length=500, null=True)

    class Meta:
        table = "csv_import"
        indexes = (("agency_id", "created_at"), ("status", "updated_at"))


class CsvImportFailedRow(TenantModel):
    """A data row the import refused, with its cells as read, for the failed-rows file."""

    csv_import: fields.ForeignKeyRelation[CsvImport] = fields.ForeignKeyField(
        "settle.CsvImport", related_name=False, on_delete=fields.CASCADE
    )
    csv_import_id: uuid.UUID
    row = fields.IntField()
    cells: list[str] = fields.JSONField()

    class Meta:
        table = "csv_import_failed_row"
        unique_together = (("csv_import_id", "row"),)


class CsvImportError(TenantModel):
    """One error of a refused row: the column it concerns, a stable code and a message."""

    csv_import: fields.ForeignKeyRelation[CsvImport] = fields.ForeignKeyField(
        "settle.CsvImport", related_name=False, on_delete=fields.CASCADE
    )
    csv_import_id: uuid.UUID
    row = fields.IntField()
    field = fields.CharField(max_length=200, null=True)
    code = fields.CharField(max_length=40)
    message = fields.CharField(max_length=500)

    class Meta:
        table = "csv_import_error"
        indexes = (("csv_import_id", "row"),)
