"""Accounts: sign-up, login, sessions and tokens, members, and invitations."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError

from settle.core import clock, validation
from settle.core.auth import (
    TokenClaims,
    TokenSigner,
    hash_opaque_token,
    hash_password,
    needs_rehash,
    verify_password,
)
from settle.core.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.core.outbox import emit_event, send_job
from settle.core.pagination import Ordering, Page, paginate
from settle.core.settings import Settings
from settle.core.tenancy import MANAGERS, MEMBERS, Actor
from settle.models.agency import Agency, Invitation, Role, User, UserSession
from settle.models.client import Client
from settle.services import activity
from settle.subscriptions import channels


@dataclass(frozen=True, slots=True)
class AuthResult:
    token: str
    user: User


async def _hash(password: str) -> str:
    # argon2 is slow by design (a large fraction of a second of CPU); in a worker
    # thread it does not stall every other request and job on this event loop.
    return await asyncio.to_thread(hash_password, password)


async def _verify(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)


def signer(settings: Settings) -> TokenSigner:
    return TokenSigner(settings.signing_key(), settings.access_token_ttl_seconds)


async def sign_up(
    settings: Settings, *, agency_name: str, name: str, email: str, password: str
) -> AuthResult:
    """Create an agency with its owner and log the owner in."""
    agency_name = validation.required_text("agencyName", agency_name, max_length=200)
    name = validation.required_text("name", name, max_length=200)
    address = validation.email("email", email, required=True)
    assert address is not None
    validation.password("password", password)
    if await User.filter(email=address).exists():
        raise ConflictError("An account with this email already exists")
    password_hash = await _hash(password)
    agency = await Agency.create(name=agency_name)
    try:
        user = await User.create(
            agency_id=agency.id,
            email=address,
            name=name,
            password_hash=password_hash,
            role=Role.OWNER,
        )
    except IntegrityError:
        # Two sign-ups with one email raced past the check; the unique index decided.
        raise ConflictError("An account with this email already exists") from None
    actor = Actor.from_user(user)
    await activity.record(
        actor,
        agency_id=agency.id,
        entity_type="agency",
        entity_id=agency.id,
        verb="created",
        summary=f"{name} created the agency {agency_name}",
    )
    return AuthResult(token=await _start_session(settings, user), user=user)


async def login(settings: Settings, *, email: str, password: str) -> AuthResult:
    """Check credentials; one error for an unknown email and a wrong password alike."""
    address = (email or "").strip().lower()
    user = await User.get_or_none(email=address, is_active=True) if address else None
    if not await _verify(user.password_hash if user else None, password or ""):
        raise AuthenticationError()
    assert user is not None
    user.last_login_at = clock.now()
    fields = ["last_login_at"]
    if needs_rehash(user.password_hash):
        user.password_hash = await _hash(password)
        fields.append("password_hash")
    await user.save(update_fields=fields)
    return AuthResult(token=await _start_session(settings, user), user=user)


async def _start_session(settings: Settings, user: User) -> str:
    """A new session for ``user`` and its access token."""
    now = clock.now()
    # Expired sessions of this user go as a new one starts, so the table holds about
    # one row per live sign-in without a sweep.
    await UserSession.filter(user_id=user.id, expires_at__lte=now).delete()
    session = await UserSession.create(
        user_id=user.id, expires_at=now + timedelta(seconds=settings.access_token_ttl_seconds)
    )
    return signer(settings).issue(user.id, session.id)


@dataclass(frozen=True, slots=True)
class Authenticated:
    actor: Actor
    expires_at: datetime


async def authenticate(settings: Settings, token: str) -> Authenticated:
    """Who a bearer token stands for and until when; AuthenticationError if it is bad,
    expired, of an ended session or of a removed user."""
    claims = signer(settings).verify(token)
    user = await _session_user(claims)
    if user is None:
        raise AuthenticationError("Invalid access token")
    return Authenticated(Actor.from_user(user, claims.session_id), claims.expires_at)


async def _session_user(claims: TokenClaims) -> User | None:
    session = (
        await UserSession.filter(
            id=claims.session_id, user_id=claims.user_id, ended_at__isnull=True
        )
        .select_related("user")
        .first()
    )
    if session is None or not session.user.is_active:
        return None
    return session.user


async def actor_for_token(settings: Settings, token: str) -> Actor:
    """The actor a bearer token stands for; AuthenticationError if it is bad or stale."""
    return (await authenticate(settings, token)).actor


async def live_sessions(session_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``session_ids`` that have not ended and whose user is still a member."""
    rows = await UserSession.filter(
        id__in=list(session_ids), ended_at__isnull=True, user__is_active=True
    ).values_list("id", flat=True)
    return {uuid.UUID(str(row)) for row in rows}


async def _end_sessions(user_id: uuid.UUID, **only: Any) -> None:
    """End the user's open sessions (those matching ``only``); their sockets hear of it."""
    await UserSession.filter(user_id=user_id, ended_at__isnull=True, **only).update(
        ended_at=clock.now()
    )
    await emit_event(channels.sessions(), {"userId": str(user_id)})


