"""The activity timeline as the API shows it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.utils.str_converters import to_camel_case

from settle.models.activity import ActivityEvent as ActivityEventModel
from settle.schema.auth import User
from settle.schema.client import Client
from settle.schema.common import CURSOR_DESCRIPTION
from settle.schema.context import Info


@strawberry.type
class FieldChange:
    field: str
    before: JSON | None
    after: JSON | None


@strawberry.type
class ActivityEvent:
    id: strawberry.ID
    entity_type: str
    entity_id: strawberry.ID
    verb: str
    summary: str
    created_at: datetime
    client_id: strawberry.ID | None
    actor_id: strawberry.ID | None
    _changes: strawberry.Private[dict[str, Any]]
    cursor: str | None = strawberry.field(
        default=None,
        description=CURSOR_DESCRIPTION + " Only on events pushed by activityAdded.",
    )

    @classmethod
    def from_model(cls, event: ActivityEventModel) -> ActivityEvent:
        return cls(
            id=strawberry.ID(str(event.id)),
            entity_type=event.entity_type,
            entity_id=strawberry.ID(str(event.entity_id)),
            verb=event.verb,
            summary=event.summary,
            created_at=event.created_at,
            client_id=strawberry.ID(str(event.client_id)) if event.client_id else None,
            actor_id=strawberry.ID(str(event.actor_id)) if event.actor_id else None,
            _changes=event.changes or {},
        )

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ActivityEvent:
        """Build from the bus form (services.activity.to_message) without a query."""
        return cls(
            id=strawberry.ID(message["id"]),
            entity_type=message["entityType"],
            entity_id=strawberry.ID(message["entityId"]),
            verb=message["verb"],
            summary=message["summary"],
            created_at=datetime.fromisoformat(message["createdAt"]),
            client_id=strawberry.ID(message["clientId"]) if message.get("clientId") else None,
            actor_id=strawberry.ID(message["actorId"]) if message.get("actorId") else None,
            _changes=message.get("changes") or {},
            cursor=message.get("cursor"),
        )

    @strawberry.field(
        description="Changed fields, named as in the API, with their values before and after."
    )
    def changes(self) -> list[FieldChange]:
        # Events store model field names; the API shows the names a client sends
        # and sees elsewhere (`taxId`, like ValidationError.field), not `tax_id`.
        changes = ((to_camel_case(name), change) for name, change in self._changes.items())
        return [
            FieldChange(field=name, before=change.get("before"), after=change.get("after"))
            for name, change in sorted(changes, key=lambda item: item[0])
        ]

    @strawberry.field
    async def actor(self, info: Info) -> User | None:
        if self.actor_id is None:
            return None
        user = await info.context.loaders.user.load(uuid.UUID(str(self.actor_id)))
        return User.from_model(user) if user else None

    @strawberry.field
    async def client(self, info: Info) -> Client | None:
        if self.client_id is None:
            return None
        client = await info.context.loaders.client.load(uuid.UUID(str(self.client_id)))
        return Client.from_model(client) if client else None


@strawberry.input
class TimelineFilter:
    entity_types: list[str] | None = strawberry.field(
        default=None, description='Only these entity types, e.g. ["client", "contact"].'
    )
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = None
    client_id: strawberry.ID | None = None
