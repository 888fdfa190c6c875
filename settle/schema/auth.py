"""Accounts: users, agencies, sign-up, login and invitations."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.core.tenancy import Actor
from settle.models import agency as models
from settle.resolvers.loaders import Loaders
from settle.schema.context import Info

if TYPE_CHECKING:
    from settle.schema.client import Client

Role = strawberry.enum(models.Role, description="What a user may do in an agency.")


@strawberry.type
class PaymentProviderChoice:
    currency: str
    provider: str


@strawberry.type
class Agency:
    id: strawberry.ID
    name: str
    address: str | None = strawberry.field(description="Printed on invoices as the issuer's.")
    email: str | None
    tax_id: str | None
    invoice_number_pattern: str = strawberry.field(
        description="How finalized invoices are numbered: text with {YYYY}, {YY}, {MM} and "
        "one {SEQ} or {SEQ:n} (zero-padded to n digits); the sequence restarts whenever the "
        "rest of the number changes, so INV-{YYYY}-{SEQ:4} restarts each year."
    )
    invoice_due_days: int = strawberry.field(
        description="Days from issue to due date for invoices without a project's own terms."
    )
    default_tax_rate: str = strawberry.field(
        description='Tax percentage new invoices start with, e.g. "18".'
    )
    payment_providers: list[PaymentProviderChoice] = strawberry.field(
        description="The gateway per currency; other currencies use the server's default."
    )
    timezone: str = strawberry.field(
        description='IANA time zone ("Asia/Kolkata") that reminders and digests follow.'
    )
    payment_reminder_days: list[int] = strawberry.field(
        description="Days after a payment request when an unpaid advance or balance is "
        "reminded of (default 3, 7, 14)."
    )
    overdue_reminder_days: list[int] = strawberry.field(
        description="Days after its due date when an unpaid invoice is reminded of "
        "(default 1, 7, 14)."
    )
    digest_hour: int = strawberry.field(
        description="Local hour the daily digest and the overdue reminders go out from (default 8)."
    )

    @classmethod
    def from_model(cls, agency: models.Agency) -> Agency:
        return cls(
            id=strawberry.ID(str(agency.id)),
            name=agency.name,
            address=agency.address,
            email=agency.email,
            tax_id=agency.tax_id,
            invoice_number_pattern=agency.invoice_number_pattern,
            invoice_due_days=agency.invoice_due_days,
            default_tax_rate=format_rate(agency.default_tax_rate),
            payment_providers=[
                PaymentProviderChoice(currency=currency, provider=provider)
                for currency, provider in sorted((agency.payment_providers or {}).items())
            ],
            timezone=agency.timezone,
            payment_reminder_days=_days(agency.payment_reminder_days),
            overdue_reminder_days=_days(agency.overdue_reminder_days),
            digest_hour=agency.digest_hour,
        )


def _days(stored: str) -> list[int]:
    """Stage days as stored on the agency ("1,7,14")."""
    return [int(day) for day in stored.split(",") if day.strip()]


def format_rate(rate: Decimal) -> str:
    """A percentage as a plain decimal string without trailing zeros: 18.000 -> "18"."""
    return f"{rate.normalize():f}"


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    name: str
    role: Role  # type: ignore[valid-type]
    created_at: datetime
    _agency_id: strawberry.Private[str]
    _client_id: strawberry.Private[str | None]
    # The user an AuthPayload was issued for: signUp, login and acceptInvitation
    # run without a bearer token, so the request has no actor to load the
    # user's agency and client with; they are loaded as that user instead.
    _viewer: strawberry.Private[Actor | None]

    @classmethod
    def from_model(cls, user: models.User, *, as_viewer: bool = False) -> User:
        return cls(
            id=strawberry.ID(str(user.id)),
            email=user.email,
            name=user.name,
            role=user.role,
            created_at=user.created_at,
            _agency_id=str(user.agency_id),
            _client_id=str(user.client_id) if user.client_id else None,
            _viewer=Actor.from_user(user) if as_viewer else None,
        )

    def _loaders(self, info: Info) -> Loaders:
        if self._viewer is None:
            return info.context.loaders
        return Loaders(self._viewer, cache=False)

    @strawberry.field
    async def agency(self, info: Info) -> Agency:
        agency = await self._loaders(info).agency.load(uuid.UUID(self._agency_id))
        assert agency is not None
        return Agency.from_model(agency)

    @strawberry.field(description="The client a client user belongs to; null for members.")
    async def client(
        self, info: Info
    ) -> Annotated[Client, strawberry.lazy("settle.schema.client")] | None:
        from settle.schema.client import Client

        if self._client_id is None:
            return None
        client = await self._loaders(info).client.load(uuid.UUID(self._client_id))
        return Client.from_model(client) if client else None


@strawberry.type
class AuthPayload:
    token: str
    user: User


@strawberry.type
class Invitation:
    id: strawberry.ID
    email: str
    role: Role  # type: ignore[valid-type]
    expires_at: datetime


@strawberry.input
class SignUpInput:
    agency_name: str
    name: str
    email: str
    password: str


@strawberry.input
class LoginInput:
    email: str
    password: str


@strawberry.input
class InviteMemberInput:
    email: str
    role: Role  # type: ignore[valid-type]
    name: str | None = None
    client_id: strawberry.ID | None = strawberry.field(
        default=None, description="Required for client roles: the client they belong to."
    )


@strawberry.type(description="The caller's session has ended; its token is refused from now on.")
class LogoutPayload:
    ok: bool


@strawberry.input
class ChangePasswordInput:
    current_password: str
    new_password: str


@strawberry.input
class AcceptInvitationInput:
    token: str
    password: str
    name: str | None = None
