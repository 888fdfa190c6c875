"""CRM: clients, their contacts and notes."""

from __future__ import annotations

import uuid

from tortoise import fields

from settle.models.agency import User
from settle.models.base import TenantModel


class Client(TenantModel):
    name = fields.CharField(max_length=200)
    email = fields.CharField(max_length=254, null=True)
    phone = fields.CharField(max_length=40, null=True)
    address = fields.TextField(null=True)
    tax_id = fields.CharField(max_length=64, null=True)
    currency = fields.CharField(max_length=3)
    is_active = fields.BooleanField(default=True)
    deleted_at = fields.DatetimeField(null=True)
    # The client's id in another system (a CSV import matches on it); unique in the agency.
    external_id = fields.CharField(max_length=100, null=True)

    class Meta:
        table = "client"
        indexes = (("agency_id", "name"),)
        unique_together = (("agency_id", "external_id"),)


class Contact(TenantModel):
    client: fields.ForeignKeyRelation[Client] = fields.ForeignKeyField(
        "settle.Client", related_name="contacts", on_delete=fields.CASCADE, db_index=True
    )
    client_id: uuid.UUID
    name = fields.CharField(max_length=200)
    email = fields.CharField(max_length=254, null=True)
    phone = fields.CharField(max_length=40, null=True)
    title = fields.CharField(max_length=120, null=True)
    # A partial unique index (migration 0002) allows one true row per client.
    is_primary = fields.BooleanField(default=False)

    class Meta:
        table = "contact"


class Note(TenantModel):
    client: fields.ForeignKeyRelation[Client] = fields.ForeignKeyField(
        "settle.Client", related_name="notes", on_delete=fields.CASCADE
    )
    client_id: uuid.UUID
    author: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    author_id: uuid.UUID | None
    body = fields.TextField()
    pinned = fields.BooleanField(default=False)

    class Meta:
        table = "note"
        indexes = (("client_id", "pinned", "created_at"),)
