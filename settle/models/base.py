"""Base models: UUID keys, timestamps, and the agency every domain row carries."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from settle.models.agency import Agency


class BaseModel(Model):
    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        abstract = True


class TenantModel(BaseModel):
    """A domain row owned by one agency; every query filters on ``agency_id``."""

    agency: fields.ForeignKeyRelation[Agency] = fields.ForeignKeyField(
        "settle.Agency", related_name=False, on_delete=fields.RESTRICT, db_index=True
    )
    agency_id: uuid.UUID

    class Meta:
        abstract = True
