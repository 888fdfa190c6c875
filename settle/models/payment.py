"""Payments: attempts to collect money, what they pay for, refunds, webhooks and the audit log."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

from settle.models.base import TenantModel

if TYPE_CHECKING:
    from settle.models.agency import User
    from settle.models.client import Client
    from settle.models.invoice import Invoice
    from settle.models.milestone import Milestone
    from settle.models.project import Project


class PaymentStatus(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    # Replaced by a newer payment of the same invoices or milestones before it took any
    # money: closed at the gateway where the gateway allows it, never to be applied.
    SUPERSEDED = "superseded"


class PaymentProvider(StrEnum):
    STRIPE = "stripe"
    RAZORPAY = "razorpay"
    SANDBOX = "sandbox"
    OFFLINE = "offline"


class OfflineMethod(StrEnum):
    BANK_TRANSFER = "bank_transfer"
    CASH = "cash"
    CRYPTO = "crypto"
    OTHER = "other"


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Payment(TenantModel):
    client: fields.ForeignKeyRelation[Client] = fields.ForeignKeyField(
        "settle.Client", related_name=False, on_delete=fields.RESTRICT, db_index=True
    )
    client_id: uuid.UUID
    project: fields.ForeignKeyNullableRelation[Project] = fields.ForeignKeyField(
        "settle.Project", related_name=False, null=True, on_delete=fields.RESTRICT, db_index=True
    )
    project_id: uuid.UUID | None
    # The invoice paid when the payment covers exactly one; bulk payments spread over
    # several, and ``PaymentAllocation`` says what each part pays.
    invoice: fields.ForeignKeyNullableRelation[Invoice] = fields.ForeignKeyField(
        "settle.Invoice", related_name=False, null=True, on_delete=fields.RESTRICT, db_index=True
    )
    invoice_id: uuid.UUID | None
    provider = fields.CharEnumField(PaymentProvider, max_length=20)
    status = fields.CharEnumField(PaymentStatus, max_length=20, default=PaymentStatus.CREATED)
    amount_minor: int = fields.BigIntField()
    currency = fields.CharField(max_length=3)
    amount_refunded_minor: int = fields.BigIntField(default=0)
    # The gateway's ids: its order / intent / session, and the payment that captured it.
    provider_order_id = fields.CharField(max_length=255, null=True, db_index=True)
    provider_payment_id = fields.CharField(max_length=255, null=True)
    # What the frontend needs to collect it: a hosted URL, or a client secret (Stripe).
    checkout_url = fields.CharField(max_length=2000, null=True)
    client_secret = fields.CharField(max_length=500, null=True)
    # Money received outside the gateways.
    method = fields.CharEnumField(OfflineMethod, max_length=20, null=True)
    reference = fields.CharField(max_length=255, null=True)
    explorer_url = fields.CharField(max_length=2000, null=True)
    succeeded_at = fields.DatetimeField(null=True)
    failed_at = fields.DatetimeField(null=True)
    failure_reason: str | None = fields.TextField(null=True)
    # An event the payment could not take (amount or currency mismatch): looked at by hand.
    flagged_reason: str | None = fields.TextField(null=True)
    # The newer payment that replaced this one (status superseded).
    superseded_by_id = fields.UUIDField(null=True)
    # Why Settle gave the money back by itself: it was captured for something already
    # paid (a duplicate payment), so it was never applied and was refunded in full.
    auto_refund_reason: str | None = fields.TextField(null=True)
    reconcile_attempts = fields.IntField(default=0)
    last_reconciled_at = fields.DatetimeField(null=True)
    created_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    created_by_id: uuid.UUID | None

    class Meta:
        table = "payment"
        unique_together = (("provider", "provider_payment_id"),)
        indexes = (
            ("agency_id", "status"),
            ("agency_id", "created_at"),
            # The payment analytics report reads by currency and the moment money arrived.
            ("agency_id", "currency", "succeeded_at"),
        )


class PaymentAllocation(TenantModel):
    """The part of a payment that pays one invoice, and the milestone it settles if any."""

    payment: fields.ForeignKeyRelation[Payment] = fields.ForeignKeyField(
        "settle.Payment", related_name="allocations", on_delete=fields.CASCADE, db_index=True
    )
    payment_id: uuid.UUID
    invoice: fields.ForeignKeyRelation[Invoice] = fields.ForeignKeyField(
        "settle.Invoice", related_name=False, on_delete=fields.RESTRICT, db_index=True
    )
    invoice_id: uuid.UUID
    milestone: fields.ForeignKeyNullableRelation[Milestone] = fields.ForeignKeyField(
        "settle.Milestone", related_name=False, null=True, on_delete=fields.RESTRICT, db_index=True
    )
    milestone_id: uuid.UUID | None
    amount_minor: int = fields.BigIntField()
    amount_refunded_minor: int = fields.BigIntField(default=0)

    class Meta:
        table = "payment_allocation"


class Refund(TenantModel):
    payment: fields.ForeignKeyRelation[Payment] = fields.ForeignKeyField(
        "settle.Payment", related_name="refunds", on_delete=fields.RESTRICT, db_index=True
    )
    payment_id: uuid.UUID
    amount_minor: int = fields.BigIntField()
    currency = fields.CharField(max_length=3)
    reason = fields.TextField()
    status = fields.CharEnumField(RefundStatus, max_length=20, default=RefundStatus.PENDING)
    provider_refund_id = fields.CharField(max_length=255, null=True)
    failure_reason: str | None = fields.TextField(null=True)
    settled_at = fields.DatetimeField(null=True)
    created_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    created_by_id: uuid.UUID | None

    class Meta:
        table = "refund"
        indexes = (("agency_id", "currency", "settled_at"),)


class WebhookEvent(Model):
    """A verified gateway event, stored before it is acknowledged and processed once."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    provider = fields.CharEnumField(PaymentProvider, max_length=20)
    event_id = fields.CharField(max_length=255)
    event_type = fields.CharField(max_length=100)
    payload: dict[str, Any] = fields.JSONField()
    # Known once the event is matched to a payment.
    agency_id = fields.UUIDField(null=True, db_index=True)
    payment_id = fields.UUIDField(null=True, db_index=True)
    received_at = fields.DatetimeField()
    processed_at = fields.DatetimeField(null=True)
    # applied | ignored | flagged: what processing made of it.
    outcome = fields.CharField(max_length=20, null=True)
    attempts = fields.IntField(default=0)
    last_error: str | None = fields.TextField(null=True)

    class Meta:
        table = "webhook_event"
        unique_together = (("provider", "event_id"),)
        indexes = (("agency_id", "received_at"),)


class PaymentAuditEntry(Model):
    """Append-only: who or which gateway did what to a payment, before and after, and why."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    agency_id = fields.UUIDField(db_index=True)
    payment_id = fields.UUIDField(db_index=True)
    actor_id = fields.UUIDField(null=True)
    # "user", a gateway's name, "reconciliation" or "system".
    source = fields.CharField(max_length=40)
    action = fields.CharField(max_length=60)
    before: dict[str, Any] = fields.JSONField(default=dict)
    after: dict[str, Any] = fields.JSONField(default=dict)
    reason: str | None = fields.TextField(null=True)
    request_id = fields.CharField(max_length=100, null=True)
    webhook_event_id = fields.UUIDField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "payment_audit_entry"
        indexes = (("payment_id", "created_at"),)
