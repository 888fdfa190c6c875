"""CRM: clients, their contacts (exactly one primary) and notes."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from settle.core import clock, validation
from settle.core.db import get_visible
from settle.core.errors import ValidationError
from settle.core.money import normalize_currency
from settle.core.pagination import (
    Ordering,
    Page,
    paginate,
    paginate_each,
)
from settle.core.tenancy import MANAGERS, MEMBERS, Actor, scoped
from settle.models.client import Client, Contact, Note
from settle.services import activity

# --- clients ---------------------------------------------------------------

CLIENT_FIELDS = (
    "name",
    "email",
    "phone",
    "address",
    "tax_id",
    "currency",
    "is_active",
    "external_id",
)
EXTERNAL_ID_MAX_LENGTH = 100


class ClientOrderField(StrEnum):
    NAME = "name"
    CREATED_AT = "created_at"


@dataclass(frozen=True, slots=True)
class ClientFilter:
    search: str | None = None
    is_active: bool | None = None
    currency: str | None = None


def clean_client_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise the client fields present in ``values``."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key == "name":
            cleaned[key] = validation.required_text("name", value, max_length=200)
        elif key == "email":
            cleaned[key] = validation.email("email", value)
        elif key == "phone":
            cleaned[key] = validation.phone("phone", value)
        elif key == "address":
            cleaned[key] = validation.optional_text("address", value, max_length=1000)
        elif key == "tax_id":
            cleaned[key] = validation.optional_text("taxId", value, max_length=64)
        elif key == "currency":
            cleaned[key] = normalize_currency(value or "")
        elif key == "is_active":
            if not isinstance(value, bool):
                raise ValidationError("isActive", "isActive must be true or false")
            cleaned[key] = value
        elif key == "external_id":
            cleaned[key] = validation.optional_text(
                "externalId", value, max_length=EXTERNAL_ID_MAX_LENGTH
            )
        else:
            raise ValidationError(key, f"Unknown field {key}")
    return cleaned


async def _check_external_id(
    agency_id: uuid.UUID, external_id: str | None, *, exclude: uuid.UUID | None = None
) -> None:
    """DUPLICATE when another client of the agency already has ``external_id``."""
    if external_id is None:
        return
    taken = Client.filter(agency_id=agency_id, external_id=external_id)
    if exclude is not None:
        taken = taken.exclude(id=exclude)
    if await taken.exists():
        raise ValidationError(
            "externalId", "Another client already has this externalId", code="DUPLICATE"
        )


async def find_client_for_import(
    agency_id: uuid.UUID, *, external_id: str | None, name: str | None
) -> Client | None:
    """The live client an imported row means: by external id, else by name.

    A row with an external id that no client has may still mean a client by its
    name, but only one without an external id of its own (another external id is
    another client). Names match ignoring case; of several, the oldest.
    """
    live = Client.filter(agency_id=agency_id, deleted_at__isnull=True)
    if external_id:
        found = await live.filter(external_id=external_id).first()
        if found is not None:
            return found
        live = live.filter(external_id__isnull=True)
    if name:
        return await live.filter(name__iexact=name.strip()).order_by("created_at", "id").first()
    return None


def _clients(actor: Actor) -> Any:
    return scoped(Client, actor, client_field="id").filter(deleted_at__isnull=True)


def visible_clients(actor: Actor) -> QuerySet[Client]:
    """Every live client the actor may see, as the clients query shows them (exports)."""
    qs: QuerySet[Client] = _clients(actor)
    return qs


async def get_client(actor: Actor, client_id: uuid.UUID) -> Client:
    """A live client the actor may see, or NotFoundError (also for other agencies' ids)."""
    return await get_visible(_clients(actor), client_id, "Client")


async def _lock_client(actor: Actor, client_id: uuid.UUID) -> Client:
    """Like get_client, holding a row lock until commit (serialises contact changes)."""
    return await get_visible(_clients(actor), client_id, "Client", lock=True)


async def list_clients(
    actor: Actor,
    flt: ClientFilter,
    *,
    first: int | None,
    after: str | None,
    order_by: ClientOrderField = ClientOrderField.NAME,
    descending: bool = False,
) -> Page[Client]:
    """The clients the actor may see, filtered and paginated."""
    qs = _clients(actor)
    term = validation.search_term("filter.search", flt.search)
    if term is not None:
        qs = qs.filter(Q(name__icontains=term) | Q(email__icontains=term))
    if flt.is_active is not None:
        qs = qs.filter(is_active=flt.is_active)
    if flt.currency:
        qs = qs.filter(currency=normalize_currency(flt.currency, "filter.currency"))
    return await paginate(
        qs, first=first, after=after, ordering=Ordering(order_by.value, descending)
    )


async def create_client(actor: Actor, values: dict[str, Any]) -> Client:
    """Create a client of the actor's agency."""
    actor.require(*MEMBERS)
    data = clean_client_fields({"currency": "USD", **values})
    if "name" not in data:
        raise ValidationError("name", "name must not be empty", code="REQUIRED")
    await _check_external_id(actor.agency_id, data.get("external_id"))
    client = await Client.create(agency_id=actor.agency_id, **data)
    await activity.record(
        actor,
        agency_id=actor.agency_id,
        client_id=client.id,
        entity_type="client",
        entity_id=client.id,
        verb="created",
        summary=f"Client {client.name} created",
        changes=activity.snapshot(data),
    )
    return client


async def update_client(actor: Actor, client_id: uuid.UUID, values: dict[str, Any]) -> Client:
    """Change the given fields of a client; records what changed."""
    client = await get_client(actor, client_id)
    actor.require(*MEMBERS)
    data = clean_client_fields(values)
    before = {key: getattr(client, key) for key in data}
    changes = activity.diff(before, data)
    if not changes:
        return client
    if "external_id" in changes:
        await _check_external_id(client.agency_id, data["external_id"], exclude=client.id)
    client.update_from_dict(data)
    await client.save(update_fields=[*data.keys(), "updated_at"])
    if set(changes) == {"is_active"}:
        verb = "activated" if client.is_active else "deactivated"
    else:
        verb = "updated"
    await activity.record(
        actor,
        agency_id=client.agency_id,
        client_id=client.id,
        entity_type="client",
        entity_id=client.id,
        verb=verb,
        summary=f"Client {client.name} {verb}",
        changes=changes,
    )
    return client


async def delete_client(actor: Actor, client_id: uuid.UUID) -> Client:
    """Soft-delete a client: it disappears from lists and lookups, its history stays."""
    client = await get_client(actor, client_id)
    actor.require(*MANAGERS)
    before = {
        "deleted_at": client.deleted_at,
        "is_active": client.is_active,
        "external_id": client.external_id,
    }
    client.deleted_at = clock.now()
    client.is_active = False
    # The external id is freed, so a new client may take it (an import of the same file).
    client.external_id = None
    await client.save(update_fields=["deleted_at", "is_active", "external_id", "updated_at"])
    await activity.record(
        actor,
        agency_id=client.agency_id,
        client_id=client.id,
        entity_type="client",
        entity_id=client.id,
        verb="deleted",
        summary=f"Client {client.name} deleted",
        changes=activity.diff(
            before,
            {
                "deleted_at": client.deleted_at,
                "is_active": client.is_active,
                "external_id": client.external_id,
            },
        ),
    )
    return client


async def clients_by_ids(actor: Actor, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Client]:
    """Batch lookup for loaders: the live clients among ``ids`` the actor may see."""
    rows = await _clients(actor).filter(id__in=list(ids))
    return {row.id: row for row in rows}


# --- contacts --------------------------------------------------------------


def clean_contact_fields(values: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key == "name":
            cleaned[key] = validation.required_text("name", value, max_length=200)
        elif key == "email":
            cleaned[key] = validation.email("email", value)
        elif key == "phone":
            cleaned[key] = validation.phone("phone", value)
        elif key == "title":
            cleaned[key] = validation.optional_text("title", value, max_length=120)
        else:
            raise ValidationError(key, f"Unknown field {key}")
    return cleaned


def _contacts(actor: Actor) -> Any:
    return scoped(Contact, actor).filter(client__deleted_at__isnull=True)


def visible_contacts(actor: Actor) -> QuerySet[Contact]:
    """Every contact of a live client the actor may see (exports)."""
    qs: QuerySet[Contact] = _contacts(actor)
    return qs


async def get_contact(actor: Actor, contact_id: uuid.UUID) -> Contact:
    return await get_visible(_contacts(actor), contact_id, "Contact")


async def contacts_for_clients(
    actor: Actor, client_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Contact]]:
    """Contacts of each client, primary first then by name, in one query."""
    rows = (
        await _contacts(actor)
        .filter(client_id__in=list(client_ids))
        .order_by("client_id", "-is_primary", "name", "id")
    )
    grouped: dict[uuid.UUID, list[Contact]] = defaultdict(list)
    for row in rows:
        grouped[row.client_id].append(row)
    return grouped


async def create_contact(
    actor: Actor, client_id: uuid.UUID, values: dict[str, Any], *, primary: bool = False
) -> Contact:
    """Add a contact; the first contact of a client, or one asked to be, becomes primary."""
    actor.require(*MEMBERS)
    client = await _lock_client(actor, client_id)
    data = clean_contact_fields(values)
    if "name" not in data:
        raise ValidationError("name", "name must not be empty", code="REQUIRED")
    has_primary = await Contact.filter(client_id=client.id, is_primary=True).exists()
    make_primary = primary or not has_primary
    if make_primary and has_primary:
        await Contact.filter(client_id=client.id, is_primary=True).update(is_primary=False)
    contact = await Contact.create(
        agency_id=client.agency_id, client_id=client.id, is_primary=make_primary, **data
    )
    await activity.record(
        actor,
        agency_id=client.agency_id,
        client_id=client.id,
        entity_type="contact",
        entity_id=contact.id,
        verb="created",
        summary=f"Contact {contact.name} added to {client.name}",
        changes=activity.snapshot({**data, "is_primary": make_primary}),
    )
    return contact


async def update_contact(actor: Actor, contact_id: uuid.UUID, values: dict[str, Any]) -> Contact:
    contact = await get_contact(actor, contact_id)
    actor.require(*MEMBERS)
    data = clean_contact_fields(values)
    changes = activity.diff({key: getattr(contact, key) for key in data}, data)
    if not changes:
        return contact
    contact.update_from_dict(data)
    await contact.save(update_fields=[*data.keys(), "updated_at"])
    await activity.record(
        actor,
        agency_id=contact.agency_id,
        client_id=contact.client_id,
        entity_type="contact",
        entity_id=contact.id,
        verb="updated",
        summary=f"Contact {contact.name} updated",
        changes=changes,
    )
    return contact


async def set_primary_contact(actor: Actor, contact_id: uuid.UUID) -> Contact:
    """Make a contact its client's primary; the previous primary is demoted atomically."""
    contact = await get_contact(actor, contact_id)
    actor.require(*MEMBERS)
    await _lock_client(actor, contact.client_id)
    await contact.refresh_from_db()
    if contact.is_primary:
        return contact
    previous = await Contact.filter(client_id=contact.client_id, is_primary=True).first()
    # Demote first: the partial unique index allows one primary per client at any instant.
    await Contact.filter(client_id=contact.client_id, is_primary=True).update(is_primary=False)
    contact.is_primary = True
    await contact.save(update_fields=["is_primary", "updated_at"])
    await activity.record(
        actor,
        agency_id=contact.agency_id,
        client_id=contact.client_id,
        entity_type="contact",
        entity_id=contact.id,
        verb="primary_changed",
        summary=f"{contact.name} is now the primary contact",
        changes={
            "primary_contact_id": {
                "before": str(previous.id) if previous else None,
                "after": str(contact.id),
            }
        },
    )
    return contact


async def delete_contact(actor: Actor, contact_id: uuid.UUID) -> Contact:
    """Remove a contact; if it was primary, the longest-standing other contact takes over."""
    contact = await get_contact(actor, contact_id)
    actor.require(*MEMBERS)
    await _lock_client(actor, contact.client_id)
    await contact.refresh_from_db()
    await contact.delete()
    successor = None
    if contact.is_primary:
        successor = (
            await Contact.filter(client_id=contact.client_id).order_by("created_at", "id").first()
        )
        if successor is not None:
            successor.is_primary = True
            await successor.save(update_fields=["is_primary", "updated_at"])
    await activity.record(
        actor,
        agency_id=contact.agency_id,
        client_id=contact.client_id,
        entity_type="contact",
        entity_id=contact.id,
        verb="deleted",
        summary=f"Contact {contact.name} removed"
        + (f"; {successor.name} is now primary" if successor else ""),
    )
    return contact


# --- notes -----------------------------------------------------------------

NOTE_MAX_LENGTH = 20_000


def _notes(actor: Actor) -> Any:
    # Notes are the agency's internal record: client users never see them.
    return scoped(Note, actor, client_field=None).filter(client__deleted_at__isnull=True)


async def get_note(actor: Actor, note_id: uuid.UUID) -> Note:
    return await get_visible(_notes(actor), note_id, "Note")


def note_ordering() -> Ordering:
    return Ordering("created_at", descending=True)


async def notes_of_clients(
    actor: Actor,
    client_ids: Sequence[uuid.UUID],
    *,
    first: int | None,
    after: str | None,
    pinned: bool | None = None,
) -> dict[uuid.UUID, Page[Note]]:
    """Each client's notes, newest first, a page of each, in a fixed number of queries."""
    qs = _notes(actor)
    if pinned is not None:
        qs = qs.filter(pinned=pinned)
    return await paginate_each(
        qs, "client_id", client_ids, first=first, after=after, ordering=note_ordering()
    )


def clean_note_body(body: str | None) -> str:
    return validation.required_text("body", body, max_length=NOTE_MAX_LENGTH)


async def add_note(actor: Actor, client_id: uuid.UUID, body: str, *, pinned: bool = False) -> Note:
    actor.require(*MEMBERS)
    client = await get_client(actor, client_id)
    note = await Note.create(
        agency_id=client.agency_id,
        client_id=client.id,
        author_id=actor.user_id,
        body=clean_note_body(body),
        pinned=pinned,
    )
    await activity.record(
        actor,
        agency_id=client.agency_id,
        client_id=client.id,
        entity_type="note",
        entity_id=note.id,
        verb="created",
        summary=f"{actor.name} added a note to {client.name}",
        changes=activity.snapshot({"body": note.body, "pinned": pinned}),
    )
    return note


async def update_note(actor: Actor, note_id: uuid.UUID, values: dict[str, Any]) -> Note:
    note = await get_note(actor, note_id)
    actor.require(*MEMBERS)
    data: dict[str, Any] = {}
    if "body" in values:
        data["body"] = clean_note_body(values["body"])
    if "pinned" in values:
        if not isinstance(values["pinned"], bool):
            raise ValidationError("pinned", "pinned must be true or false")
        data["pinned"] = values["pinned"]
    changes = activity.diff({key: getattr(note, key) for key in data}, data)
    if not changes:
        return note
    note.update_from_dict(data)
    await note.save(update_fields=[*data.keys(), "updated_at"])
    if set(changes) == {"pinned"}:
        verb = "pinned" if note.pinned else "unpinned"
    else:
        verb = "updated"
    await activity.record(
        actor,
        agency_id=note.agency_id,
        client_id=note.client_id,
        entity_type="note",
        entity_id=note.id,
        verb=verb,
        summary=f"{actor.name} {verb} a note",
        changes=changes,
    )
    return note


async def delete_note(actor: Actor, note_id: uuid.UUID) -> Note:
    note = await get_note(actor, note_id)
    actor.require(*MEMBERS)
    await note.delete()
    await activity.record(
        actor,
        agency_id=note.agency_id,
        client_id=note.client_id,
        entity_type="note",
        entity_id=note.id,
        verb="deleted",
        summary=f"{actor.name} deleted a note",
    )
    return note
