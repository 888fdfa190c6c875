"""The outbox: side effects written in the same transaction as the change."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class OutboxKind(StrEnum):
    EVENT = "event"  # published on the event bus
    JOB = "job"  # sent to a Dramatiq actor


class OutboxMessage(Model):
    id = fields.BigIntField(primary_key=True)
    kind = fields.CharEnumField(OutboxKind, max_length=10)
    # The bus channel for events, the actor name for jobs.
    topic = fields.CharField(max_length=200)
    payload: dict[str, Any] = fields.JSONField()
    created_at = fields.DatetimeField()
    published_at = fields.DatetimeField(null=True)
    attempts = fields.IntField(default=0)
    last_error = fields.TextField(null=True)

    class Meta:
        table = "outbox_message"
        indexes = (("published_at", "id"),)
