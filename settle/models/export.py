"""CSV exports: one row per export a user asked for, and the file it produced."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from tortoise import fields

from settle.models.agency import User
from settle.models.base import TenantModel


class ExportEntity(StrEnum):
    CLIENTS = "clients"
    CONTACTS = "contacts"
    INVOICES = "invoices"
    PAYMENTS = "payments"
    TIME_ENTRIES = "time_entries"


class ExportStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    # Completed, and its file deleted once kept for ``export_retention_seconds``.
    EXPIRED = "expired"


class Export(TenantModel):
    """A CSV export of one entity: a worker writes it to storage, a signed URL serves it."""

    requested_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    requested_by_id: uuid.UUID | None
    # The client of a client user who asked (their export holds only that client's rows).
    client_id = fields.UUIDField(null=True, db_index=True)
    entity = fields.CharEnumField(ExportEntity, max_length=20)
    # The columns, in order, and the filter as given (ids and ISO dates as strings).
    columns: list[str] = fields.JSONField(default=list)
    filters: dict[str, Any] = fields.JSONField(default=dict)
    status = fields.CharEnumField(ExportStatus, max_length=20, default=ExportStatus.PENDING)
    rows = fields.IntField(default=0)
    total_rows: int | None = fields.IntField(null=True)
    # Each run writes a new object (named after its attempt), so a run that died never
    # leaves a partial file under the key a later run completes.
    attempt = fields.IntField(default=0)
    heartbeat_at = fields.DatetimeField(null=True)
    file_key = fields.CharField(max_length=500, null=True)
    size_bytes: int | None = fields.BigIntField(null=True)
    error = fields.TextField(null=True)
    error_code = fields.CharField(max_length=40, null=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "export"
        indexes = (("agency_id", "created_at"), ("status", "updated_at"))
