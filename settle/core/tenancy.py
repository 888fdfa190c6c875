"""The acting user and the tenant scope every query goes through."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

from settle.core.errors import PermissionDeniedError
from settle.models.agency import Role, User

M = TypeVar("M", bound=Model)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who a service call acts for: a user of one agency, maybe bound to one client."""

    user_id: uuid.UUID
    agency_id: uuid.UUID
    role: Role
    client_id: uuid.UUID | None
    name: str
    email: str
    # The sign-in the request came with (see UserSession); None for work without one.
    session_id: uuid.UUID | None = None

    @classmethod
    def from_user(cls, user: User, session_id: uuid.UUID | None = None) -> Actor:
        return cls(
            user_id=user.id,
            agency_id=user.agency_id,
            role=user.role,
            client_id=user.client_id,
            name=user.name,
            email=user.email,
            session_id=session_id,
        )

    @property
    def is_client_user(self) -> bool:
        return self.role.is_client

    def require(self, *roles: Role) -> None:
        """Raise PermissionDeniedError unless the actor has one of ``roles``."""
        if self.role not in roles:
            raise PermissionDeniedError()


MANAGERS = (Role.OWNER, Role.ADMIN)
MEMBERS = (Role.OWNER, Role.ADMIN, Role.MEMBER)


def scoped(model: type[M], actor: Actor, *, client_field: str | None = "client_id") -> QuerySet[M]:
    """Rows of ``model`` the actor may see: its agency's, and for client users their client's.

    ``client_field`` names the column holding the client id (``"id"`` for the
    Client model itself, ``None`` for rows that client users never see).
    """
    qs = model.filter(agency_id=actor.agency_id)
    if actor.is_client_user:
        if client_field is None or actor.client_id is None:
            return qs.filter(pk__in=[])
        qs = qs.filter(**{client_field: actor.client_id})
    return qs
