"""DataLoaders: one query per kind of child, however long the list."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial

from strawberry.dataloader import DataLoader

from settle.core.tenancy import Actor
from settle.models.agency import Agency, User
from settle.models.client import Client, Contact, Note
from settle.services import client as client_service


class Loaders:
    """Per-request loaders bound to the acting user, so batching never crosses tenants."""

    def __init__(self, actor: Actor | None, *, cache: bool = True) -> None:
        self.actor = actor
        self.client = DataLoader(self._clients, cache=cache)
        self.contacts = DataLoader(self._contacts, cache=cache)
        self.user = DataLoader(self._users, cache=cache)
        self.agency = DataLoader(self._agencies, cache=cache)
        self._latest_notes: dict[int, DataLoader[uuid.UUID, tuple[list[Note], int]]] = {}
        self._cache = cache

    def latest_notes(self, first: int) -> DataLoader[uuid.UUID, tuple[list[Note], int]]:
        """Newest ``first`` notes and the note count per client (one loader per page size)."""
        if first not in self._latest_notes:
            self._latest_notes[first] = DataLoader(partial(self._notes, first), cache=self._cache)
        return self._latest_notes[first]

    def _require_actor(self) -> Actor:
        if self.actor is None:
            raise PermissionError("loaders need an authenticated actor")
        return self.actor

    async def _clients(self, ids: Sequence[uuid.UUID]) -> list[Client | None]:
        found = await client_service.clients_by_ids(self._require_actor(), ids)
        return [found.get(i) for i in ids]

    async def _contacts(self, ids: Sequence[uuid.UUID]) -> list[list[Contact]]:
        found = await client_service.contacts_for_clients(self._require_actor(), ids)
        return [found.get(i, []) for i in ids]

    async def _notes(self, first: int, ids: Sequence[uuid.UUID]) -> list[tuple[list[Note], int]]:
        found = await client_service.latest_notes_for_clients(self._require_actor(), ids, first)
        return [found[i] for i in ids]

    async def _users(self, ids: Sequence[uuid.UUID]) -> list[User | None]:
        actor = self._require_actor()
        rows = await User.filter(agency_id=actor.agency_id, id__in=list(ids))
        found = {row.id: row for row in rows}
        return [found.get(i) for i in ids]

    async def _agencies(self, ids: Sequence[uuid.UUID]) -> list[Agency | None]:
        actor = self._require_actor()
        rows = await Agency.filter(id__in=[i for i in ids if i == actor.agency_id])
        found = {row.id: row for row in rows}
        return [found.get(i) for i in ids]