async def logout(actor: Actor) -> None:
    """End the session the actor's token belongs to; the user's other sessions go on."""
    if actor.session_id is None:
        raise AuthenticationError("Authentication required")
    await _end_sessions(actor.user_id, id=actor.session_id)


async def change_password(
    settings: Settings, actor: Actor, *, current_password: str, new_password: str
) -> AuthResult:
    """Set a new password, ending every session of the user; the caller gets a new one."""
    user = await User.get_or_none(id=actor.user_id, is_active=True)
    if user is None:
        raise AuthenticationError("Invalid access token")
    validation.password("newPassword", new_password)
    if not await _verify(user.password_hash, current_password or ""):
        raise ValidationError(
            "currentPassword", "The current password is not correct", code="WRONG_PASSWORD"
        )
    user.password_hash = await _hash(new_password)
    await user.save(update_fields=["password_hash", "updated_at"])
    await _end_sessions(user.id)
    await activity.record(
        actor,
        agency_id=user.agency_id,
        client_id=user.client_id,
        entity_type="user",
        entity_id=user.id,
        verb="password_changed",
        summary=f"{user.name} changed their password; their other sessions ended",
    )
    return AuthResult(token=await _start_session(settings, user), user=user)


class LastOwnerError(ConflictError):
    """An agency always keeps an owner."""

    code = "LAST_OWNER"


async def list_members(actor: Actor, *, first: int | None, after: str | None) -> Page[User]:
    """The agency's active users (members and client users), oldest first."""
    actor.require(*MEMBERS)
    qs = User.filter(agency_id=actor.agency_id, is_active=True)
    return await paginate(qs, first=first, after=after, ordering=Ordering("created_at"))


async def remove_member(actor: Actor, user_id: uuid.UUID) -> User:
    """Take a user out of the agency: deactivated, every session ended at once.

    Owners remove anyone but themselves; admins remove admins, members and client
    users, never owners. The agency always keeps one owner.
    """
    actor.require(*MANAGERS)
    user = await User.get_or_none(id=user_id, agency_id=actor.agency_id, is_active=True)
    if user is None:
        raise NotFoundError("User", user_id)
    if user.id == actor.user_id:
        raise ValidationError(
            "userId", "You cannot remove yourself from the agency", code="CANNOT_REMOVE_SELF"
        )
    if user.role is Role.OWNER:
        if actor.role is not Role.OWNER:
            raise PermissionDeniedError("Only an owner can remove an owner")
        # The owners' rows are locked, so two owners removing each other at once
        # cannot both succeed: the second sees the first's removal and stops.
        # (Whole rows: Tortoise drops FOR UPDATE from a values_list query.)
        owners = await User.filter(
            agency_id=actor.agency_id, role=Role.OWNER, is_active=True
        ).select_for_update()
        if not {owner.id for owner in owners} - {user.id}:
            raise LastOwnerError("The agency must keep at least one owner")
    claimed = await User.filter(id=user.id, is_active=True).update(
        is_active=False, updated_at=clock.now()
    )
    if not claimed:
        raise NotFoundError("User", user_id)
    user.is_active = False
    await _end_sessions(user.id)
    await activity.record(
        actor,
        agency_id=actor.agency_id,
        client_id=user.client_id,
        entity_type="user",
        entity_id=user.id,
        verb="removed",
        summary=f"{actor.name} removed {user.name} ({user.email}, {user.role.value})",
        changes={"is_active": {"before": True, "after": False}},
    )
    return user


async def get_user(actor: Actor, user_id: uuid.UUID) -> User:
    user = await User.get_or_none(id=user_id, agency_id=actor.agency_id)
    if user is None or (actor.is_client_user and user.id != actor.user_id):
        raise NotFoundError("User", user_id)
    return user


