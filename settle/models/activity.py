"""The activity timeline: one row per create, update, delete or status change."""

from __future__ import annotations

import uuid
from typing import Any

from tortoise import fields
from tortoise.models import Model

from settle.models.agency import Agency, User
from settle.models.client import Client


class ActivityEvent(Model):
    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    agency: fields.ForeignKeyRelation[Agency] = fields.ForeignKeyField(
        "settle.Agency", related_name=False, on_delete=fields.RESTRICT
    )
    agency_id: uuid.UUID
    client: fields.ForeignKeyNullableRelation[Client] = fields.ForeignKeyField(
        "settle.Client", related_name=False, null=True, on_delete=fields.RESTRICT
    )
    client_id: uuid.UUID | None
    actor: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    actor_id: uuid.UUID | None
    entity_type = fields.CharField(max_length=40)
    entity_id = fields.UUIDField()
    verb = fields.CharField(max_length=40)
    summary = fields.CharField(max_length=500)
    changes: dict[str, Any] = fields.JSONField(default=dict)
    # The agency's own working (a draft being prepared): never shown to client users.
    internal = fields.BooleanField(default=False)
    created_at = fields.DatetimeField()

    class Meta:
        table = "activity_event"
        indexes = (("agency_id", "created_at"), ("client_id", "created_at"))
