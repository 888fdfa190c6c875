"""CRM types: clients, contacts and notes."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.core.pagination import DEFAULT_PAGE_SIZE
from settle.models import client as models
from settle.schema.common import Connection, SortDirection
from settle.schema.context import Info

if TYPE_CHECKING:
    from settle.schema.activity import ActivityEvent, TimelineFilter
    from settle.schema.auth import User


@strawberry.type
class Contact:
    id: strawberry.ID
    name: str
    email: str | None
    phone: str | None
    title: str | None
    is_primary: bool
    created_at: datetime
    updated_at: datetime
    client_id: strawberry.ID

    @classmethod
    def from_model(cls, contact: models.Contact) -> Contact:
        return cls(
            id=strawberry.ID(str(contact.id)),
            name=contact.name,
            email=contact.email,
            phone=contact.phone,
            title=contact.title,
            is_primary=contact.is_primary,
            created_at=contact.created_at,
            updated_at=contact.updated_at,
            client_id=strawberry.ID(str(contact.client_id)),
        )


@strawberry.type
class Note:
    id: strawberry.ID
    body: str
    pinned: bool
    created_at: datetime
    updated_at: datetime
    client_id: strawberry.ID
    _author_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, note: models.Note) -> Note:
        return cls(
            id=strawberry.ID(str(note.id)),
            body=note.body,
            pinned=note.pinned,
            created_at=note.created_at,
            updated_at=note.updated_at,
            client_id=strawberry.ID(str(note.client_id)),
            _author_id=note.author_id,
        )

    @strawberry.field
    async def author(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("settle.schema.auth")] | None:
        from settle.schema.auth import User

        if self._author_id is None:
            return None
        user = await info.context.loaders.user.load(self._author_id)
        return User.from_model(user) if user else None


@strawberry.type
class Client:
    id: strawberry.ID
    name: str
    email: str | None
    phone: str | None
    address: str | None
    tax_id: str | None
    currency: str
    is_active: bool
    external_id: str | None = strawberry.field(
        description="The client's id in another system; unique in the agency. CSV imports "
        "match clients on it."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, client: models.Client) -> Client:
        return cls(
            id=strawberry.ID(str(client.id)),
            name=client.name,
            email=client.email,
            phone=client.phone,
            address=client.address,
            tax_id=client.tax_id,
            currency=client.currency,
            is_active=client.is_active,
            external_id=client.external_id,
            created_at=client.created_at,
            updated_at=client.updated_at,
        )

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(str(self.id))

    @strawberry.field(description="Contacts, the primary one first.")
    async def contacts(self, info: Info) -> list[Contact]:
        rows = await info.context.loaders.contacts.load(self.uuid)
        return [Contact.from_model(row) for row in rows]

    @strawberry.field
    async def primary_contact(self, info: Info) -> Contact | None:
        rows = await info.context.loaders.contacts.load(self.uuid)
        return next((Contact.from_model(row) for row in rows if row.is_primary), None)

    @strawberry.field(description="Internal notes, newest first; empty for client users.")
    async def notes(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        pinned: bool | None = None,
    ) -> Connection[Note]:
        from settle.resolvers.client import client_notes

        return await client_notes(info, self.uuid, first=first, after=after, pinned=pinned)

    @strawberry.field(description="This client's activity, newest first.")
    async def timeline(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        filter: Annotated[TimelineFilter, strawberry.lazy("settle.schema.activity")] | None = None,
    ) -> Connection[Annotated[ActivityEvent, strawberry.lazy("settle.schema.activity")]]:
        from settle.resolvers.activity import client_timeline

        return await client_timeline(info, self.uuid, first=first, after=after, flt=filter)


@strawberry.input
class CreateClientInput:
    name: str
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    tax_id: str | None = None
    currency: str = strawberry.field(default="USD", description="ISO 4217 code.")
    external_id: str | None = strawberry.field(
        default=None,
        description="The client's id in another system (at most 100 characters; DUPLICATE "
        "when another client of the agency has it).",
    )


@strawberry.input
class UpdateClientInput:
    name: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    phone: str | None = strawberry.UNSET
    address: str | None = strawberry.UNSET
    tax_id: str | None = strawberry.UNSET
    currency: str | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    external_id: str | None = strawberry.UNSET


@strawberry.input
class ClientFilter:
    search: str | None = strawberry.field(default=None, description="Matches name or email.")
    is_active: bool | None = None
    currency: str | None = None


@strawberry.enum
class ClientOrderField(Enum):
    NAME = "name"
    CREATED_AT = "created_at"


@strawberry.input
class ClientOrder:
    field: ClientOrderField = ClientOrderField.NAME
    direction: SortDirection = SortDirection.ASC


@strawberry.input
class CreateContactInput:
    client_id: strawberry.ID
    name: str
    email: str | None = None
    phone: str | None = None
    title: str | None = None
    is_primary: bool = strawberry.field(
        default=False, description="Make it the primary contact (the first contact always is)."
    )


@strawberry.input
class UpdateContactInput:
    name: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    phone: str | None = strawberry.UNSET
    title: str | None = strawberry.UNSET


@strawberry.input
class AddNoteInput:
    client_id: strawberry.ID
    body: str
    pinned: bool = False


@strawberry.input
class UpdateNoteInput:
    body: str | None = strawberry.UNSET
    pinned: bool | None = strawberry.UNSET
