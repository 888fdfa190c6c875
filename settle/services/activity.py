"""The activity timeline: record what happened, and read it back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Literal

from tortoise.queryset import QuerySet

from settle.core import clock
from settle.core.errors import ValidationError
from settle.core.money import Money
from settle.core.outbox import emit_event
from settle.core.pagination import Ordering, Page, paginate, paginate_each
from settle.core.tenancy import Actor, scoped
from settle.models.activity import ActivityEvent
from settle.subscriptions import channels

# Entity types client users never see on a timeline (agency-internal records).
INTERNAL_ENTITY_TYPES = frozenset({"note", "invitation", "user"})

Changes = dict[str, dict[str, Any]]


def diff(before: dict[str, Any], after: dict[str, Any]) -> Changes:
    """The fields that changed, as ``{field: {"before": ..., "after": ...}}`` in JSON types."""
    return {
        key: {"before": _jsonable(before.get(key)), "after": _jsonable(after.get(key))}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def with_amounts(
    data: dict[str, Any], currency: str, money_fields: dict[str, str]
) -> dict[str, Any]:
    """Model fields as a timeline shows them: minor-unit columns renamed and as decimal strings.

    ``money_fields`` maps each money column to its shown name (``amount_minor`` → ``amount``).
    """
    return {
        money_fields.get(key, key): (
            Money(value, currency).format_amount()
            if key in money_fields and value is not None
            else value
        )
        for key, value in data.items()
    }


def snapshot(values: dict[str, Any]) -> Changes:
    """A created entity's fields, as changes from nothing (empty fields did not change)."""
    return {
        key: {"before": None, "after": _jsonable(value)}
        for key, value in sorted(values.items())
        if value is not None
    }


async def record(
    actor: Actor | None,
    *,
    agency_id: uuid.UUID,
    entity_type: str,
    entity_id: uuid.UUID,
    verb: str,
    summary: str,
    client_id: uuid.UUID | None = None,
    changes: Changes | None = None,
    internal: bool = False,
) -> ActivityEvent:
    """Write a timeline event and, after commit, announce it on the agency's channel.

    An ``internal`` event (the agency's own working, such as a draft being
    prepared) is kept from client users, as are events of INTERNAL_ENTITY_TYPES.
    """
    event = await ActivityEvent.create(
        agency_id=agency_id,
        client_id=client_id,
        actor_id=actor.user_id if actor else None,
        entity_type=entity_type,
        entity_id=entity_id,
        verb=verb,
        summary=summary[:500],
        changes=changes or {},
        internal=internal or entity_type in INTERNAL_ENTITY_TYPES,
        created_at=clock.now(),
    )
    await emit_event(channels.activity(agency_id), to_message(event, actor))
    return event


def to_message(event: ActivityEvent, actor: Actor | None) -> dict[str, Any]:
    """The bus form of an event; subscribers build the API type from it without a query."""
    return {
        "id": str(event.id),
        "agencyId": str(event.agency_id),
        "clientId": str(event.client_id) if event.client_id else None,
        "actorId": str(actor.user_id) if actor else None,
        "actorName": actor.name if actor else None,
        "entityType": event.entity_type,
        "entityId": str(event.entity_id),
        "verb": event.verb,
        "summary": event.summary,
        "changes": event.changes,
        "internal": event.internal,
        "createdAt": event.created_at.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class TimelineFilter:
    client_id: uuid.UUID | None = None
    entity_types: tuple[str, ...] = ()
    entity_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


def visible_to(
    actor: Actor, event_client_id: uuid.UUID | None, entity_type: str, *, internal: bool = False
) -> bool:
    """Whether a client user may see an event (agency members see all of their agency's)."""
    if not actor.is_client_user:
        return True
    return (
        event_client_id == actor.client_id
        and not internal
        and entity_type not in INTERNAL_ENTITY_TYPES
    )


def timeline_query(actor: Actor, flt: TimelineFilter) -> QuerySet[ActivityEvent]:
    qs = scoped(ActivityEvent, actor)
    if actor.is_client_user:
        qs = qs.exclude(entity_type__in=list(INTERNAL_ENTITY_TYPES)).filter(internal=False)
    if flt.client_id is not None:
        qs = qs.filter(client_id=flt.client_id)
    if flt.entity_types:
        qs = qs.filter(entity_type__in=list(flt.entity_types))
    if flt.entity_id is not None:
        qs = qs.filter(entity_id=flt.entity_id)
    if flt.since and flt.until and flt.since > flt.until:
        raise ValidationError("filter.from", "from must not be after to", code="INVALID_RANGE")
    if flt.since is not None:
        qs = qs.filter(created_at__gte=flt.since)
    if flt.until is not None:
        qs = qs.filter(created_at__lte=flt.until)
    return qs


async def timeline(
    actor: Actor, flt: TimelineFilter, *, first: int | None, after: str | None
) -> Page[ActivityEvent]:
    """Timeline events the actor may see, newest first."""
    return await paginate(
        timeline_query(actor, flt),
        first=first,
        after=after,
        ordering=Ordering("created_at", descending=True),
    )


async def timelines(
    actor: Actor,
    flt: TimelineFilter,
    key: Literal["client_id", "entity_id"],
    keys: Sequence[uuid.UUID],
    *,
    first: int | None,
    after: str | None,
) -> dict[uuid.UUID, Page[ActivityEvent]]:
    """The timeline of each client or entity in ``keys``, newest first, in fixed queries."""
    return await paginate_each(
        timeline_query(actor, flt),
        key,
        keys,
        first=first,
        after=after,
        ordering=Ordering("created_at", descending=True),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value
