"""Contracts: milestones, the payment stages of a project."""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields

from settle.models.base import TenantModel

if TYPE_CHECKING:
    from settle.models.agency import User
    from settle.models.invoice import Invoice
    from settle.models.project import Project


class MilestoneStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    PAID = "paid"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class MilestonePaymentStatus(StrEnum):
    UNPAID = "unpaid"
    PROCESSING = "processing"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class MilestoneKind(StrEnum):
    ADVANCE = "advance"
    BALANCE = "balance"
    STANDARD = "standard"


class Milestone(TenantModel):
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "settle.Project", related_name="milestones", on_delete=fields.RESTRICT, db_index=True
    )
    project_id: uuid.UUID
    client_id = fields.UUIDField(db_index=True)
    title = fields.CharField(max_length=200)
    description = fields.TextField(null=True)
    kind = fields.CharEnumField(MilestoneKind, max_length=20, default=MilestoneKind.STANDARD)
    amount_minor: int = fields.BigIntField()
    currency = fields.CharField(max_length=3)
    due_date: date | None = fields.DateField(null=True)
    position = fields.IntField(default=0)
    status = fields.CharEnumField(MilestoneStatus, max_length=20, default=MilestoneStatus.PENDING)
    rejection_reason = fields.TextField(null=True)
    submitted_at = fields.DatetimeField(null=True)
    approved_at = fields.DatetimeField(null=True)
    approved_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    approved_by_id: uuid.UUID | None
    cancelled_at = fields.DatetimeField(null=True)
    payment_status = fields.CharEnumField(
        MilestonePaymentStatus, max_length=20, default=MilestonePaymentStatus.UNPAID
    )
    amount_paid_minor: int = fields.BigIntField(default=0)
    amount_refunded_minor: int = fields.BigIntField(default=0)
    # Forgiven by credit notes on its invoice: no longer owed, though never received.
    amount_credited_minor: int = fields.BigIntField(default=0)
    paid_at = fields.DatetimeField(null=True)
    payment_reference = fields.CharField(max_length=200, null=True)
    # The live (not void) invoice billing this milestone; at most one at a time.
    invoice: fields.ForeignKeyNullableRelation[Invoice] = fields.ForeignKeyField(
        "settle.Invoice", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    invoice_id: uuid.UUID | None
    # Why the automatic invoice of an approved milestone could not be made yet.
    invoice_error = fields.TextField(null=True)

    class Meta:
        table = "milestone"
        indexes = (("project_id", "position"), ("agency_id", "status"))
