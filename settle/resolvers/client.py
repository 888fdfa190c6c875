"""CRM resolvers: parse input, call the client service, map the result."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from settle.resolvers.common import (
    find_one,
    mutate,
    parse_id,
    provided,
    public_errors,
    require_actor,
)
from settle.schema.client import (
    AddNoteInput,
    Client,
    ClientFilter,
    ClientOrder,
    ClientOrderField,
    Contact,
    CreateClientInput,
    CreateContactInput,
    Note,
    UpdateClientInput,
    UpdateContactInput,
    UpdateNoteInput,
)
from settle.schema.common import Connection, SortDirection
from settle.schema.context import Info
from settle.schema.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.services import client as client_service

_Errors = ValidationError | NotFoundError | PermissionDeniedError | ConflictError
ClientResult = Annotated[Client | _Errors, strawberry.union("ClientResult")]
ContactResult = Annotated[Contact | _Errors, strawberry.union("ContactResult")]
NoteResult = Annotated[Note | _Errors, strawberry.union("NoteResult")]


async def clients(
    info: Info,
    first: int = 20,
    after: str | None = None,
    filter: ClientFilter | None = None,
    order_by: ClientOrder | None = None,
) -> Connection[Client]:
    """The agency's clients (a client user sees only their own)."""
    actor = require_actor(info)
    order = order_by or ClientOrder()
    flt = filter or ClientFilter()
    with public_errors():
        page = await client_service.list_clients(
            actor,
            client_service.ClientFilter(
                search=flt.search, is_active=flt.is_active, currency=flt.currency
            ),
            first=first,
            after=after,
            order_by=client_service.ClientOrderField((order.field or ClientOrderField.NAME).value),
            descending=order.direction is SortDirection.DESC,
        )
    return Connection.from_page(page, Client.from_model)


async def client(info: Info, id: strawberry.ID) -> Client | None:
    actor = require_actor(info)
    return await find_one(
        id, lambda row_id: client_service.get_client(actor, row_id), Client.from_model
    )


async def contact(info: Info, id: strawberry.ID) -> Contact | None:
    actor = require_actor(info)
    return await find_one(
        id, lambda row_id: client_service.get_contact(actor, row_id), Contact.from_model
    )


async def note(info: Info, id: strawberry.ID) -> Note | None:
    actor = require_actor(info)
    return await find_one(
        id, lambda row_id: client_service.get_note(actor, row_id), Note.from_model
    )


async def client_notes(
    info: Info, client_id: uuid.UUID, *, first: int, after: str | None, pinned: bool | None
) -> Connection[Note]:
    """Client.notes: the clients of a list get their pages through one loader."""
    require_actor(info)
    loader = info.context.loaders.client_notes(first=first, after=after, pinned=pinned)
    with public_errors():
        page = await loader.load(client_id)
    return Connection.from_page(page, Note.from_model)


async def create_client(info: Info, input: CreateClientInput) -> ClientResult:
    actor = require_actor(info)
    values = {
        "name": input.name,
        "email": input.email,
        "phone": input.phone,
        "address": input.address,
        "tax_id": input.tax_id,
        "currency": input.currency,
        "external_id": input.external_id,
    }

    async def run() -> Client:
        return Client.from_model(await client_service.create_client(actor, values))

    return await mutate(run)  # type: ignore[return-value]


async def update_client(info: Info, id: strawberry.ID, input: UpdateClientInput) -> ClientResult:
    actor = require_actor(info)
    values = provided(
        {
            "name": input.name,
            "email": input.email,
            "phone": input.phone,
            "address": input.address,
            "tax_id": input.tax_id,
            "currency": input.currency,
            "is_active": input.is_active,
            "external_id": input.external_id,
        }
    )

    async def run() -> Client:
        return Client.from_model(await client_service.update_client(actor, parse_id(id), values))

    return await mutate(run)  # type: ignore[return-value]


async def delete_client(info: Info, id: strawberry.ID) -> ClientResult:
    actor = require_actor(info)

    async def run() -> Client:
        return Client.from_model(await client_service.delete_client(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def create_contact(info: Info, input: CreateContactInput) -> ContactResult:
    actor = require_actor(info)
    values = {"name": input.name, "email": input.email, "phone": input.phone, "title": input.title}

    async def run() -> Contact:
        return Contact.from_model(
            await client_service.create_contact(
                actor, parse_id(input.client_id, "clientId"), values, primary=input.is_primary
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def update_contact(info: Info, id: strawberry.ID, input: UpdateContactInput) -> ContactResult:
    actor = require_actor(info)
    values = provided(
        {"name": input.name, "email": input.email, "phone": input.phone, "title": input.title}
    )

    async def run() -> Contact:
        return Contact.from_model(await client_service.update_contact(actor, parse_id(id), values))

    return await mutate(run)  # type: ignore[return-value]


async def set_primary_contact(info: Info, id: strawberry.ID) -> ContactResult:
    actor = require_actor(info)

    async def run() -> Contact:
        return Contact.from_model(await client_service.set_primary_contact(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def delete_contact(info: Info, id: strawberry.ID) -> ContactResult:
    actor = require_actor(info)

    async def run() -> Contact:
        return Contact.from_model(await client_service.delete_contact(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def add_note(info: Info, input: AddNoteInput) -> NoteResult:
    actor = require_actor(info)

    async def run() -> Note:
        return Note.from_model(
            await client_service.add_note(
                actor, parse_id(input.client_id, "clientId"), input.body, pinned=input.pinned
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def update_note(info: Info, id: strawberry.ID, input: UpdateNoteInput) -> NoteResult:
    actor = require_actor(info)
    values = provided({"body": input.body, "pinned": input.pinned})

    async def run() -> Note:
        return Note.from_model(await client_service.update_note(actor, parse_id(id), values))

    return await mutate(run)  # type: ignore[return-value]


async def delete_note(info: Info, id: strawberry.ID) -> NoteResult:
    actor = require_actor(info)

    async def run() -> Note:
        return Note.from_model(await client_service.delete_note(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]
