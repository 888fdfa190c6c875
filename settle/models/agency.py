"""Agencies (tenants), their users and invitations."""

from __future__ import annotations

import uuid
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields

from settle.models.base import BaseModel

if TYPE_CHECKING:
    from settle.models.client import Client


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    CLIENT_LEAD = "client_lead"
    CLIENT_VIEWER = "client_viewer"

    @property
    def is_client(self) -> bool:
        return self in (Role.CLIENT_LEAD, Role.CLIENT_VIEWER)

    @property
    def is_manager(self) -> bool:
        return self in (Role.OWNER, Role.ADMIN)


DEFAULT_INVOICE_NUMBER_PATTERN = "INV-{YYYY}-{SEQ:4}"


class Agency(BaseModel):
    name = fields.CharField(max_length=200)
    # Printed on invoices as the issuer.
    address = fields.TextField(null=True)
    email = fields.CharField(max_length=254, null=True)
    tax_id = fields.CharField(max_length=64, null=True)
    invoice_number_pattern = fields.CharField(
        max_length=100, default=DEFAULT_INVOICE_NUMBER_PATTERN
    )
    # Used when an invoice has no project whose payment terms say otherwise.
    invoice_due_days = fields.SmallIntField(default=30)
    default_tax_rate: Decimal = fields.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal(0)
    )
    # The gateway each currency is collected through ({"INR": "razorpay", "USD": "stripe"});
    # a currency not listed uses the configured default provider.
    payment_providers: dict[str, str] = fields.JSONField(default=dict)
    # An IANA zone name: reminders, digests and "today" follow the agency's clock.
    timezone = fields.CharField(max_length=64, default="UTC")
    # Days after a payment request when an unpaid advance or balance is reminded of ("3,7,14").
    payment_reminder_days = fields.CharField(max_length=100, default="3,7,14")
    # Days after an invoice's due date when an unpaid invoice is reminded of ("1,7,14").
    overdue_reminder_days = fields.CharField(max_length=100, default="1,7,14")
    # The local hour (0-23) the daily digest and overdue reminders go out from.
    digest_hour = fields.SmallIntField(default=8)

    class Meta:
        table = "agency"


class User(BaseModel):
    agency: fields.ForeignKeyRelation[Agency] = fields.ForeignKeyField(
        "settle.Agency", related_name="users", on_delete=fields.RESTRICT
    )
    agency_id: uuid.UUID
    # Client users see one client's data only; null for agency members.
    client: fields.ForeignKeyNullableRelation[Client] = fields.ForeignKeyField(
        "settle.Client", related_name=False, null=True, on_delete=fields.RESTRICT
    )
    client_id: uuid.UUID | None
    email = fields.CharField(max_length=254, unique=True)
    name = fields.CharField(max_length=200)
    password_hash = fields.CharField(max_length=255)
    role = fields.CharEnumField(Role, max_length=20)
    is_active = fields.BooleanField(default=True)
    last_login_at = fields.DatetimeField(null=True)

    class Meta:
        table = "app_user"


class UserSession(BaseModel):
    """One sign-in: its id travels in the access token, and ending it ends the token."""

    # A token whose session has ended (logout, a password change, removal from the
    # agency) is refused on every request and closes its open websockets.

    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, on_delete=fields.CASCADE, db_index=True
    )
    user_id: uuid.UUID
    # When the token expires; past it the row only waits to be purged.
    expires_at = fields.DatetimeField()
    ended_at = fields.DatetimeField(null=True)

    class Meta:
        table = "user_session"


class Invitation(BaseModel):
    agency: fields.ForeignKeyRelation[Agency] = fields.ForeignKeyField(
        "settle.Agency", related_name=False, on_delete=fields.RESTRICT, db_index=True
    )
    agency_id: uuid.UUID
    client: fields.ForeignKeyNullableRelation[Client] = fields.ForeignKeyField(
        "settle.Client", related_name=False, null=True, on_delete=fields.RESTRICT
    )
    client_id: uuid.UUID | None
    invited_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    invited_by_id: uuid.UUID | None
    email = fields.CharField(max_length=254)
    name = fields.CharField(max_length=200, default="")
    role = fields.CharEnumField(Role, max_length=20)
    # Only a hash of the token is stored, so a database leak cannot be used to join.
    token_hash = fields.CharField(max_length=64, unique=True)
    expires_at = fields.DatetimeField()
    accepted_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "invitation"