def invitation_token(settings: Settings, invitation_id: uuid.UUID) -> str:
    """The link token of an invitation, derived from its id with the secret key.

    Deriving it (rather than storing it) keeps it out of the database and the
    job queue: only its hash is stored, and the email job recomputes it.
    """
    digest = hmac.new(
        settings.signing_key().encode(), f"invitation:{invitation_id}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class InvitationResult:
    invitation: Invitation
    # The raw token, which only the email carries to the API's callers (the inviter
    # must not be able to join as the invitee); the database keeps its hash.
    token: str


async def invite_member(
    settings: Settings,
    actor: Actor,
    *,
    email: str,
    role: Role,
    name: str | None = None,
    client_id: uuid.UUID | None = None,
) -> InvitationResult:
    """Invite someone to the agency by email; the email goes out after commit."""
    actor.require(*MANAGERS)
    address = validation.email("email", email, required=True)
    assert address is not None
    display_name = validation.optional_text("name", name, max_length=200) or ""
    if role is Role.OWNER and actor.role is not Role.OWNER:
        raise PermissionDeniedError("Only an owner can invite another owner")
    if role.is_client:
        if client_id is None:
            raise ValidationError(
                "clientId", "Client users must belong to a client", code="REQUIRED"
            )
        client = await Client.get_or_none(
            id=client_id, agency_id=actor.agency_id, deleted_at__isnull=True
        )
        if client is None:
            raise NotFoundError("Client", client_id)
    elif client_id is not None:
        raise ValidationError("clientId", "Only client users belong to a client")
    # Only this agency's own members are reported: whether the address has an account
    # in another agency is not this agency's to learn, so that case takes the same
    # path (and time) as a new address. Accepting tells the address's owner.
    if await User.filter(email=address, agency_id=actor.agency_id, is_active=True).exists():
        raise ConflictError("This person is already a member of the agency")
    now = clock.now()
    # A new invitation to the same address replaces any still open.
    await Invitation.filter(
        agency_id=actor.agency_id, email=address, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    invitation_id = uuid.uuid4()
    token = invitation_token(settings, invitation_id)
    invitation = await Invitation.create(
        id=invitation_id,
        agency_id=actor.agency_id,
        client_id=client_id,
        invited_by_id=actor.user_id,
        email=address,
        name=display_name,
        role=role,
        token_hash=hash_opaque_token(token),
        expires_at=now + timedelta(seconds=settings.invitation_ttl_seconds),
    )
    await send_job("auth.send_invitation", str(invitation.id))
    await activity.record(
        actor,
        agency_id=actor.agency_id,
        client_id=client_id,
        entity_type="invitation",
        entity_id=invitation.id,
        verb="created",
        summary=f"{actor.name} invited {address} as {role.value}",
    )
    return InvitationResult(invitation=invitation, token=token)


async def _open_invitation(token: str) -> Invitation | None:
    """The invitation of ``token`` while it can still be accepted, else None."""
    invitation = await Invitation.get_or_none(token_hash=hash_opaque_token(token or ""))
    if (
        invitation is None
        or invitation.accepted_at is not None
        or invitation.revoked_at is not None
        or invitation.expires_at <= clock.now()
    ):
        return None
    return invitation


@dataclass(frozen=True, slots=True)
class OpenInvitation:
    invitation: Invitation
    agency: Agency
    inviter: User | None


async def open_invitation(token: str) -> OpenInvitation | None:
    """What the invitation page shows for ``token``; None once it can no longer be accepted."""
    invitation = await _open_invitation(token)
    if invitation is None:
        return None
    agency = await Agency.get(id=invitation.agency_id)
    inviter = (
        await User.get_or_none(id=invitation.invited_by_id) if invitation.invited_by_id else None
    )
    return OpenInvitation(invitation, agency, inviter)


async def accept_invitation(
    settings: Settings, *, token: str, name: str | None, password: str
) -> AuthResult:
    """Join an agency with an invitation token; the token works once."""
    invitation = await _open_invitation(token)
    now = clock.now()
    if invitation is None:
        raise ValidationError(
            "token", "This invitation is invalid or has expired", code="INVALID_TOKEN"
        )
    display_name = validation.required_text("name", name or invitation.name, max_length=200)
    validation.password("password", password)
    # Hashed before the claim, so the claimed row is not locked while argon2 works.
    password_hash = await _hash(password)
    # Claim the invitation with a conditional update so a double submit joins once.
    # A re-invite may revoke it between the read above and this claim; the
    # conditions are repeated here so the revoked invitation's role is not used.
    claimed = await Invitation.filter(
        id=invitation.id, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(accepted_at=now)
    if not claimed:
        raise ValidationError(
            "token", "This invitation is invalid or has expired", code="INVALID_TOKEN"
        )
    existing = await User.get_or_none(email=invitation.email)
    if existing is not None and (existing.is_active or existing.agency_id != invitation.agency_id):
        raise ConflictError("An account with this email already exists")
    values: dict[str, Any] = {
        "client_id": invitation.client_id,
        "name": display_name,
        "password_hash": password_hash,
        "role": invitation.role,
    }
    if existing is not None:
        # Someone removed from this agency and invited back: the same user returns,
        # with the new invitation's role.
        user = existing.update_from_dict({**values, "is_active": True})
        await user.save()
    else:
        try:
            user = await User.create(
                agency_id=invitation.agency_id, email=invitation.email, **values
            )
        except IntegrityError:
            raise ConflictError("An account with this email already exists") from None
    await activity.record(
        Actor.from_user(user),
        agency_id=user.agency_id,
        client_id=user.client_id,
        entity_type="user",
        entity_id=user.id,
        verb="joined",
        summary=f"{display_name} joined as {user.role.value}",
    )
    return AuthResult(token=await _start_session(settings, user), user=user)


async def invitation_for_delivery(
    invitation_id: uuid.UUID,
) -> tuple[Invitation, Agency, User | None] | None:
    """What the invitation email needs; None once it is no longer open."""
    invitation = await Invitation.get_or_none(id=invitation_id)
    if (
        invitation is None
        or invitation.accepted_at
        or invitation.revoked_at
        # A retry that lands after expiry would email a link that no longer works.
        or invitation.expires_at <= clock.now()
    ):
        return None
    agency = await Agency.get(id=invitation.agency_id)
    inviter = (
        await User.get_or_none(id=invitation.invited_by_id) if invitation.invited_by_id else None
    )
    return invitation, agency, inviter
