"""Account resolvers."""

from __future__ import annotations

from typing import Annotated

import strawberry

from settle.resolvers.common import mutate, parse_id, public_errors, require_actor
from settle.resolvers.rate_limit import over_limit
from settle.schema.auth import (
    AcceptInvitationInput,
    AuthPayload,
    ChangePasswordInput,
    Invitation,
    InviteMemberInput,
    LoginInput,
    LogoutPayload,
    SignUpInput,
    User,
)
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ValidationError,
)
from settle.services import auth as auth_service

AuthResult = Annotated[
    AuthPayload | ValidationError | AuthenticationError | ConflictError | RateLimitedError,
    strawberry.union("AuthResult"),
]
LogoutResult = Annotated[LogoutPayload | AuthenticationError, strawberry.union("LogoutResult")]
RemoveMemberResult = Annotated[
    User | ValidationError | PermissionDeniedError | NotFoundError | ConflictError,
    strawberry.union("RemoveMemberResult"),
]
InviteMemberResult = Annotated[
    Invitation | ValidationError | PermissionDeniedError | NotFoundError | ConflictError,
    strawberry.union("InviteMemberResult"),
]


def _payload(result: auth_service.AuthResult) -> AuthPayload:
    return AuthPayload(token=result.token, user=User.from_model(result.user, as_viewer=True))


async def sign_up(info: Info, input: SignUpInput) -> AuthResult:
    """Create an agency and its owner; returns a token."""

    async def run() -> AuthPayload:
        return _payload(
            await auth_service.sign_up(
                info.context.settings,
                agency_name=input.agency_name,
                name=input.name,
                email=input.email,
                password=input.password,
            )
        )

    if refused := await over_limit(info, "sign_up", input.email):
        return refused
    return await mutate(run)  # type: ignore[return-value]


async def login(info: Info, input: LoginInput) -> AuthResult:
    async def run() -> AuthPayload:
        return _payload(
            await auth_service.login(
                info.context.settings, email=input.email, password=input.password
            )
        )

    if refused := await over_limit(info, "login", input.email):
        return refused
    return await mutate(run)  # type: ignore[return-value]


async def me(info: Info) -> User | None:
    actor = info.context.actor
    if actor is None:
        return None
    user = await info.context.loaders.user.load(actor.user_id)
    return User.from_model(user) if user else None


async def invite_member(info: Info, input: InviteMemberInput) -> InviteMemberResult:
    actor = require_actor(info)

    async def run() -> Invitation:
        result = await auth_service.invite_member(
            info.context.settings,
            actor,
            email=input.email,
            role=input.role,
            name=input.name,
            client_id=parse_id(input.client_id, "clientId") if input.client_id else None,
        )
        return Invitation(
            id=strawberry.ID(str(result.invitation.id)),
            email=result.invitation.email,
            role=result.invitation.role,
            expires_at=result.invitation.expires_at,
        )

    return await mutate(run)  # type: ignore[return-value]


async def accept_invitation(info: Info, input: AcceptInvitationInput) -> AuthResult:
    async def run() -> AuthPayload:
        return _payload(
            await auth_service.accept_invitation(
                info.context.settings, token=input.token, name=input.name, password=input.password
            )
        )

    async def invitee() -> str | None:
        found = await auth_service.open_invitation(input.token)
        return found.invitation.email if found else None

    if refused := await over_limit(info, "accept_invitation", invitee):
        return refused
    return await mutate(run)  # type: ignore[return-value]


async def logout(info: Info) -> LogoutResult:
    """End the session of the token this request came with."""
    actor = require_actor(info)

    async def run() -> LogoutPayload:
        await auth_service.logout(actor)
        return LogoutPayload(ok=True)

    return await mutate(run)  # type: ignore[return-value]


async def change_password(info: Info, input: ChangePasswordInput) -> AuthResult:
    """Set a new password; every session ends, and the caller gets a new token."""
    actor = require_actor(info)
    # Each try is a guess at the current password, counted as a login: a stolen token
    # must not guess it faster than the login form could.
    if refused := await over_limit(info, "login", actor.email):
        return refused

    async def run() -> AuthPayload:
        return _payload(
            await auth_service.change_password(
                info.context.settings,
                actor,
                current_password=input.current_password,
                new_password=input.new_password,
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def remove_member(info: Info, user_id: strawberry.ID) -> RemoveMemberResult:
    """Take a user out of the agency (owners and admins); their sessions end at once."""
    actor = require_actor(info)

    async def run() -> User:
        return User.from_model(await auth_service.remove_member(actor, parse_id(user_id, "userId")))

    return await mutate(run)  # type: ignore[return-value]


async def members(info: Info, first: int = 20, after: str | None = None) -> Connection[User]:
    """The agency's users (agency members only), oldest first; removed users are gone."""
    actor = require_actor(info)
    with public_errors():
        page = await auth_service.list_members(actor, first=first, after=after)
    return Connection.from_page(page, User.from_model)
