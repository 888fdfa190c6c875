"""The timeline service: what an event records, who sees it, and that rollbacks leave none."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from settle.core import clock
from settle.core.errors import ValidationError
from settle.core.outbox import transaction
from settle.core.tenancy import Actor
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.outbox import OutboxMessage
from settle.services import activity
from settle.services import client as client_service
from tests.conftest import Backend
from tests.fixtures.factories import (
    Account,
    create_client,
    create_contact,
    create_note,
    create_user,
)

CLIENT_ID = uuid.UUID("5d0c2b1e-6f4a-4e8b-9c3d-2a1b0c9d8e7f")


def test_diff_keeps_only_changed_fields_in_json_types() -> None:
    # given values before and after, some unchanged, some of non-JSON types
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    before = {"name": "Acme", "email": None, "amount": Decimal("1.50"), "due": date(2026, 1, 1)}
    after = {"name": "Acme", "email": "a@acme.com", "amount": Decimal("2.00"), "at": when}
    # when they are compared
    changes = activity.diff(before, after)
    # then only the changed fields remain, as JSON-ready values
    assert changes == {
        "amount": {"before": "1.50", "after": "2.00"},
        "at": {"before": None, "after": "2026-01-02T03:04:05+00:00"},
        "due": {"before": "2026-01-01", "after": None},
        "email": {"before": None, "after": "a@acme.com"},
    }
    assert activity.diff({"a": 1}, {"a": 1}) == {}


def test_snapshot_leaves_out_empty_fields() -> None:
    # given a created entity's fields, some of them empty
    changes = activity.snapshot({"name": "Acme", "email": None, "id": CLIENT_ID, "ok": False})
    # then every field with a value is recorded as coming from nothing
    assert changes == {
        "id": {"before": None, "after": str(CLIENT_ID)},
        "name": {"before": None, "after": "Acme"},
        "ok": {"before": None, "after": False},
    }


def _actor(role: Role, client_id: uuid.UUID | None = None) -> Actor:
    return Actor(
        user_id=uuid.uuid4(),
        agency_id=uuid.uuid4(),
        role=role,
        client_id=client_id,
        name="Someone",
        email="someone@example.com",
    )


def test_visible_to() -> None:
    # given a member and a lead of one client
    member = _actor(Role.MEMBER)
    lead = _actor(Role.CLIENT_LEAD, CLIENT_ID)
    other = uuid.uuid4()
    # then the member sees everything of the agency
    assert activity.visible_to(member, other, "note")
    assert activity.visible_to(member, None, "invitation")
    # and the lead only their client's non-internal events
    assert activity.visible_to(lead, CLIENT_ID, "client")
    assert activity.visible_to(lead, CLIENT_ID, "contact")
    assert not activity.visible_to(lead, CLIENT_ID, "note")
    assert not activity.visible_to(lead, CLIENT_ID, "invitation")
    assert not activity.visible_to(lead, other, "client")
    assert not activity.visible_to(lead, None, "agency")


async def test_record_writes_the_event_and_its_outbox_message(db: Backend, owner: Account) -> None:
    # given a client
    client = await create_client(owner, name="Acme")
    entity_id = uuid.uuid4()
    # when an event is recorded inside a transaction
    async with transaction():
        event = await activity.record(
            owner.actor,
            agency_id=owner.agency_id,
            client_id=client.id,
            entity_type="client",
            entity_id=entity_id,
            verb="updated",
            summary="x" * 600,
            changes={"name": {"before": "A", "after": "B"}},
        )
    # then it is stored with its actor, and the summary is cut to fit
    row = await ActivityEvent.get(id=event.id)
    assert (row.actor_id, row.agency_id, row.client_id, row.entity_id, row.verb) == (
        owner.user.id,
        owner.agency_id,
        client.id,
        entity_id,
        "updated",
    )
    assert row.summary == "x" * 500
    # and the message the bus carries says the same
    [message] = [m for m in await OutboxMessage.all() if m.payload.get("id") == str(event.id)]
    assert message.payload == activity.to_message(event, owner.actor)
    assert message.payload["actorName"] == "Olive Owner"
    assert message.payload["changes"] == {"name": {"before": "A", "after": "B"}}


async def test_rolled_back_change_leaves_no_event(db: Backend, owner: Account) -> None:
    # given an agency's current events and outbox
    events = await ActivityEvent.all().count()
    messages = await OutboxMessage.all().count()

    # when a client is created but its transaction fails afterwards
    class Boom(Exception):
        pass

    async def create_then_fail() -> None:
        async with transaction():
            await client_service.create_client(owner.actor, {"name": "Ghost"})
            raise Boom

    with pytest.raises(Boom):
        await create_then_fail()
    # then neither the client, nor its event, nor the message announcing it exist
    assert await Client.filter(name="Ghost").count() == 0
    assert await ActivityEvent.all().count() == events
    assert await OutboxMessage.all().count() == messages


async def test_timeline_filters_and_scope(db: Backend, owner: Account, rival: Account) -> None:
    # given events at known times on two clients, and one in another agency
    start = datetime(2099, 5, 1, 12, 0, tzinfo=UTC)
    now = [start]
    clock.set_clock(lambda: now[0])
    try:
        acme = await create_client(owner, name="Acme")
        now[0] = start + timedelta(hours=1)
        await create_contact(owner, acme, name="Ann")
        now[0] = start + timedelta(hours=2)
        await create_note(owner, acme, "internal")
        now[0] = start + timedelta(hours=3)
        blue = await create_client(owner, name="Blue")
        await create_client(rival, name="Rival")
    finally:
        clock.set_clock(None)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=acme)

    async def verbs(actor: Actor, **kw: object) -> list[tuple[str, str]]:
        flt = activity.TimelineFilter(since=start, **kw)  # type: ignore[arg-type]
        page = await activity.timeline(actor, flt, first=100, after=None)
        assert page.total_count == len(page.items)
        return [(e.entity_type, e.summary) for e in page.items]

    # then the owner sees the agency's events newest first
    assert await verbs(owner.actor) == [
        ("client", "Client Blue created"),
        ("note", "Olive Owner added a note to Acme"),
        ("contact", "Contact Ann added to Acme"),
        ("client", "Client Acme created"),
    ]
    # filtered by client, entity type and (inclusive) time range
    assert await verbs(owner.actor, client_id=blue.id) == [("client", "Client Blue created")]
    assert await verbs(owner.actor, entity_types=("contact", "note")) == [
        ("note", "Olive Owner added a note to Acme"),
        ("contact", "Contact Ann added to Acme"),
    ]
    assert await verbs(owner.actor, until=start + timedelta(hours=1)) == [
        ("contact", "Contact Ann added to Acme"),
        ("client", "Client Acme created"),
    ]
    # the lead sees only Acme's events, without the note
    assert await verbs(lead.actor) == [
        ("contact", "Contact Ann added to Acme"),
        ("client", "Client Acme created"),
    ]
    assert await verbs(lead.actor, client_id=blue.id) == []
    # the rival sees only their own
    assert await verbs(rival.actor) == [("client", "Client Rival created")]
    # and a reversed range is a validation error on `filter.from`
    with pytest.raises(ValidationError) as caught:
        await verbs(owner.actor, until=start - timedelta(seconds=1))
    assert (caught.value.field, caught.value.code) == ("filter.from", "INVALID_RANGE")
