"""The client service: the rules GraphQL tests cannot race, and the database's last word."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
from tortoise.exceptions import IntegrityError

from settle.core.errors import NotFoundError, PermissionDeniedError, ValidationError
from settle.core.outbox import transaction
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client, Contact, Note
from settle.services import client as client_service
from tests.conftest import Backend
from tests.fixtures.factories import (
    Account,
    create_client,
    create_contact,
    create_note,
    create_user,
)


async def _primary_ids(client: Client) -> list[uuid.UUID]:
    return list(
        await Contact.filter(client_id=client.id, is_primary=True).values_list("id", flat=True)
    )


async def _set_primary(account: Account, contact_id: uuid.UUID) -> Contact:
    async with transaction():
        return await client_service.set_primary_contact(account.actor, contact_id)


async def _create_primary(account: Account, client: Client, name: str) -> Contact:
    async with transaction():
        return await client_service.create_contact(
            account.actor, client.id, {"name": name}, primary=True
        )


async def _create(account: Account, client: Client, name: str) -> Contact:
    async with transaction():
        return await client_service.create_contact(account.actor, client.id, {"name": name})


async def test_racing_primary_changes_leave_exactly_one_primary(
    db: Backend, owner: Account
) -> None:
    # given a client with ten contacts (the first is primary)
    # (on SQLite the transactions queue on the one connection; on PostgreSQL they
    # really run at once and the client row lock serialises them)
    client = await create_client(owner, name="Acme")
    contacts = [await create_contact(owner, client, name=f"Contact {i}") for i in range(10)]
    assert await _primary_ids(client) == [contacts[0].id]
    # when ten requests each make a different contact primary while five more
    # create new contacts as primary, all at once, each in its own transaction
    results = await asyncio.gather(
        *(_set_primary(owner, contact.id) for contact in contacts),
        *(_create_primary(owner, client, f"New {i}") for i in range(5)),
    )
    # then every call succeeded and said its contact is primary
    assert all(result.is_primary for result in results)
    # and the database holds all fifteen contacts with exactly one primary
    assert await Contact.filter(client_id=client.id).count() == 15
    primaries = await _primary_ids(client)
    assert len(primaries) == 1
    # and it is the contact of the last primary change that committed
    last = (
        await ActivityEvent.filter(client_id=client.id, entity_type="contact")
        .filter(verb__in=["primary_changed", "created"])
        .order_by("-created_at", "-id")
    )
    last_primary = next(
        event
        for event in last
        if event.verb == "primary_changed" or event.changes.get("is_primary", {}).get("after")
    )
    assert primaries == [last_primary.entity_id]


async def test_racing_first_contacts_make_exactly_one_primary(db: Backend, owner: Account) -> None:
    # given a client without contacts
    client = await create_client(owner, name="Acme")
    # when eight contacts are added at once, none asking to be primary
    created = await asyncio.gather(*(_create(owner, client, f"Contact {i}") for i in range(8)))
    # then the one that got there first is primary, and only that one
    primaries = await _primary_ids(client)
    assert len(primaries) == 1
    assert [c.id for c in created if c.is_primary] == primaries
    assert await Contact.filter(client_id=client.id).count() == 8


async def test_partial_unique_index_rejects_a_second_primary(db: Backend, owner: Account) -> None:
    # given two clients, each with a primary and a second contact
    acme = await create_client(owner, name="Acme")
    blue = await create_client(owner, name="Blue")
    ann = await create_contact(owner, acme, name="Ann")
    bob = await create_contact(owner, acme, name="Bob")
    cat = await create_contact(owner, blue, name="Cat")
    assert (ann.is_primary, bob.is_primary, cat.is_primary) == (True, False, True)
    # when the service is bypassed and a second primary is written directly
    with pytest.raises(IntegrityError):
        async with transaction():
            await Contact.filter(id=bob.id).update(is_primary=True)
    # or both contacts of the client are made primary in one statement
    with pytest.raises(IntegrityError):
        async with transaction():
            await Contact.filter(client_id=acme.id).update(is_primary=True)
    # or a primary contact is inserted beside the existing one
    with pytest.raises(IntegrityError):
        async with transaction():
            await Contact.create(
                agency_id=owner.agency_id, client_id=acme.id, name="Dan", is_primary=True
            )
    # then the database refused each: still one primary per client
    assert await _primary_ids(acme) == [ann.id]
    assert await _primary_ids(blue) == [cat.id]
    assert await Contact.filter(client_id=acme.id).count() == 2
    # while any number of non-primary contacts is fine
    await Contact.filter(id=ann.id).update(is_primary=False)
    assert await _primary_ids(acme) == []


async def test_create_client_checks_role_and_input(db: Backend, owner: Account) -> None:
    # given a client user of a client
    client = await create_client(owner, name="Acme")
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    events = await ActivityEvent.all().count()
    # then they cannot create clients
    with pytest.raises(PermissionDeniedError):
        async with transaction():
            await client_service.create_client(viewer.actor, {"name": "Mine"})
    # and a create without a name is a ValidationError on `name`
    with pytest.raises(ValidationError) as caught:
        async with transaction():
            await client_service.create_client(owner.actor, {"email": "a@acme.com"})
    assert (caught.value.field, caught.value.code) == ("name", "REQUIRED")
    # and an unknown field is rejected rather than ignored
    with pytest.raises(ValidationError) as caught:
        async with transaction():
            await client_service.create_client(owner.actor, {"name": "X", "agency_id": "y"})
    assert caught.value.field == "agency_id"
    assert await Client.all().count() == 1
    assert await ActivityEvent.all().count() == events


async def test_other_agencies_rows_are_not_found(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given a client of the owner's agency with a contact and a note
    client = await create_client(owner, name="Acme")
    contact = await create_contact(owner, client, name="Ann")
    note = await create_note(owner, client, "secret")
    # then the rival cannot find, change or remove any of them
    actor = rival.actor
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: client_service.get_client(actor, client.id),
        lambda: client_service.update_client(actor, client.id, {"name": "Stolen"}),
        lambda: client_service.delete_client(actor, client.id),
        lambda: client_service.create_contact(actor, client.id, {"name": "Spy"}),
        lambda: client_service.update_contact(actor, contact.id, {"name": "Spy"}),
        lambda: client_service.set_primary_contact(actor, contact.id),
        lambda: client_service.delete_contact(actor, contact.id),
        lambda: client_service.add_note(actor, client.id, "spy"),
        lambda: client_service.update_note(actor, note.id, {"pinned": True}),
        lambda: client_service.delete_note(actor, note.id),
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError):
            async with transaction():
                await attempt()
    # and their lists are empty
    page = await client_service.list_clients(
        actor, client_service.ClientFilter(), first=10, after=None
    )
    assert (page.items, page.total_count) == ([], 0)
    assert await client_service.contacts_for_clients(actor, [client.id]) == {}
    notes = await client_service.notes_of_clients(actor, [client.id], first=3, after=None)
    assert {key: (p.items, p.total_count) for key, p in notes.items()} == {client.id: ([], 0)}
    # and nothing changed
    row = await Client.get(id=client.id)
    assert (row.name, row.deleted_at) == ("Acme", None)
    assert await Contact.filter(client_id=client.id).count() == 1
    assert await Note.filter(client_id=client.id).count() == 1


async def test_deleted_clients_children_are_hidden(db: Backend, owner: Account) -> None:
    # given a deleted client with a contact and a note
    client = await create_client(owner, name="Acme")
    contact = await create_contact(owner, client, name="Ann")
    note = await create_note(owner, client, "old")
    async with transaction():
        await client_service.delete_client(owner.actor, client.id)
    # then its contact and note are not found, and are not batched into lists
    with pytest.raises(NotFoundError):
        await client_service.get_contact(owner.actor, contact.id)
    with pytest.raises(NotFoundError):
        await client_service.get_note(owner.actor, note.id)
    with pytest.raises(NotFoundError):
        async with transaction():
            await client_service.add_note(owner.actor, client.id, "new")
    assert await client_service.clients_by_ids(owner.actor, [client.id]) == {}
    # but their rows are kept with the client
    assert await Contact.filter(id=contact.id).count() == 1
    assert await Note.filter(id=note.id).count() == 1


async def test_contact_changes_are_recorded(db: Backend, owner: Account) -> None:
    # given a contact
    client = await create_client(owner, name="Acme")
    ann = await create_contact(owner, client, name="Ann", email="ann@acme.com")
    # when it is updated
    async with transaction():
        await client_service.update_contact(
            owner.actor, ann.id, {"title": "CFO", "email": "ann@acme.com"}
        )
    # then only the changed field is recorded, by whom
    event = await ActivityEvent.filter(entity_id=ann.id).order_by("-created_at").first()
    assert event is not None
    assert (event.verb, event.actor_id, event.client_id, event.summary, event.changes) == (
        "updated",
        owner.user.id,
        client.id,
        "Contact Ann updated",
        {"title": {"before": None, "after": "CFO"}},
    )
    created = await ActivityEvent.get(entity_id=ann.id, verb="created")
    assert created.changes == {
        "email": {"before": None, "after": "ann@acme.com"},
        "is_primary": {"before": None, "after": True},
        "name": {"before": None, "after": "Ann"},
    }
