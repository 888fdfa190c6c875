"""Deliverables: files of a project, opened to the client by what it has paid."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

from settle.models.base import TenantModel

if TYPE_CHECKING:
    from settle.models.agency import User
    from settle.models.milestone import Milestone
    from settle.models.project import Project


class DeliverableKind(StrEnum):
    BETA = "beta"
    FINAL = "final"


class DeliverableStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"
    READY = "ready"


class Deliverable(TenantModel):
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "settle.Project", related_name="deliverables", on_delete=fields.RESTRICT, db_index=True
    )
    project_id: uuid.UUID
    client_id = fields.UUIDField(db_index=True)
    milestone: fields.ForeignKeyNullableRelation[Milestone] = fields.ForeignKeyField(
        "settle.Milestone", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    milestone_id: uuid.UUID | None
    title = fields.CharField(max_length=200)
    kind = fields.CharEnumField(DeliverableKind, max_length=10)
    status = fields.CharEnumField(
        DeliverableStatus, max_length=20, default=DeliverableStatus.AWAITING_UPLOAD
    )
    filename = fields.CharField(max_length=255)
    # Declared at upload creation; the upload must match it exactly.
    content_type = fields.CharField(max_length=127)
    size_bytes: int = fields.BigIntField()
    checksum_sha256 = fields.CharField(max_length=64, null=True)
    storage_key = fields.CharField(max_length=500, unique=True)
    uploaded_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    uploaded_by_id: uuid.UUID | None
    uploaded_at = fields.DatetimeField(null=True)
    download_count = fields.IntField(default=0)
    deleted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "deliverable"


class DeliverableDownload(Model):
    """One row per file served: who downloaded it, and when."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    agency_id = fields.UUIDField(db_index=True)
    deliverable: fields.ForeignKeyRelation[Deliverable] = fields.ForeignKeyField(
        "settle.Deliverable", related_name="downloads", on_delete=fields.CASCADE, db_index=True
    )
    deliverable_id: uuid.UUID
    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    user_id: uuid.UUID | None
    created_at = fields.DatetimeField()

    class Meta:
        table = "deliverable_download"
